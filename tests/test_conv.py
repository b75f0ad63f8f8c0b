"""Conv2d: numba im2col/col2im against NumPy references, gradient check, PyTorch parity."""

import numpy as np
import pytest

from numpyseg.gradcheck import check_module
from numpyseg.kernels.im2col import col2im, col2im_reference, im2col, im2col_reference
from numpyseg.layers.conv import Conv2d, conv2d_naive


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("shape", [(2, 5, 6, 3), (1, 8, 8, 16), (3, 7, 4, 2)])
def test_im2col_kernels_match_reference(rng, k, shape):
    x = rng.standard_normal(shape)
    np.testing.assert_array_equal(im2col(x, k), im2col_reference(x, k))
    cols = rng.standard_normal(shape[:3] + (k, k, shape[3]))
    np.testing.assert_allclose(col2im(cols, k), col2im_reference(cols, k), rtol=1e-12, atol=1e-12)


def test_col2im_is_adjoint_of_im2col(rng):
    # <im2col(x), c> == <x, col2im(c)> for every x, c: col2im accumulates overlaps.
    x = rng.standard_normal((2, 6, 5, 3))
    c = rng.standard_normal((2, 6, 5, 3, 3, 3))
    assert np.isclose(np.sum(im2col(x, 3) * c), np.sum(x * col2im(c, 3)), rtol=1e-12)


@pytest.mark.parametrize("k,c_in,c_out,shape", [(3, 3, 4, (2, 5, 6)), (1, 16, 1, (2, 4, 4)),
                                                (7, 2, 1, (2, 9, 8)), (3, 8, 5, (3, 6, 7))])
def test_conv2d_matches_naive_and_gradcheck(rng, k, c_in, c_out, shape):
    layer = Conv2d(c_in, c_out, k, rng=rng)
    layer.bias.data[:] = rng.standard_normal(c_out)
    x = rng.standard_normal(shape + (c_in,))
    report = check_module(layer, [x])
    assert report.passed, report
    np.testing.assert_allclose(layer(x), conv2d_naive(x, layer.weight.data, layer.bias.data), rtol=1e-10, atol=1e-12)


def test_conv2d_without_bias_has_one_parameter(rng):
    layer = Conv2d(2, 1, 7, bias=False, rng=rng)
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    assert check_module(layer, [rng.standard_normal((2, 8, 8, 2))]).passed


def test_conv2d_rejects_wrong_channels(rng):
    layer = Conv2d(3, 4, rng=rng)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        layer(rng.standard_normal((1, 8, 8, 4)))


def test_conv2d_matches_torch(rng, torch):
    layer = Conv2d(5, 6, 3, rng=rng)
    layer.bias.data[:] = rng.standard_normal(6).astype(np.float32)
    x = rng.standard_normal((2, 9, 10, 5)).astype(np.float32)
    g = rng.standard_normal((2, 9, 10, 6)).astype(np.float32)
    out = layer(x)
    dx = layer.backward(g)
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(layer.weight.data.transpose(3, 2, 0, 1), requires_grad=True)
    tb = torch.tensor(layer.bias.data, requires_grad=True)
    tout = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
    tout.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
    assert rel(out, tout.detach().numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(dx, tx.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(layer.weight.grad, tw.grad.numpy().transpose(2, 3, 1, 0)) < 1e-4
    assert rel(layer.bias.grad, tb.grad.numpy()) < 1e-4
