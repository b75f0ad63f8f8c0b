"""MaxPool2d: numba kernels vs NumPy reference, tie rule, gradient check, PyTorch parity."""

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_module
from numpyseg.layers.pool import (MaxPool2d, maxpool2d_backward_fast, maxpool2d_backward_reference,
                                  maxpool2d_forward_fast, maxpool2d_forward_reference)

rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)


def tie_free(rng, shape, dtype=np.float64):
    """Distinct values (a scaled random permutation): every window has one clear maximum."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 3.0).astype(dtype)


@pytest.mark.parametrize("shape", [(2, 4, 6, 3), (1, 8, 8, 16), (3, 2, 10, 1)])
def test_fast_matches_reference(rng, shape):
    x = tie_free(rng, shape)
    out, arg = maxpool2d_forward_fast(x)
    ref_out, ref_arg = maxpool2d_forward_reference(x)
    assert arg.dtype == np.uint8 and out.shape == (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(arg, ref_arg)
    g = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(maxpool2d_backward_fast(g, arg), maxpool2d_backward_reference(g, arg))


def test_forward_is_the_window_maximum(rng):
    x = rng.standard_normal((2, 6, 4, 3))
    out, _ = maxpool2d_forward_fast(x)
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(out[:, i, j], x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(1, 2)))


def test_ties_go_to_the_first_maximum_in_row_major_order():
    # window [[a, b], [c, d]]; q = 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
    windows = {(1, 5, 5, 5): 1, (5, 1, 5, 1): 0, (0, 0, 2, 2): 2, (3, 3, 3, 3): 0, (0, 1, 0, 1): 1}
    for values, first in windows.items():
        x = np.array(values, dtype=np.float64).reshape(1, 2, 2, 1)
        for fn in (maxpool2d_forward_fast, maxpool2d_forward_reference):
            assert fn(x)[1][0, 0, 0, 0] == first, (values, fn.__name__)
        layer = MaxPool2d()
        layer(x)
        dx = layer.backward(np.full((1, 1, 1, 1), 2.0))
        expected = np.zeros(4)
        expected[first] = 2.0
        np.testing.assert_array_equal(dx.reshape(4), expected)


@pytest.mark.parametrize("shape", [(2, 4, 6, 3), (3, 6, 2, 5), (2, 8, 4, 1)])
def test_gradcheck(rng, shape):
    report = check_module(MaxPool2d(), [tie_free(rng, shape)], max_entries=None)
    assert report.passed, report


def test_backward_under_no_grad_fails_clearly(rng):
    from numpyseg.layers.module import no_grad

    layer = MaxPool2d()
    with no_grad():
        layer(tie_free(rng, (1, 4, 4, 2)))
    with pytest.raises(RuntimeError, match="without a forward pass"):
        layer.backward(np.ones((1, 2, 2, 2)))


def test_matches_torch(rng, torch):
    layer = MaxPool2d()
    x = tie_free(rng, (2, 10, 12, 6), np.float32)
    g = rng.standard_normal((2, 5, 6, 6)).astype(np.float32)
    out = layer(x)
    dx = layer.backward(g)
    assert out.dtype == dx.dtype == np.float32
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tout = torch.nn.functional.max_pool2d(tx, 2)
    tout.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    assert rel(out, tout.detach().numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(dx, tx.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4


@pytest.mark.parametrize("shape", [(1, 5, 4, 2), (1, 4, 7, 2), (2, 3, 3, 1)])
def test_odd_sizes_are_rejected(rng, shape):
    with pytest.raises(ValueError, match="needs even H and W"):
        MaxPool2d()(rng.standard_normal(shape))


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="NHWC"):
        MaxPool2d()(rng.standard_normal((4, 4, 2)))
    with pytest.raises(ValueError, match="floating-point"):
        MaxPool2d()(np.ones((1, 4, 4, 2), dtype=np.int32))
