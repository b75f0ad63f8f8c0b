"""Conv2d: the direct kernels (fast) against the im2col reference and the definition, gradient check, PyTorch parity."""

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_module
from numpyseg.layers.conv import (Conv2d, col2im, conv2d_backward_fast, conv2d_backward_reference,
                                  conv2d_forward_fast, conv2d_forward_reference, im2col)


def conv_by_definition(x, w, b=None):
    """The 'same' convolution as the sum in the module docstring, one kernel offset at a time."""
    k = w.shape[0]
    p = k // 2
    n, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[3]), dtype=np.result_type(x, w))
    for di in range(k):
        for dj in range(k):
            out += np.einsum("nhwc,co->nhwo", xp[:, di : di + h, dj : dj + wd, :], w[di, dj])
    return out if b is None else out + b


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("shape", [(2, 5, 6, 3), (3, 7, 4, 2)])
def test_im2col_copies_each_patch(rng, k, shape):
    x = rng.standard_normal(shape)
    cols = im2col(x, k)
    p = k // 2
    n, h, w, _ = shape
    for i in range(h):
        for j in range(w):
            for di in range(k):
                for dj in range(k):
                    ii, jj = i + di - p, j + dj - p
                    inside = 0 <= ii < h and 0 <= jj < w
                    expected = x[:, ii, jj, :] if inside else np.zeros((n, shape[3]))
                    np.testing.assert_array_equal(cols[:, i, j, di, dj, :], expected)


def test_col2im_is_adjoint_of_im2col(rng):
    # <im2col(x), c> == <x, col2im(c)> for every x, c: col2im accumulates overlaps.
    x = rng.standard_normal((2, 6, 5, 3))
    c = rng.standard_normal((2, 6, 5, 3, 3, 3))
    assert np.isclose(np.sum(im2col(x, 3) * c), np.sum(x * col2im(c, 3)), rtol=1e-12)


@pytest.mark.parametrize("k,c_in,c_out,shape", [(3, 3, 4, (2, 5, 6)), (1, 16, 1, (2, 4, 4)),
                                                (7, 2, 1, (2, 9, 8)), (3, 8, 5, (3, 6, 7))])
def test_conv2d_matches_definition_and_gradcheck(rng, k, c_in, c_out, shape):
    layer = Conv2d(c_in, c_out, k, rng=rng)
    layer.bias.data[:] = rng.standard_normal(c_out)
    x = rng.standard_normal(shape + (c_in,))
    report = check_module(layer, [x])
    assert report.passed, report
    np.testing.assert_allclose(layer(x), conv_by_definition(x, layer.weight.data, layer.bias.data), rtol=1e-10, atol=1e-12)


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


# ------------------------------------------------------- fast direct kernels
from numpyseg.kernels.tiles import pack_weights  # noqa: E402

# (N, H, W, C_in, C_out, k): tiles of 8 pixels with leftovers, C_out not a multiple of 16
# (partial lane block), C_in not a multiple of 8 (padded weight-gradient tile), the
# 7x7 few-channel planar path, 1x1, and images narrower than the kernel.
FAST_CASES = [(2, 7, 9, 3, 4, 3), (1, 8, 19, 16, 16, 3), (2, 9, 6, 2, 1, 7), (1, 6, 13, 20, 33, 3),
              (2, 5, 5, 16, 1, 1), (1, 3, 2, 5, 17, 3), (1, 10, 11, 9, 16, 5), (1, 4, 3, 1, 2, 7),
              (3, 6, 21, 8, 32, 3), (1, 5, 12, 16, 3, 3)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", FAST_CASES)
def test_fast_conv_matches_definition_and_reference(rng, case, dtype):
    n, h, w, c_in, c_out, k = case
    x = rng.standard_normal((n, h, w, c_in)).astype(dtype)
    wt = rng.standard_normal((k, k, c_in, c_out)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    g = rng.standard_normal((n, h, w, c_out)).astype(dtype)
    tol = dict(rtol=1e-11, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)

    out, cache = conv2d_forward_fast(x, wt, b)
    out_ref, cache_ref = conv2d_forward_reference(x, wt, b)
    assert out.dtype == dtype and out.shape == (n, h, w, c_out)
    np.testing.assert_allclose(out, conv_by_definition(x, wt, b), **tol)
    np.testing.assert_allclose(out, out_ref, **tol)

    for fast, ref in zip(conv2d_backward_fast(g, cache), conv2d_backward_reference(g, cache_ref)):
        assert fast.dtype == dtype and fast.shape == ref.shape
        np.testing.assert_allclose(fast, ref, **tol)


def test_fast_conv_backward_matches_im2col_formulas(rng):
    # dW = cols^T D and dx = col2im(D W^T), written with the NumPy references
    n, h, w, c_in, c_out, k = 2, 6, 10, 8, 16, 3
    x = rng.standard_normal((n, h, w, c_in))
    wt = rng.standard_normal((k, k, c_in, c_out))
    g = rng.standard_normal((n, h, w, c_out))
    dx, dw, db = conv2d_backward_fast(g, conv2d_forward_fast(x, wt, None)[1])
    cols = im2col(x, k).reshape(-1, k * k * c_in)
    np.testing.assert_allclose(dw, (cols.T @ g.reshape(-1, c_out)).reshape(wt.shape), rtol=1e-12)
    dcols = (g.reshape(-1, c_out) @ wt.reshape(-1, c_out).T).reshape(n, h, w, k, k, c_in)
    np.testing.assert_allclose(dx, col2im(dcols, k), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(db, g.sum(axis=(0, 1, 2)), rtol=1e-12)


def test_fast_conv_accepts_non_contiguous_input(rng):
    x = rng.standard_normal((1, 3, 12, 9)).transpose(0, 2, 3, 1)  # (1, 12, 9, 3), a strided view
    wt = rng.standard_normal((3, 3, 3, 16))
    out, _ = conv2d_forward_fast(x, wt, None)
    np.testing.assert_allclose(out, conv_by_definition(x, wt), rtol=1e-11, atol=1e-12)


def test_pack_weights_puts_16_output_channels_last(rng):
    w = rng.standard_normal((3, 3, 4, 20))
    wp = pack_weights(w, 16)
    assert wp.shape == (2, 3, 3, 4, 16) and wp.flags.c_contiguous
    np.testing.assert_array_equal(wp[1, 2, 0, 3, :4], w[2, 0, 3, 16:])
    assert not wp[1, ..., 4:].any()  # padding lanes are zero


def test_conv2d_layer_float32_matches_reference(rng):
    layer = Conv2d(16, 32, 3, rng=rng)
    layer.bias.data[:] = rng.standard_normal(32).astype(np.float32)
    x = rng.standard_normal((2, 16, 24, 16)).astype(np.float32)
    g = rng.standard_normal((2, 16, 24, 32)).astype(np.float32)
    out = layer(x)
    dx = layer.backward(g)
    out_s, cache = conv2d_forward_reference(x, layer.weight.data, layer.bias.data)
    dx_s, dw_s, db_s = conv2d_backward_reference(g, cache)
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
    assert out.dtype == np.float32 and dx.dtype == np.float32
    assert rel(out, out_s) < 1e-6 and rel(dx, dx_s) < 1e-6
    assert rel(layer.weight.grad, dw_s) < 1e-6 and rel(layer.bias.grad, db_s) < 1e-6


def test_input_grad_false_skips_dx_only(rng):
    # the first layer of a network: the image needs no gradient, the parameters do
    x = rng.standard_normal((2, 7, 9, 3))
    g = rng.standard_normal((2, 7, 9, 16))
    full, skipping = Conv2d(3, 16, 3, rng=np.random.default_rng(1)), Conv2d(3, 16, 3, rng=np.random.default_rng(1),
                                                                          input_grad=False)
    assert full.needs_input_grad and not skipping.needs_input_grad
    assert "input_grad=False" in repr(skipping) and "input_grad" not in repr(full)
    full(x), skipping(x)
    assert full.backward(g).shape == x.shape
    assert skipping.backward(g) is None
    np.testing.assert_array_equal(skipping.weight.grad, full.weight.grad)
    np.testing.assert_array_equal(skipping.bias.grad, full.bias.grad)
    report = check_module(skipping, [x], check_inputs=[False])
    assert report.passed and set(report.errors) == {"weight", "bias"}
