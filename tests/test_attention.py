"""SpatialAttention and CrossScaleSpatialAttention: formula, fused kernels vs NumPy references,
gradient check, PyTorch parity."""

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_module
from numpyseg.layers.attention import (CrossScaleSpatialAttention, GateWeight, SpatialAttention,
                                       cross_scale_attention_backward_fast,
                                       cross_scale_attention_backward_reference,
                                       cross_scale_attention_forward_fast,
                                       cross_scale_attention_forward_reference,
                                       spatial_attention_backward_fast, spatial_attention_backward_reference,
                                       spatial_attention_forward_fast, spatial_attention_forward_reference)
from numpyseg.layers.conv import Conv2d, conv2d_forward_reference
from numpyseg.layers.module import no_grad

rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)


def distinct(rng, shape):
    """Distinct values per pixel so max over channels has a unique arg-max."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape) * 6.0 - 3.0


def test_the_gate_weight_is_a_parameter_holder_named_conv_weight(rng):
    # the checkpoint names stay 'conv.weight'; no Conv2d child whose forward would never run
    for layer in (SpatialAttention(7, rng=0), CrossScaleSpatialAttention(5, rng=0)):
        assert isinstance(layer.conv, GateWeight) and not isinstance(layer.conv, Conv2d)
        k = layer.conv.kernel_size
        assert [(n, p.shape) for n, p in layer.named_parameters()] == [("conv.weight", (k, k, 2, 1))]
    # the same initial weights as the Conv2d(2, 1, 7, bias=False) the layers used to own
    np.testing.assert_array_equal(SpatialAttention(7, rng=3).conv.weight.data,
                                  Conv2d(2, 1, 7, bias=False, rng=3).weight.data)


@pytest.mark.parametrize("shape", [(2, 5, 6, 3), (3, 8, 7, 1), (2, 9, 9, 16)])
def test_spatial_attention_formula_and_gradcheck(rng, shape):
    layer = SpatialAttention(7, rng=rng)
    x = distinct(rng, shape)
    a = np.concatenate([x.mean(axis=3, keepdims=True), x.max(axis=3, keepdims=True)], axis=3)
    expected = x / (1 + np.exp(-conv2d_forward_reference(a, layer.conv.weight.data.astype(np.float64))[0]))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-10, atol=1e-12)
    report = check_module(layer, [x])
    assert report.passed, report
    assert set(report.errors) == {"input0", "conv.weight"}


@pytest.mark.parametrize("shape,c_e,c_d", [((2, 5, 6), 3, 4), ((3, 8, 7), 1, 2), ((2, 9, 9), 16, 16),
                                           ((2, 4, 4), 5, 1)])
def test_cross_scale_attention_formula_and_gradcheck(rng, shape, c_e, c_d):
    layer = CrossScaleSpatialAttention(7, rng=rng)
    enc = rng.standard_normal(shape + (c_e,))
    dec = rng.standard_normal(shape + (c_d,))
    a = np.concatenate([enc.mean(axis=3, keepdims=True), dec.mean(axis=3, keepdims=True)], axis=3)
    expected = enc / (1 + np.exp(-conv2d_forward_reference(a, layer.conv.weight.data.astype(np.float64))[0]))
    np.testing.assert_allclose(layer(enc, dec), expected, rtol=1e-10, atol=1e-12)
    report = check_module(layer, [enc, dec])
    assert report.passed, report
    assert set(report.errors) == {"input0", "input1", "conv.weight"}


@pytest.mark.parametrize("k", [3, 5])
def test_other_kernel_sizes_gradcheck(rng, k):
    sa, csa = SpatialAttention(k, rng=rng), CrossScaleSpatialAttention(k, rng=rng)
    assert sa.conv.weight.shape == csa.conv.weight.shape == (k, k, 2, 1)
    assert check_module(sa, [distinct(rng, (2, 6, 5, 4))]).passed
    assert check_module(csa, [rng.standard_normal((2, 6, 5, 4)), rng.standard_normal((2, 6, 5, 3))]).passed


def test_parameters_are_named_conv_weight():
    for layer in (SpatialAttention(), CrossScaleSpatialAttention()):
        assert [(n, p.shape) for n, p in layer.named_parameters()] == [("conv.weight", (7, 7, 2, 1))]
        assert layer.num_parameters() == 98


def test_max_gradient_goes_to_the_first_argmax_channel(rng):
    # Channels 1 and 3 tie for the max at every pixel: the max path must feed channel 1 only.
    x = rng.uniform(-1, 0, size=(1, 4, 4, 5))
    x[..., 1] = x[..., 3] = 2.0
    layer = SpatialAttention(3, rng=rng)
    s = layer(x)[..., 1:2] / x[..., 1:2]  # the gate, read off a channel where x = 2
    g = rng.standard_normal(x.shape)
    dx = layer.backward(g)
    # remove the paths every channel shares (product and mean): what is left is the max path
    common_1 = g[..., 1:2] * s
    common_3 = g[..., 3:4] * s
    mean_part = dx[..., 0:1] - g[..., 0:1] * s  # channel 0 gets only the product and mean paths
    max_part_1 = dx[..., 1:2] - common_1 - mean_part
    max_part_3 = dx[..., 3:4] - common_3 - mean_part
    assert np.abs(max_part_1).max() > 1e-3
    np.testing.assert_allclose(max_part_3, 0, atol=1e-12)


def _torch_sa(torch, x, w):
    a = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    return x * torch.sigmoid(torch.nn.functional.conv2d(a, w, padding=w.shape[-1] // 2))


def _torch_csa(torch, enc, dec, w):
    a = torch.cat([enc.mean(1, keepdim=True), dec.mean(1, keepdim=True)], 1)
    return enc * torch.sigmoid(torch.nn.functional.conv2d(a, w, padding=w.shape[-1] // 2))


def test_spatial_attention_matches_torch(rng, torch):
    layer = SpatialAttention(7, rng=rng)
    x = distinct(rng, (2, 11, 10, 6)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    out = layer(x)
    dx = layer.backward(g)
    assert out.dtype == dx.dtype == np.float32
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(layer.conv.weight.data.transpose(3, 2, 0, 1), requires_grad=True)
    tout = _torch_sa(torch, tx, tw)
    tout.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    assert rel(out, tout.detach().numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(dx, tx.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(layer.conv.weight.grad, tw.grad.numpy().transpose(2, 3, 1, 0)) < 1e-4


def test_cross_scale_attention_matches_torch(rng, torch):
    layer = CrossScaleSpatialAttention(7, rng=rng)
    enc = rng.standard_normal((2, 11, 10, 6)).astype(np.float32)
    dec = rng.standard_normal((2, 11, 10, 4)).astype(np.float32)
    g = rng.standard_normal(enc.shape).astype(np.float32)
    out = layer(enc, dec)
    d_enc, d_dec = layer.backward(g)
    assert out.dtype == d_enc.dtype == d_dec.dtype == np.float32
    te = torch.tensor(enc.transpose(0, 3, 1, 2), requires_grad=True)
    td = torch.tensor(dec.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(layer.conv.weight.data.transpose(3, 2, 0, 1), requires_grad=True)
    tout = _torch_csa(torch, te, td, tw)
    tout.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    assert rel(out, tout.detach().numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(d_enc, te.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(d_dec, td.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(layer.conv.weight.grad, tw.grad.numpy().transpose(2, 3, 1, 0)) < 1e-4


def test_backward_accumulates_into_the_weight_gradient(rng):
    layer = CrossScaleSpatialAttention(7, rng=rng)
    enc, dec = rng.standard_normal((1, 6, 6, 2)), rng.standard_normal((1, 6, 6, 3))
    g = rng.standard_normal(enc.shape)
    layer(enc, dec)
    layer.backward(g)
    once = layer.conv.weight.grad.copy()
    layer(enc, dec)
    layer.backward(g)
    np.testing.assert_allclose(layer.conv.weight.grad, 2 * once, rtol=1e-6)


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="NHWC"):
        SpatialAttention(rng=rng)(rng.standard_normal((4, 4, 2)))
    with pytest.raises(ValueError, match="floating-point"):
        SpatialAttention(rng=rng)(np.ones((1, 4, 4, 2), dtype=np.int64))
    csa = CrossScaleSpatialAttention(rng=rng)
    with pytest.raises(ValueError, match="same \\(N, H, W\\)"):
        csa(rng.standard_normal((1, 4, 4, 2)), rng.standard_normal((1, 8, 8, 2)))
    with pytest.raises(ValueError, match="NHWC"):
        csa(rng.standard_normal((1, 4, 4, 2)), rng.standard_normal((4, 4, 2)))


# (N, H, W, C): rows shorter and longer than the 7x7 kernel, one channel, the bottleneck's 64
FUSED_SHAPES = [(2, 5, 6, 3), (3, 8, 7, 1), (2, 9, 9, 16), (1, 12, 37, 64), (2, 3, 2, 5), (1, 1, 11, 4)]


def _tolerance(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", FUSED_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_spatial_attention_matches_reference(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((7, 7, 2, 1)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    out, cache = spatial_attention_forward_fast(x, w)
    out_ref, cache_ref = spatial_attention_forward_reference(x, w)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, out_ref, **_tolerance(dtype))
    (dx, dw), (dx_ref, dw_ref) = spatial_attention_backward_fast(g, cache), spatial_attention_backward_reference(g, cache_ref)
    assert dx.dtype == dw.dtype == dtype and dw.shape == (7, 7, 2, 1)
    np.testing.assert_allclose(dx, dx_ref, **_tolerance(dtype))
    np.testing.assert_allclose(dw, dw_ref, rtol=_tolerance(dtype)["rtol"],
                               atol=_tolerance(dtype)["atol"] * np.abs(dw_ref).max())


@pytest.mark.parametrize("shape", FUSED_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_cross_scale_attention_matches_reference(rng, shape, dtype):
    enc = rng.standard_normal(shape).astype(dtype)
    dec = rng.standard_normal(shape[:3] + (shape[3] + 2,)).astype(dtype)
    w = rng.standard_normal((7, 7, 2, 1)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    out, cache = cross_scale_attention_forward_fast(enc, dec, w)
    out_ref, cache_ref = cross_scale_attention_forward_reference(enc, dec, w)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, out_ref, **_tolerance(dtype))
    fast = cross_scale_attention_backward_fast(g, cache)
    for name, a, r in zip(("d_enc", "d_dec", "dw"), fast, cross_scale_attention_backward_reference(g, cache_ref)):
        assert a.shape == r.shape and a.dtype == dtype, name
        np.testing.assert_allclose(a, r, rtol=_tolerance(dtype)["rtol"],
                                   atol=_tolerance(dtype)["atol"] * max(1.0, np.abs(r).max()), err_msg=name)


def test_fused_kernels_on_two_threads(rng, parallel_threads):
    # rows split over tasks, one dw partial sum per task: the same numbers
    x = distinct(rng, (2, 13, 10, 6))
    dec = rng.standard_normal((2, 13, 10, 3))
    w = rng.standard_normal((7, 7, 2, 1))
    g = rng.standard_normal(x.shape)
    out, cache = spatial_attention_forward_fast(x, w)
    out_ref, cache_ref = spatial_attention_forward_reference(x, w)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    for a, r in zip(spatial_attention_backward_fast(g, cache), spatial_attention_backward_reference(g, cache_ref)):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)
    out, cache = cross_scale_attention_forward_fast(x, dec, w)
    _, cache_ref = cross_scale_attention_forward_reference(x, dec, w)
    for a, r in zip(cross_scale_attention_backward_fast(g, cache), cross_scale_attention_backward_reference(g, cache_ref)):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


def test_no_grad_keeps_no_cache_and_gives_the_same_output(rng):
    x = rng.standard_normal((2, 6, 7, 5)).astype(np.float32)
    dec = rng.standard_normal((2, 6, 7, 3)).astype(np.float32)
    sa, csa = SpatialAttention(rng=rng), CrossScaleSpatialAttention(rng=rng)
    out_sa, out_csa = sa(x), csa(x, dec)
    with no_grad():
        np.testing.assert_array_equal(sa(x), out_sa)
        np.testing.assert_array_equal(csa(x, dec), out_csa)
    assert sa._cache is None and csa._cache is None
    with pytest.raises(RuntimeError, match="no_grad"):
        sa.backward(x)


def test_fused_layers_accept_non_contiguous_inputs_and_float64_gradients(rng):
    layer = CrossScaleSpatialAttention(rng=rng)
    enc = rng.standard_normal((2, 9, 8, 6)).astype(np.float32)
    dec = rng.standard_normal((2, 9, 8, 5)).astype(np.float32)
    g = rng.standard_normal((2, 9, 8, 6))  # float64, as a loss might hand it over
    out = layer(enc[:, ::-1], dec[..., ::-1])
    d_enc, d_dec = layer.backward(g[:, ::-1])
    assert out.dtype == d_enc.dtype == d_dec.dtype == layer.conv.weight.grad.dtype == np.float32
    ref_out, cache = cross_scale_attention_forward_reference(enc[:, ::-1], dec[..., ::-1], layer.conv.weight.data)
    ref = cross_scale_attention_backward_reference(g[:, ::-1].astype(np.float32), cache)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
    for a, r in zip((d_enc, d_dec, layer.conv.weight.grad), ref):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)
