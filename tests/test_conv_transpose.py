"""ConvTranspose2d: direct kernels (fast) vs the GEMM + strided col2im reference and the definition,
gradient check, PyTorch parity."""

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_module
from numpyseg.layers.conv_transpose import (ConvTranspose2d, col2im_strided, conv_transpose2d_backward_fast,
                                            conv_transpose2d_backward_reference, conv_transpose2d_forward_fast,
                                            conv_transpose2d_forward_reference, im2col_strided, same_offset)

rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)

# (kernel, stride): the SA-UNetv2 case first, then others that exercise the 'same' offset
CONFIGS = [(3, 2), (2, 2), (4, 2), (5, 2), (3, 1), (1, 2), (3, 3)]


def conv_transpose_by_definition(x, w, b=None, stride=2):
    """Every input pixel (i, j) adds w[di, dj] @ x[i, j] onto output pixel (s*i + di - p0, s*j + dj - p0)."""
    n, h, wd, _ = x.shape
    k, _, c_out, _ = w.shape
    p0 = same_offset(k, stride)
    ho, wo = stride * h, stride * wd
    out = np.zeros((n, ho, wo, c_out), dtype=np.result_type(x, w))
    for i in range(h):
        for j in range(wd):
            for di in range(k):
                for dj in range(k):
                    r, c = stride * i + di - p0, stride * j + dj - p0
                    if 0 <= r < ho and 0 <= c < wo:
                        out[:, r, c, :] += x[:, i, j, :] @ w[di, dj].T
    return out if b is None else out + b


@pytest.mark.parametrize("k,s", CONFIGS)
def test_im2col_strided_copies_each_patch(rng, k, s):
    n, h, w, c = 2, 3, 4, 3
    p0 = same_offset(k, s)
    y = rng.standard_normal((n, s * h, s * w, c))
    cols = im2col_strided(y, k, s, p0, h, w)
    for i in range(h):
        for j in range(w):
            for di in range(k):
                for dj in range(k):
                    r, q = s * i + di - p0, s * j + dj - p0
                    inside = 0 <= r < s * h and 0 <= q < s * w
                    np.testing.assert_array_equal(cols[:, i, j, di, dj], y[:, r, q] if inside else 0)


@pytest.mark.parametrize("k,s", [(3, 2), (4, 2), (1, 2)])
def test_col2im_strided_is_adjoint_of_im2col_strided(rng, k, s):
    # <im2col(y), c> == <y, col2im(c)>: the forward scatter is the transpose of the backward gather
    p0 = same_offset(k, s)
    y = rng.standard_normal((2, 5 * s, 4 * s, 3))
    c = rng.standard_normal((2, 5, 4, k, k, 3))
    lhs = np.sum(im2col_strided(y, k, s, p0, 5, 4) * c)
    assert np.isclose(lhs, np.sum(y * col2im_strided(c, s, p0, 5 * s, 4 * s)), rtol=1e-12)


def test_one_dimensional_alignment_k3_s2():
    # out[j] = sum over 2i + d = j of x[i] w[d], the last full-output pixel dropped
    x = np.array([1.0, 10.0, 100.0]).reshape(1, 3, 1, 1)
    w = np.zeros((3, 3, 1, 1))
    w[:, 1, 0, 0] = [1.0, 2.0, 3.0]  # only the centre column: the width axis is a pure copy
    out = conv_transpose_by_definition(x, w)[0, :, 1, 0]
    np.testing.assert_array_equal(out, [1, 2, 3 + 10, 20, 30 + 100, 200])
    layer = ConvTranspose2d(1, 1)
    layer.weight.data = w
    np.testing.assert_allclose(layer(x)[0, :, 1, 0], out, rtol=1e-12)


@pytest.mark.parametrize("k,s", CONFIGS)
def test_layer_matches_definition(rng, k, s):
    layer = ConvTranspose2d(3, 4, k, s, rng=rng)
    layer.bias.data[:] = rng.standard_normal(4)
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    out = layer(x)
    assert out.shape == (2, 5 * s, 4 * s, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, conv_transpose_by_definition(x, layer.weight.data, layer.bias.data, s),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c_in,c_out,shape", [(3, 4, (2, 5, 6)), (1, 2, (3, 4, 3)),
                                              (8, 5, (2, 3, 3)), (4, 1, (2, 4, 4))])
def test_gradcheck(rng, c_in, c_out, shape):
    layer = ConvTranspose2d(c_in, c_out, 3, rng=rng)
    layer.bias.data[:] = rng.standard_normal(c_out)
    report = check_module(layer, [rng.standard_normal(shape + (c_in,))])
    assert report.passed, report
    assert set(report.errors) == {"input0", "weight", "bias"}


@pytest.mark.parametrize("k,s", [(2, 2), (4, 2), (3, 1), (5, 2)])
def test_gradcheck_other_kernels_and_strides(rng, k, s):
    layer = ConvTranspose2d(3, 2, k, s, rng=rng)
    layer.bias.data[:] = rng.standard_normal(2)
    report = check_module(layer, [rng.standard_normal((2, 3, 4, 3))])
    assert report.passed, report


# (N, H, W, C_in, C_out, k, s): rows of whole 8-pixel tiles plus an overlapping last tile
# (W = 13, 17), exactly one tile (W = 9), rows too narrow for a tile, C_out not a multiple
# of 16 (partial lane block; padded weight-gradient tile), C_in not a multiple of 8, the
# SA-UNetv2 up3 channels, and other kernel sizes and strides.
DIRECT_CASES = [(2, 5, 13, 8, 17, 3, 2), (3, 4, 9, 3, 4, 3, 2), (1, 3, 11, 64, 48, 3, 2),
                (2, 3, 1, 5, 3, 3, 2), (1, 1, 1, 2, 2, 3, 2), (2, 6, 17, 16, 33, 3, 2),
                (2, 5, 10, 3, 5, 4, 2), (1, 4, 9, 6, 7, 5, 2), (2, 3, 10, 4, 2, 3, 3),
                (1, 5, 12, 9, 16, 3, 1), (2, 4, 11, 3, 2, 1, 2), (2, 3, 12, 4, 3, 2, 2)]


@pytest.mark.parametrize("case", DIRECT_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_matches_reference_and_definition(rng, case, dtype):
    n, h, w, c_in, c_out, k, s = case
    x = rng.standard_normal((n, h, w, c_in)).astype(dtype)
    wt = rng.standard_normal((k, k, c_out, c_in)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    g = rng.standard_normal((n, s * h, s * w, c_out)).astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    out, cache = conv_transpose2d_forward_fast(x, wt, b, s)
    out_ref, cache_ref = conv_transpose2d_forward_reference(x, wt, b, s)
    assert out.shape == (n, s * h, s * w, c_out) and out.dtype == dtype
    np.testing.assert_allclose(out, out_ref, **tol)
    np.testing.assert_allclose(out, conv_transpose_by_definition(x.astype(np.float64), wt.astype(np.float64),
                                                           b.astype(np.float64), s), **tol)
    fast, ref = conv_transpose2d_backward_fast(g, cache), conv_transpose2d_backward_reference(g, cache_ref)
    for name, a, r in zip(("dx", "dw", "db"), fast, ref):
        assert a.shape == r.shape and a.dtype == dtype, name
        # dw and db sum over every pixel: compare relative to their size
        np.testing.assert_allclose(a, r, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, np.abs(r).max()),
                                   err_msg=name)


def test_direct_kernels_on_two_threads(rng, parallel_threads):
    # the parallel split (rows per task, one weight-gradient partial sum per task) must not change the result
    x = rng.standard_normal((2, 9, 11, 16))
    wt = rng.standard_normal((3, 3, 32, 16))
    g = rng.standard_normal((2, 18, 22, 32))
    out, cache = conv_transpose2d_forward_fast(x, wt, None)
    out_ref, cache_ref = conv_transpose2d_forward_reference(x, wt, None)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    for a, r in zip(conv_transpose2d_backward_fast(g, cache), conv_transpose2d_backward_reference(g, cache_ref)):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-10)


def test_direct_backward_accepts_non_contiguous_and_float64_gradient(rng):
    layer = ConvTranspose2d(4, 3, rng=rng)
    x = rng.standard_normal((2, 5, 9, 4)).astype(np.float32)
    g = rng.standard_normal((2, 10, 18, 3))  # float64, as a loss might hand it over
    layer(x[:, :, ::-1])  # a non-contiguous view
    dx = layer.backward(g[:, :, ::-1])
    assert dx.dtype == layer.weight.grad.dtype == np.float32
    _, cache = conv_transpose2d_forward_reference(np.ascontiguousarray(x[:, :, ::-1]), layer.weight.data,
                                                  layer.bias.data)
    dx_ref, dw_ref, _ = conv_transpose2d_backward_reference(np.ascontiguousarray(g[:, :, ::-1], np.float32), cache)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.weight.grad, dw_ref, rtol=1e-4, atol=1e-3)


def test_output_is_twice_the_input_and_keras_layout(rng):
    layer = ConvTranspose2d(6, 5, rng=rng)
    assert layer.weight.shape == (3, 3, 5, 6)  # Keras (kh, kw, C_out, C_in)
    assert layer.num_parameters() == 3 * 3 * 6 * 5 + 5
    assert np.all(layer.bias.data == 0)
    limit = np.sqrt(6 / (9 * 6 + 9 * 5))  # glorot_uniform
    assert np.abs(layer.weight.data).max() <= limit and layer.weight.data.std() > limit / 3
    for h, w in [(7, 5), (8, 8), (1, 3)]:
        assert layer(rng.standard_normal((2, h, w, 6)).astype(np.float32)).shape == (2, 2 * h, 2 * w, 5)


def test_sa_unetv2_upsampling_parameter_counts():
    assert ConvTranspose2d(64, 48).num_parameters() == 27_696
    assert ConvTranspose2d(48, 32).num_parameters() == 13_856
    assert ConvTranspose2d(32, 16).num_parameters() == 4_624


def _torch_forward_backward(torch, x, w, b, g, stride, padding=0, output_padding=0):
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(w.transpose(3, 2, 0, 1), requires_grad=True)  # (kh,kw,Co,Ci) -> (Ci,Co,kh,kw)
    tb = torch.tensor(b, requires_grad=True)
    full = torch.nn.functional.conv_transpose2d(tx, tw, tb, stride=stride, padding=padding,
                                                output_padding=output_padding)
    return tx, tw, tb, full


@pytest.mark.parametrize("k,s", [(3, 2), (4, 2), (2, 2), (3, 1)])
def test_matches_torch(rng, torch, k, s):
    layer = ConvTranspose2d(5, 6, k, s, rng=rng)
    layer.bias.data[:] = rng.standard_normal(6).astype(np.float32)
    x = rng.standard_normal((2, 7, 6, 5)).astype(np.float32)
    g = rng.standard_normal((2, 7 * s, 6 * s, 6)).astype(np.float32)
    out = layer(x)
    dx = layer.backward(g)
    tx, tw, tb, full = _torch_forward_backward(torch, x, layer.weight.data, layer.bias.data, g, s)
    # Keras 'same' == PyTorch padding=0 with the first p0 rows/cols dropped, s*H kept
    p0 = same_offset(k, s)
    tout = full[:, :, p0 : p0 + 7 * s, p0 : p0 + 6 * s]
    tout.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    assert rel(out, tout.detach().numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(dx, tx.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(layer.weight.grad, tw.grad.numpy().transpose(2, 3, 1, 0)) < 1e-4
    assert rel(layer.bias.grad, tb.grad.numpy()) < 1e-4


def test_torch_padding1_output_padding1_is_shifted_by_one_pixel(rng, torch):
    # The usual PyTorch recipe for "same" upsampling also gives 2H x 2W, but it is a
    # different layer: its pixel j is our pixel j + 1.
    layer = ConvTranspose2d(3, 2, rng=rng)
    x = rng.standard_normal((1, 5, 6, 3)).astype(np.float32)
    ours = layer(x)
    _, _, _, shifted = _torch_forward_backward(torch, x, layer.weight.data, layer.bias.data, None, 2,
                                               padding=1, output_padding=1)
    shifted = shifted.detach().numpy().transpose(0, 2, 3, 1)
    assert shifted.shape == ours.shape == (1, 10, 12, 2)
    assert rel(shifted, ours) > 0.5
    np.testing.assert_allclose(shifted[:, :-1, :-1], ours[:, 1:, 1:], rtol=1e-5, atol=1e-5)


def test_bad_inputs(rng):
    layer = ConvTranspose2d(3, 4, rng=rng)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        layer(rng.standard_normal((1, 4, 4, 2)))
    with pytest.raises(ValueError, match="NHWC"):
        layer(rng.standard_normal((4, 4, 3)))
    with pytest.raises(ValueError, match="floating-point"):
        layer(np.ones((1, 4, 4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="stride"):
        ConvTranspose2d(3, 4, stride=0)
