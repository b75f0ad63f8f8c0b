"""DropBlock2d: kernels vs references, block geometry, statistics, modes, seeds,
frozen-mask gradient check, bad input."""

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_module
from numpyseg.layers.dropblock import (DropBlock2d, clamp_block_size, dropblock_backward_fast,
                                       dropblock_backward_reference, dropblock_forward_fast,
                                       dropblock_forward_reference, dropblock_gamma, dropblock_mask,
                                       expand_seeds_fast, expand_seeds_reference)


def block_centres(dropped, bh, bw):
    """Valid centres (b//2 <= i < H - (b-1)//2) whose whole bh x bw block is dropped."""
    n, h, w, c = dropped.shape
    full = np.zeros_like(dropped)
    for i in range(bh // 2, h - (bh - 1) // 2):
        for j in range(bw // 2, w - (bw - 1) // 2):
            block = dropped[:, i - bh // 2: i + (bh - 1) // 2 + 1, j - bw // 2: j + (bw - 1) // 2 + 1, :]
            full[:, i, j, :] = block.min(axis=(1, 2))
    return full


# ------------------------------------------------------------------- kernels
@pytest.mark.parametrize("block", [(1, 1), (3, 3), (7, 7), (2, 2), (4, 3), (9, 10), (12, 12)])
@pytest.mark.parametrize("shape", [(2, 9, 10, 3), (1, 16, 16, 5), (3, 7, 4, 1)])
def test_expand_seeds_fast_matches_reference(rng, block, shape):
    seeds = (rng.random(shape) < 0.05).astype(np.uint8)
    np.testing.assert_array_equal(expand_seeds_fast(seeds, *block), expand_seeds_reference(seeds, *block))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_mask_matches_reference(rng, dtype):
    x = rng.standard_normal((2, 5, 6, 3)).astype(dtype)
    dropped = (rng.random(x.shape) < 0.3).astype(np.uint8)
    out, cache = dropblock_forward_fast(x, dropped, 1.37)
    out_ref, cache_ref = dropblock_forward_reference(x, dropped, 1.37)
    assert out.dtype == out_ref.dtype == dtype
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(np.where(dropped, 0, x * dtype(1.37)), out)
    np.testing.assert_array_equal(dropblock_backward_fast(x, cache), dropblock_backward_reference(x, cache_ref))


@pytest.mark.parametrize("b,expected_rows", [(7, (7, 14)), (3, (9, 12)), (2, (9, 11)), (4, (8, 12))])
def test_one_seed_drops_the_block_around_it(b, expected_rows):
    # TensorFlow 'SAME' max-pool: a seed at s drops s - b//2 .. s + (b-1)//2 (centred for odd b)
    seeds = np.zeros((1, 20, 20, 1), dtype=np.uint8)
    seeds[0, 10, 10, 0] = 1
    dropped = expand_seeds_fast(seeds, b, b)[0, :, :, 0]
    expected = np.zeros((20, 20), dtype=np.uint8)
    lo, hi = expected_rows
    expected[lo:hi, lo:hi] = 1
    np.testing.assert_array_equal(dropped, expected)
    assert hi - lo == b and lo == 10 - b // 2


# ------------------------------------------------------------------ geometry
@pytest.mark.parametrize("b", [7, 3, 4])
def test_dropped_regions_are_whole_blocks_inside_the_map(b):
    rng = np.random.default_rng(7)
    dropped, _ = dropblock_mask((3, 20, 23, 4), 0.3, b, rng)
    assert dropped.any()
    # every dropped entry lies in some fully dropped b x b block whose centre is valid,
    # i.e. the map is exactly a union of such blocks (none clipped by the border)
    np.testing.assert_array_equal(expand_seeds_fast(block_centres(dropped, b, b), b, b), dropped)


def test_block_larger_than_map_is_clamped():
    # block 7 on a 4 x 5 map -> a 4 x 5 block with one valid centre: gamma = rate,
    # each (sample, channel) slice is dropped whole or kept whole, never NaN
    assert clamp_block_size(7, 4, 5) == (4, 5)
    assert dropblock_gamma(0.3, 4, 5, 4, 5) == pytest.approx(0.3)
    layer = DropBlock2d(0.3, 7, rng=3)
    x = np.ones((4, 4, 5, 500), dtype=np.float32)
    y = layer(x)
    assert np.all(np.isfinite(y))
    per_slice = (y == 0).mean(axis=(1, 2))
    assert set(np.unique(per_slice)) <= {0.0, 1.0}
    assert abs(per_slice.mean() - 0.3) < 0.04  # 2000 slices: std 0.01


# ---------------------------------------------------------------- statistics
def expected_dropped_fraction(rate, h, w, b):
    """E[fraction dropped]: entry (i, j) is kept iff none of the valid centres covering it seeds."""
    gamma = dropblock_gamma(rate, h, w, b, b)
    counts = np.zeros((h, w))  # how many valid centres' blocks cover each entry
    for i in range(b // 2, h - (b - 1) // 2):
        for j in range(b // 2, w - (b - 1) // 2):
            counts[i - b // 2: i + (b - 1) // 2 + 1, j - b // 2: j + (b - 1) // 2 + 1] += 1
    return float(np.mean(1 - (1 - gamma) ** counts))


def test_dropped_fraction_is_close_to_rate():
    layer = DropBlock2d(0.15, 7, rng=11)
    x = np.ones((8, 64, 64, 4), dtype=np.float32)
    fractions = [float(np.mean(layer(x) == 0)) for _ in range(10)]
    mean_fraction = np.mean(fractions)
    # within a few percent of the rate (less than the rate: overlapping blocks)
    assert abs(mean_fraction - 0.15) < 0.02
    # and matching the exact expectation of the seed-and-block construction
    assert abs(mean_fraction - expected_dropped_fraction(0.15, 64, 64, 7)) < 0.005
    assert np.std(fractions) > 0  # a new mask every forward pass


def test_scale_preserves_the_mean():
    layer = DropBlock2d(0.2, 5, rng=2)
    # exactly: for a constant input the rescaled output has the same mean
    ones = np.ones((2, 16, 16, 3))
    assert np.mean(layer(ones)) == pytest.approx(1.0, rel=1e-12)
    # in expectation over masks for a non-constant input
    x = np.random.default_rng(0).uniform(0.5, 1.5, (4, 24, 24, 4))
    means = [layer(x).mean() for _ in range(300)]
    assert abs(np.mean(means) / x.mean() - 1) < 0.01
    # kept entries are scaled by size / kept, counted over the whole tensor
    y = layer(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept] / x[kept], y.size / kept.sum(), rtol=1e-12)


# ------------------------------------------------------------ modes and seeds
def test_identity_in_eval_and_at_rate_zero(rng):
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    for layer in (DropBlock2d(0.5, 3, rng=0).eval(), DropBlock2d(0.0, 3, rng=0)):
        np.testing.assert_array_equal(layer(x), x)
        np.testing.assert_array_equal(layer.backward(g), g)


def test_same_seed_same_mask(rng):
    x = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    a, b, c = DropBlock2d(0.2, 3, rng=5), DropBlock2d(0.2, 3, rng=5), DropBlock2d(0.2, 3, rng=6)
    ya, yb, yc = a(x), b(x), c(x)
    assert ya.dtype == np.float32
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(ya == 0, yc == 0)
    np.testing.assert_array_equal(a(x), b(x))  # the streams stay in step


def test_backward_uses_the_forward_mask(rng):
    layer = DropBlock2d(0.3, 3, rng=4)
    x = rng.standard_normal((2, 10, 10, 2))
    g = rng.standard_normal(x.shape)
    y = layer(x)
    dx = layer.backward(g)
    # y = x * m for a fixed m (0 or scale), so dx = g * m = g * y / x
    np.testing.assert_allclose(dx, g * (y / x), rtol=1e-12)


def test_frozen_mask_is_reused_until_reset(rng):
    layer = DropBlock2d(0.3, 3, rng=9)
    layer.freeze_mask = True
    x = rng.standard_normal((2, 9, 10, 3))
    first = layer(x)
    np.testing.assert_array_equal(layer(x), first)
    with pytest.raises(ValueError, match="frozen mask has shape"):
        layer(x[:1])
    layer.reset_mask()
    assert not np.array_equal(layer(x) == 0, first == 0)


@pytest.mark.parametrize("shape,b", [((2, 9, 10, 3), 3), ((3, 8, 8, 2), 4), ((2, 11, 7, 4), 5)])
def test_dropblock_gradcheck_with_frozen_mask(rng, shape, b):
    layer = DropBlock2d(0.3, b, rng=rng)
    layer.freeze_mask = True
    x = rng.standard_normal(shape)
    report = check_module(layer, [x], tolerance=1e-6, max_entries=None)
    assert report.passed, report
    assert (layer(x) == 0).any() and (layer(x) != 0).any()  # a real mask was checked


# ----------------------------------------------------------------- bad input
def test_dropblock_bad_input(rng):
    with pytest.raises(ValueError, match="rate must be in"):
        DropBlock2d(1.5)
    with pytest.raises(ValueError, match="rate must be in"):
        DropBlock2d(-0.1)
    with pytest.raises(ValueError, match="block_size"):
        DropBlock2d(0.1, 0)
    with pytest.raises(ValueError, match="block_size"):
        DropBlock2d(0.1, 2.5)
    with pytest.raises(ValueError, match="NHWC"):
        DropBlock2d(0.1, 3)(rng.standard_normal((8, 8, 3)))
