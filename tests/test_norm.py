"""GroupNorm and BatchNorm2d: numba kernels vs NumPy references, statistics,
gradient checks, running statistics, PyTorch parity, bad input."""

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_module
from numpyseg.layers.norm import (
    batchnorm_backward_fast,
    batchnorm_backward_reference,
    batchnorm_forward_fast,
    batchnorm_forward_reference,
    groupnorm_backward_fast,
    groupnorm_backward_reference,
    groupnorm_forward_fast,
    groupnorm_forward_reference,
    groupnorm_silu_backward_fast,
    groupnorm_silu_backward_reference,
    groupnorm_silu_forward_fast,
    groupnorm_silu_forward_reference,
)
from numpyseg.layers.module import no_grad
from numpyseg.layers.norm import BatchNorm2d, GroupNorm

rel = lambda a, b: np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)


def randomise_affine(layer, rng):
    """Random gamma and beta, so a wrong affine backward cannot hide behind 1 and 0."""
    c = layer.weight.size
    layer.weight.data = rng.standard_normal(c) + 1.0
    layer.bias.data = rng.standard_normal(c)


# ------------------------------------------------------------------ GroupNorm
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,groups", [((2, 5, 7, 16), 8), ((3, 4, 4, 6), 3), ((1, 3, 5, 8), 1),
                                          ((2, 6, 3, 4), 4), ((2, 9, 8, 64), 8)])
def test_groupnorm_fast_matches_reference(rng, dtype, shape, groups):
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    gamma, beta = rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1])
    dout = rng.standard_normal(shape).astype(dtype)
    y, cache = groupnorm_forward_fast(x, gamma, beta, groups, 1e-3)
    y_ref, cache_ref = groupnorm_forward_reference(x, gamma, beta, groups, 1e-3)
    assert y.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(cache[2], cache_ref[2], rtol=1e-12, atol=1e-12)  # mean (N, G)
    np.testing.assert_allclose(cache[3], cache_ref[3], rtol=1e-12)              # rstd (N, G)
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    dx, dgamma, dbeta = groupnorm_backward_fast(dout, cache)
    dx_ref, dgamma_ref, dbeta_ref = groupnorm_backward_reference(dout, cache_ref)
    assert dx.dtype == dgamma.dtype == dtype
    np.testing.assert_allclose(dx, dx_ref, rtol=tol, atol=tol)
    sums = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(dgamma, dgamma_ref, rtol=sums, atol=sums * np.abs(dgamma_ref).max())
    np.testing.assert_allclose(dbeta, dbeta_ref, rtol=sums, atol=sums * np.abs(dbeta_ref).max())


def test_groupnorm_statistics_are_normalised(rng):
    # gamma = 1, beta = 0: every (sample, group) has mean 0 and variance var / (var + eps)
    layer = GroupNorm(12, 4, eps=1e-3)
    x = rng.standard_normal((3, 6, 7, 12)) * 5 + rng.standard_normal(12) * 10
    y = layer(x).reshape(3, 6, 7, 4, 3)
    xg = x.reshape(3, 6, 7, 4, 3)
    var_x = xg.var(axis=(1, 2, 4))
    np.testing.assert_allclose(y.mean(axis=(1, 2, 4)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(1, 2, 4)), var_x / (var_x + 1e-3), rtol=1e-12)
    # the statistics are per sample: each sample's groups are normalised on their own
    y0 = layer(x[:1])
    np.testing.assert_allclose(y0, y[:1].reshape(1, 6, 7, 12), rtol=1e-12, atol=1e-12)


def test_groupnorm_float32_is_stable_with_a_large_offset(rng):
    # E[x^2] - E[x]^2 in float32 would lose every digit here; the two-pass statistics do not
    x = (1000.0 + rng.standard_normal((2, 16, 16, 16))).astype(np.float32)
    gamma, beta = np.ones(16), np.zeros(16)
    y, _ = groupnorm_forward_fast(x, gamma, beta, 8, 1e-3)
    y_ref, _ = groupnorm_forward_reference(x, gamma, beta, 8, 1e-3)  # float64 arithmetic
    assert np.abs(y - y_ref).max() < 1e-3
    assert y.dtype == np.float32


@pytest.mark.parametrize("channels,groups,shape", [(16, 8, (2, 5, 4)), (12, 4, (3, 3, 5)),
                                                   (6, 3, (2, 4, 4)), (8, 1, (2, 3, 3)),
                                                   (4, 4, (2, 5, 6))])
def test_groupnorm_gradcheck(rng, channels, groups, shape):
    layer = GroupNorm(channels, groups)
    randomise_affine(layer, rng)
    x = rng.standard_normal(shape + (channels,)) * 2 + 0.5
    report = check_module(layer, [x], tolerance=1e-6)
    assert report.passed, report
    assert set(report.errors) == {"input0", "weight", "bias"}


def test_groupnorm_parameters_and_backward_accumulates(rng):
    layer = GroupNorm(8, 2)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    np.testing.assert_array_equal(layer.weight.data, np.ones(8))
    np.testing.assert_array_equal(layer.bias.data, np.zeros(8))
    x, g = rng.standard_normal((2, 3, 3, 8)), rng.standard_normal((2, 3, 3, 8))
    layer(x)
    layer.backward(g)
    once = layer.bias.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.bias.grad, 2 * once)
    np.testing.assert_allclose(once, g.sum(axis=(0, 1, 2)))


def test_groupnorm_matches_torch(rng, torch):
    layer = GroupNorm(16, 8, eps=1e-3)
    layer.weight.data = (rng.standard_normal(16) + 1).astype(np.float32)
    layer.bias.data = rng.standard_normal(16).astype(np.float32)
    x = (rng.standard_normal((2, 9, 10, 16)) * 3 + 1).astype(np.float32)
    g = rng.standard_normal((2, 9, 10, 16)).astype(np.float32)
    out = layer(x)
    dx = layer.backward(g)
    assert out.dtype == dx.dtype == np.float32
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(layer.weight.data, requires_grad=True)
    tb = torch.tensor(layer.bias.data, requires_grad=True)
    tout = torch.nn.functional.group_norm(tx, 8, tw, tb, eps=1e-3)
    tout.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    assert rel(out, tout.detach().numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(dx, tx.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(layer.weight.grad, tw.grad.numpy()) < 1e-4
    assert rel(layer.bias.grad, tb.grad.numpy()) < 1e-4


def test_groupnorm_bad_input(rng):
    with pytest.raises(ValueError, match="12 channels cannot be split into 8"):
        GroupNorm(12, 8)
    layer = GroupNorm(16, 8)
    with pytest.raises(ValueError, match="expects 16 input channels"):
        layer(rng.standard_normal((1, 4, 4, 8)))
    with pytest.raises(ValueError, match="NHWC"):
        layer(rng.standard_normal((4, 4, 16)))
    with pytest.raises(ValueError, match="floating-point"):
        layer(np.ones((1, 4, 4, 16), dtype=np.int64))


# ------------------------------------------------------------------ BatchNorm
def test_batchnorm_train_statistics_and_running_update(rng):
    layer = BatchNorm2d(5)  # Keras defaults: momentum 0.99, eps 1e-3
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert set(layer.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    x1 = rng.standard_normal((4, 6, 7, 5)) * 3 + rng.standard_normal(5) * 4
    x2 = rng.standard_normal((4, 6, 7, 5)) * 0.5 - 2
    y = layer(x1.astype(np.float32))
    m1, v1 = x1.mean(axis=(0, 1, 2)), x1.var(axis=(0, 1, 2))  # biased variance
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), v1 / (v1 + 1e-3), rtol=1e-4)
    np.testing.assert_allclose(layer.running_mean, 0.01 * m1, rtol=1e-5)
    np.testing.assert_allclose(layer.running_var, 0.99 + 0.01 * v1, rtol=1e-5)
    layer(x2.astype(np.float32))
    m2, v2 = x2.mean(axis=(0, 1, 2)), x2.var(axis=(0, 1, 2))
    np.testing.assert_allclose(layer.running_mean, 0.99 * 0.01 * m1 + 0.01 * m2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layer.running_var, 0.99 * (0.99 + 0.01 * v1) + 0.01 * v2, rtol=1e-5)
    assert layer.running_mean.dtype == np.float32


def test_batchnorm_eval_uses_running_statistics(rng):
    layer = BatchNorm2d(3, momentum=0.9)
    randomise_affine(layer, rng)
    layer.running_mean = rng.standard_normal(3)
    layer.running_var = rng.random(3) + 0.5
    before = (layer.running_mean.copy(), layer.running_var.copy())
    layer.eval()
    x = rng.standard_normal((2, 4, 5, 3))
    y = layer(x)
    expected = ((x - layer.running_mean) / np.sqrt(layer.running_var + 1e-3) * layer.weight.data
                + layer.bias.data)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_array_equal(layer.running_mean, before[0])  # eval never updates
    np.testing.assert_array_equal(layer.running_var, before[1])


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (2, 3, 3, 1), (4, 2, 7, 3)])
def test_batchnorm_gradcheck(rng, mode, shape):
    layer = BatchNorm2d(shape[-1])
    randomise_affine(layer, rng)
    layer.running_mean = rng.standard_normal(shape[-1])
    layer.running_var = rng.random(shape[-1]) + 0.5
    layer.train(mode == "train")
    report = check_module(layer, [rng.standard_normal(shape) * 2 + 1], tolerance=1e-6)
    assert report.passed, report
    assert set(report.errors) == {"input0", "weight", "bias"}


def test_batchnorm_matches_torch_training(rng, torch):
    layer = BatchNorm2d(6)
    layer.weight.data = (rng.standard_normal(6) + 1).astype(np.float32)
    layer.bias.data = rng.standard_normal(6).astype(np.float32)
    x = (rng.standard_normal((3, 7, 8, 6)) * 2 + 1).astype(np.float32)
    g = rng.standard_normal((3, 7, 8, 6)).astype(np.float32)
    out = layer(x)
    dx = layer.backward(g)
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(layer.weight.data, requires_grad=True)
    tb = torch.tensor(layer.bias.data, requires_grad=True)
    rm, rv = torch.zeros(6), torch.ones(6)
    tout = torch.nn.functional.batch_norm(tx, rm, rv, tw, tb, training=True, momentum=0.01, eps=1e-3)
    tout.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    assert rel(out, tout.detach().numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(dx, tx.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(layer.weight.grad, tw.grad.numpy()) < 1e-4
    assert rel(layer.bias.grad, tb.grad.numpy()) < 1e-4
    # same running mean; PyTorch feeds the unbiased variance into its running variance,
    # Keras (and this layer) the biased one: undo Bessel's correction to compare
    m = 3 * 7 * 8
    np.testing.assert_allclose(layer.running_mean, rm.numpy(), rtol=1e-5, atol=1e-7)
    torch_batch_var = (rv.numpy() - 0.99) / 0.01
    np.testing.assert_allclose(layer.running_var, 0.99 + 0.01 * torch_batch_var * (m - 1) / m, rtol=1e-5)


def test_batchnorm_no_grad_keeps_no_cache(rng):
    layer = BatchNorm2d(2)
    with no_grad():
        layer(rng.standard_normal((1, 2, 2, 2)))
    with pytest.raises(RuntimeError, match="without a forward pass"):
        layer.backward(np.ones((1, 2, 2, 2)))


def test_batchnorm_bad_input(rng):
    layer = BatchNorm2d(4)
    with pytest.raises(ValueError, match="expects 4 input channels"):
        layer(rng.standard_normal((2, 3, 3, 5)))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm2d(4, momentum=1.5)


# ------------------------------------------------------------------ GroupNorm + SiLU, fused
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("shape, groups", [((2, 9, 7, 16), 8), ((1, 5, 3, 6), 3), ((3, 4, 4, 8), 1)])
def test_fused_groupnorm_silu_fast_matches_reference(rng, dtype, tol, shape, groups):
    c = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    dout = rng.standard_normal(shape).astype(dtype)
    y, cache = groupnorm_silu_forward_fast(x, gamma, beta, groups, 1e-3)
    y_ref, cache_ref = groupnorm_silu_forward_reference(x, gamma, beta, groups, 1e-3)
    assert y.dtype == dtype
    np.testing.assert_allclose(cache[3], cache_ref[3], rtol=1e-10, atol=1e-12)  # mean
    np.testing.assert_allclose(cache[4], cache_ref[4], rtol=1e-10)              # rstd
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    got = groupnorm_silu_backward_fast(dout, cache)
    want = groupnorm_silu_backward_reference(dout, cache_ref)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * np.abs(w).max())


@pytest.mark.parametrize("shape", [(2, 5, 4, 16), (1, 3, 6, 8)])
def test_fused_groupnorm_silu_gradcheck(rng, shape):
    from numpyseg.layers.norm import GroupNormSiLU

    layer = GroupNormSiLU(shape[-1], 8 if shape[-1] == 16 else 4)
    layer.weight.data = rng.standard_normal(shape[-1])
    layer.bias.data = rng.standard_normal(shape[-1])
    report = check_module(layer, [rng.standard_normal(shape) * 2], tolerance=1e-6)
    assert report.passed, report


@pytest.mark.parametrize("training", [True, False])
def test_fused_block_equals_groupnorm_then_silu(rng, training):
    """ConvBlock with the fused layer and with GroupNorm + SiLU: same names, outputs, gradients."""
    from numpyseg.layers.module import no_grad
    from numpyseg.models.blocks import ConvBlock

    fused = ConvBlock(5, 16, dropblock_rate=0.2, block_size=3, rng=4).to(np.float64)
    plain = ConvBlock(5, 16, dropblock_rate=0.2, block_size=3, fused=False, rng=4).to(np.float64)
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in plain.named_parameters()]
    for (_, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
        a.data = b.data = rng.standard_normal(a.shape)
    for block in (fused, plain):
        block.train(training)
        block.drop.freeze_mask = True
    x = rng.standard_normal((2, 12, 10, 5))
    plain(x)
    fused.drop._frozen = plain.drop._frozen  # one DropBlock mask for both
    out_f, out_p = fused(x), plain(x)
    np.testing.assert_allclose(out_f, out_p, rtol=1e-12, atol=1e-13)
    dout = rng.standard_normal(out_f.shape)
    fused.zero_grad(), plain.zero_grad()
    np.testing.assert_allclose(fused.backward(dout), plain.backward(dout), rtol=1e-11, atol=1e-13)
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-11, atol=1e-12, err_msg=name)
    with no_grad():
        fused(x)
    assert fused.norm._cache is None


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_conv_block_gradcheck(rng, fused, training):
    """Conv -> DropBlock (frozen mask) -> GroupNorm + SiLU, fused and as two layers."""
    from numpyseg.models.blocks import ConvBlock

    block = ConvBlock(3, 8, dropblock_rate=0.2, block_size=3, groups=4, fused=fused, rng=5)
    randomise_affine(block.norm, rng)
    block.train(training)
    block.drop.freeze_mask = True
    report = check_module(block, [rng.standard_normal((2, 7, 6, 3))], max_entries=40, tolerance=1e-6)
    assert report.passed, report
    assert set(report.errors) == {"input0", "conv.weight", "conv.bias", "norm.weight", "norm.bias"}
    assert report.zero == []


def test_fused_layer_caches_only_its_input_and_statistics(rng):
    from numpyseg.layers.norm import GroupNormSiLU

    layer = GroupNormSiLU(8, 4)
    x = rng.standard_normal((2, 5, 6, 8)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    big = [a for a in layer._cache if isinstance(a, np.ndarray) and a.size >= x.size]
    assert len(big) == 1 and big[0] is x  # no normalised or activated copy is kept
    assert layer._cache[3].shape == layer._cache[4].shape == (2, 4)  # mean, rstd per (sample, group)
    with no_grad():
        np.testing.assert_array_equal(layer(x), y)
    assert layer._cache is None


def test_fused_and_unfused_blocks_share_state_dicts(rng):
    from numpyseg.models.blocks import ConvBlock

    fused = ConvBlock(4, 8, groups=4, rng=1)
    plain = ConvBlock(4, 8, groups=4, fused=False, rng=2)
    randomise_affine(fused.norm, rng)
    state = fused.state_dict()
    assert set(state) == {"conv.weight", "conv.bias", "norm.weight", "norm.bias"}
    plain.load_state_dict(state)
    x = rng.standard_normal((1, 6, 6, 4)).astype(np.float32)
    fused.eval(), plain.eval()
    with no_grad():
        np.testing.assert_allclose(fused(x), plain(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_without_cache_gives_the_same_result(rng, training):
    """Under no_grad the output is computed in place: same numbers, same running statistics."""
    layers = [BatchNorm2d(5), BatchNorm2d(5)]
    for layer in layers:
        layer.weight.data = (rng.standard_normal(5) + 1).astype(np.float32)
        layer.bias.data = rng.standard_normal(5).astype(np.float32)
        layer.running_mean[:] = rng.standard_normal(5)
        layer.train(training)
    layers[1].load_state_dict(layers[0].state_dict())
    x = (rng.standard_normal((2, 4, 3, 5)) * 2 + 1).astype(np.float32)
    x_before = x.copy()
    with_cache = layers[0](x)
    with no_grad():
        without = layers[1](x)
    np.testing.assert_array_equal(without, with_cache)
    np.testing.assert_array_equal(x, x_before)  # the input is never written to
    for name, value in layers[0].state_dict().items():
        np.testing.assert_array_equal(layers[1].state_dict()[name], value, err_msg=name)
    assert layers[1]._cache is None and layers[0]._cache is not None


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batchnorm_fast_matches_reference(rng, training, dtype):
    x = (rng.standard_normal((3, 4, 5, 6)) * 2 + 1).astype(dtype)
    gamma, beta = rng.standard_normal(6).astype(dtype), rng.standard_normal(6).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    stats = [(rng.standard_normal(6).astype(dtype), (rng.random(6) + 0.5).astype(dtype))]
    stats.append((stats[0][0].copy(), stats[0][1].copy()))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    y, cache = batchnorm_forward_fast(x, gamma, beta, *stats[0], training=training)
    y_ref, cache_ref = batchnorm_forward_reference(x, gamma, beta, *stats[1], training=training)
    assert y.dtype == y_ref.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    for a, b in zip(stats[0], stats[1]):  # the same running statistics afterwards
        np.testing.assert_allclose(a, b, rtol=tol)
    for a, b in zip(batchnorm_backward_fast(dout, cache), batchnorm_backward_reference(dout, cache_ref)):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
