"""The procedural fundus generator: deterministic, exact labels, fast."""

import time

import numpy as np
import pytest

from numpyseg.data.datasets import load_dataset
from numpyseg.data.fov import connected_components
from numpyseg.data.synthetic import make_dataset, make_fundus


def test_same_seed_same_arrays_different_seed_different():
    a, b, c = make_fundus((96, 80), rng=5), make_fundus((96, 80), rng=5), make_fundus((96, 80), rng=6)
    for field in ("image", "label", "fov"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.label, c.label) and not np.array_equal(a.image, c.image)
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(make_fundus(64, g1).image, make_fundus(64, g2).image)


@pytest.mark.parametrize("size", [(128, 128), (96, 150), (200, 120)])
def test_types_ranges_and_fov(size):
    s = make_fundus(size, rng=1)
    assert s.image.shape == size + (3,) and s.image.dtype == np.float32
    assert s.label.shape == s.fov.shape == size and s.label.dtype == s.fov.dtype == np.uint8
    assert set(np.unique(s.label)) == {0, 1} and set(np.unique(s.fov)) == {0, 1}
    assert 0.0 <= s.image.min() and s.image.max() <= 1.0
    outside = s.fov == 0
    assert not s.image[outside].any(), "black outside the field of view"
    assert not s.label[outside].any(), "no vessel outside the field of view"
    # a disc of radius 0.43-0.48 x the short side
    short = min(size)
    assert np.pi * (0.43 * short) ** 2 * 0.98 < s.fov.sum() < np.pi * (0.48 * short) ** 2 * 1.02
    assert 0.02 < s.label.mean() < 0.2
    # orange-red: red > green > blue on average inside the FOV
    r, g, b = (s.image[s.fov == 1][:, c].mean() for c in range(3))
    assert r > g > b


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_label_is_exactly_where_vessels_darken_the_image(seed):
    # Same seed without vessels: same background and noise, so the difference is the vessels.
    with_vessels = make_fundus((128, 128), rng=seed)
    without = make_fundus((128, 128), rng=seed, vessels=False)
    assert not without.label.any()
    np.testing.assert_array_equal(with_vessels.fov, without.fov)
    green_diff = with_vessels.image[:, :, 1] - without.image[:, :, 1]
    vessel = with_vessels.label == 1
    assert (green_diff[vessel] < 0).all(), "every label pixel is darker"
    assert (green_diff[~vessel] == 0).all(), "no other pixel is touched"
    assert (with_vessels.image[~vessel] == without.image[~vessel]).all()


def test_vessels_are_darker_than_their_surroundings_and_form_trees():
    s = make_fundus((256, 256), rng=11)
    green = s.image[:, :, 1]
    vessel = s.label == 1
    background = (s.fov == 1) & ~vessel
    assert green[vessel].mean() < green[background].mean() - 0.03
    # the trees all grow from the optic disc, so the label is (almost) one connected piece
    labels, n = connected_components(s.label)
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.max() > 0.9 * vessel.sum()


def test_widths_taper_from_thick_trunks_to_one_pixel():
    s = make_fundus((256, 256), rng=4)
    label = s.label.astype(bool)
    # distance-to-background by repeated 4-neighbour erosion: the number of
    # erosions a pixel survives is ~ half the local vessel width
    depth = np.zeros(label.shape, int)
    current = label.copy()
    while current.any():
        depth += current
        padded = np.pad(current, 1)
        current = current & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    assert depth.max() >= 2            # trunks several pixels wide
    assert (depth[label] == 1).mean() > 0.5  # most vessel pixels are on thin vessels or edges


def test_make_dataset_names_and_prefix_stability():
    five = make_dataset(5, size=(64, 64), seed=3)
    three = make_dataset(3, size=(64, 64), seed=3)
    assert [s.name for s in five] == [f"synthetic_{i:03d}" for i in range(5)]
    for a, b in zip(three, five):
        np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(five[0].image, five[1].image)
    assert not np.array_equal(make_dataset(1, (64, 64), seed=4)[0].image, five[0].image)
    train = load_dataset("synthetic", split="training", n=2, size=(64, 64))
    test = load_dataset("synthetic", split="test", n=2, size=(64, 64))
    assert not np.array_equal(train[0].image, test[0].image)


def test_fast_enough():
    make_fundus((128, 128), rng=0)
    start = time.perf_counter()
    for seed in range(10):
        make_fundus((128, 128), rng=seed)
    assert (time.perf_counter() - start) / 10 < 0.1
    start = time.perf_counter()
    make_fundus((592, 592), rng=0)
    assert time.perf_counter() - start < 1.0


def test_rejects_tiny_images():
    with pytest.raises(ValueError, match="at least 16x16"):
        make_fundus((8, 8))
