"""Augmentation keeps image, label and FOV aligned; batches are padded and masked as documented."""

import numpy as np
import pytest

from numpyseg.data.augment import Augmenter, rotate, rotation_source, sample_bilinear
from numpyseg.data.padding import pad_to
from numpyseg.data.synthetic import make_dataset, make_fundus
from numpyseg.training.batches import make_batch

GEOMETRY_ONLY = dict(brightness=0.0, contrast=0.0, gamma=0.0)


def coordinate_image(height, width):
    """Channels 0/1 hold y/(H-1) and x/(W-1): the image says where each pixel came from."""
    yy, xx = np.meshgrid(np.arange(height) / (height - 1), np.arange(width) / (width - 1), indexing="ij")
    return np.dstack([yy, xx, np.full_like(yy, 0.5)]).astype(np.float32)


def bilinear_loop(array, sy, sx):
    """Reference: bilinear interpolation pixel by pixel, zeros outside."""
    h, w = array.shape[:2]
    out = np.zeros(sy.shape + array.shape[2:])
    for q in np.ndindex(sy.shape):
        y0, x0 = int(np.floor(sy[q])), int(np.floor(sx[q]))
        fy, fx = sy[q] - y0, sx[q] - x0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                y, x = y0 + dy, x0 + dx
                if 0 <= y < h and 0 <= x < w:
                    out[q] += wy * wx * array[y, x]
    return out


def test_bilinear_matches_loop_including_outside(rng):
    array = rng.random((6, 7, 2))
    sy = rng.uniform(-3, 9, (5, 8))
    sx = rng.uniform(-3, 10, (5, 8))
    np.testing.assert_allclose(sample_bilinear(array, sy, sx), bilinear_loop(array, sy, sx), atol=1e-12)
    np.testing.assert_allclose(sample_bilinear(array[:, :, 0], sy, sx), bilinear_loop(array[:, :, 0], sy, sx),
                               atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotation_by_multiples_of_90_is_rot90(rng, k):
    square = rng.random((9, 9, 3))
    labels = (rng.random((9, 9)) < 0.4).astype(np.uint8)
    np.testing.assert_allclose(rotate(square, 90 * k), np.rot90(square, k), atol=1e-9)
    np.testing.assert_array_equal(rotate(labels, 90 * k, order=0), np.rot90(labels, k))
    np.testing.assert_allclose(rotate(square, 0), square)


def test_rotated_shapes_match_analytic_shapes():
    # A bar along x, rotated by 30 degrees counter-clockwise, against the bar drawn at 30 degrees.
    n = 101
    c = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n] - c
    bar = ((np.abs(yy) <= 4) & (np.abs(xx) <= 40)).astype(np.uint8)
    a = np.deg2rad(30)
    # on screen (y down) a counter-clockwise turn takes direction (x=1, y=0) to (x=cos a, y=-sin a)
    along = xx * np.cos(a) - yy * np.sin(a)
    across = xx * np.sin(a) + yy * np.cos(a)
    expected = ((np.abs(across) <= 4) & (np.abs(along) <= 40)).astype(np.uint8)
    rotated = rotate(bar, 30, order=0)
    wrong = rotated != expected
    # only pixels within one pixel of the bar's outline may differ (nearest-neighbour rounding)
    near_outline = (np.abs(np.abs(across) - 4) <= 1) | (np.abs(np.abs(along) - 40) <= 1)
    assert wrong.sum() < 0.2 * expected.sum() and near_outline[wrong].all()
    assert (rotate(bar, -30, order=0) != expected).sum() > expected.sum()  # the other way is far off
    # a centred disc does not change
    disc = ((yy ** 2 + xx ** 2) <= 30 ** 2).astype(np.uint8)
    assert (rotate(disc, 17, order=0) != disc).sum() < 0.02 * disc.sum()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rotate_degrees,crop", [(0.0, None), (0.0, 24), (15.0, None), (20.0, (20, 28))])
def test_label_follows_the_image(rng, seed, rotate_degrees, crop):
    height, width = 37, 45
    image = coordinate_image(height, width)
    label = (rng.random((height, width)) < 0.5).astype(np.uint8)
    fov = np.ones((height, width), np.uint8)
    augmenter = Augmenter(rot90=True, rotate_degrees=rotate_degrees, crop=crop, rng=seed, **GEOMETRY_ONLY)
    out_image, out_label, out_fov, region = augmenter.transform(image, label, fov)
    # the coordinates in the image say which source pixel each output pixel shows
    src_y = out_image[:, :, 0].astype(np.float64) * (height - 1)
    src_x = out_image[:, :, 1].astype(np.float64) * (width - 1)
    if rotate_degrees == 0:
        valid = np.ones(out_label.shape, bool)
        assert region.all()
    else:
        # bilinear interpolation of a linear ramp is exact away from the image border;
        # skip pixels whose source is (nearly) half-way between two pixels
        valid = ((src_y >= 1) & (src_y <= height - 2) & (src_x >= 1) & (src_x <= width - 2)
                 & (np.abs(src_y % 1 - 0.5) > 1e-3) & (np.abs(src_x % 1 - 0.5) > 1e-3)
                 & (out_image[:, :, 2] > 0.499))
        assert valid.mean() > 0.4
    expected = label[np.floor(src_y + 0.5).astype(int).clip(0, height - 1),
                     np.floor(src_x + 0.5).astype(int).clip(0, width - 1)]
    np.testing.assert_array_equal(out_label[valid], expected[valid])
    assert out_fov[valid].all()
    assert out_label.dtype == np.uint8 and out_image.dtype == np.float32
    if crop is not None:
        assert out_image.shape[:2] == ((crop, crop) if np.ndim(crop) == 0 else crop)


def test_rotation_region_marks_pixels_from_the_image():
    image = np.ones((40, 40, 3), np.float32)
    ones = np.ones((40, 40), np.uint8)
    augmenter = Augmenter(flip=False, rot90=False, rotate_degrees=20, rng=0, **GEOMETRY_ONLY)
    out_image, _, fov, region = augmenter.transform(image, ones, ones)
    assert region[0, 0] == 0 and region[20, 20] == 1   # corners come from outside the image
    np.testing.assert_array_equal(region, fov)
    assert (out_image[region == 1, 0] > 0.49).all()


def test_photometric_changes_only_the_image_inside_the_fov():
    s = make_fundus((64, 64), rng=2)
    augmenter = Augmenter(flip=False, rot90=False, brightness=0.3, contrast=0.3, gamma=0.3, rng=1)
    changed = 0
    for _ in range(5):
        image, label, fov = augmenter(s.image, s.label, s.fov)
        np.testing.assert_array_equal(label, s.label)
        np.testing.assert_array_equal(fov, s.fov)
        np.testing.assert_array_equal(image[s.fov == 0], s.image[s.fov == 0])
        assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
        changed += not np.allclose(image, s.image)
    assert changed == 5


def test_seeded_augmenters_replay_and_inputs_are_untouched():
    s = make_fundus((48, 48), rng=0)
    before = s.image.copy()
    outputs = []
    for _ in range(2):
        augmenter = Augmenter(rotate_degrees=10, crop=32, rng=42)
        outputs.append([augmenter(s.image, s.label, s.fov) for _ in range(3)])
    for first, second in zip(*outputs):
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s.image, before)


def test_crops_prefer_the_fov():
    image = np.zeros((100, 100, 3), np.float32)
    fov = np.zeros((100, 100), np.uint8)
    fov[70:80, 10:20] = 1
    label = fov.copy()
    inside = Augmenter(flip=False, rot90=False, crop=16, rng=0, **GEOMETRY_ONLY)
    uniform = Augmenter(flip=False, rot90=False, crop=16, crop_in_fov=False, rng=0, **GEOMETRY_ONLY)
    assert all(inside(image, label, fov)[2].any() for _ in range(30))
    assert sum(uniform(image, label, fov)[2].any() for _ in range(30)) < 15
    # an image smaller than the patch is zero-padded to it
    small = inside(image[:10, :12], label[:10, :12], fov[:10, :12])
    assert small[0].shape == (16, 16, 3) and small[1].shape == (16, 16)


def test_make_batch_pads_and_masks():
    samples = make_dataset(5, size=(50, 60), seed=1)
    images, labels, masks = make_batch(samples, [3, 1], (64, 64), None)
    assert images.shape == (2, 64, 64, 3) and labels.shape == masks.shape == (2, 64, 64, 1)
    assert images.dtype == labels.dtype == masks.dtype == np.float32
    np.testing.assert_array_equal(images[1], pad_to(samples[1].image, 64))
    np.testing.assert_array_equal(labels[1, :, :, 0], pad_to(samples[1].label, 64))
    assert masks[0, :50, :60].all() and not masks[0, 50:].any() and not masks[0, :, 60:].any()
    fov_masks = make_batch(samples, [0, 1], (64, 64), None, loss_fov=True)[2]
    np.testing.assert_array_equal(fov_masks[0, :, :, 0], pad_to(samples[0].fov, 64))


def test_make_batch_with_augmentation_and_patches():
    samples = make_dataset(3, size=(44, 52), seed=2)
    images, labels, masks = make_batch(samples, [0, 1, 2], (56, 56), Augmenter(rng=0))
    assert images.shape == (3, 56, 56, 3)  # rot90 may swap H and W, so both sides hold 52 -> 56
    for image, label, mask in zip(images, labels, masks):
        h, w = (44, 52) if mask[:, 45:].any() else (52, 44)
        assert mask[:h, :w].all() and mask.sum() == h * w
        assert not label[mask == 0].any()
    patches = make_batch(samples, [2, 0], (24, 24), Augmenter(crop=24, rng=0))
    assert patches[0].shape == (2, 24, 24, 3) and patches[2].all()


def test_make_batch_rejects_an_image_larger_than_the_batch():
    s = make_fundus((32, 32), rng=0)
    with pytest.raises(ValueError, match="larger than the batch size"):
        make_batch([s], [0], (16, 16), None)


def test_rotation_source_formula():
    sy, sx = rotation_source((5, 5), 90)
    # output (0, 0) shows source (0, 4): the top-right corner moves to the top-left
    assert np.allclose([sy[0, 0], sx[0, 0]], [0, 4])
