"""Whole-image prediction: padding and cropping, batching, eval mode, exact tiling, TTA, loading weights."""

import numpy as np
import pytest

from numpyseg.checkpoint import CheckpointError, save_checkpoint
from numpyseg.data.padding import pad_to
from numpyseg.inference import (dataset_pad_size, load_model, padded_shape, predict_logits, predict_proba,
                                sigmoid)
from numpyseg.layers.module import no_grad
from numpyseg.models.unet import build_model


@pytest.fixture(scope="module")
def model():
    return build_model({"arch": "sa_unetv2", "base_channels": 8, "dropblock_rate": 0.15, "block_size": 3,
                        "seed": 3})


def test_padded_shape_rounds_up_or_uses_the_fixed_size():
    assert padded_shape((584, 565)) == (584, 568)
    assert padded_shape((37, 45)) == (40, 48)
    assert padded_shape((584, 565), 592) == (592, 592)
    assert padded_shape((20, 30), (24, 32)) == (24, 32)
    with pytest.raises(ValueError, match="does not fit"):
        padded_shape((600, 565), 592)
    with pytest.raises(ValueError, match="multiple of 8"):
        padded_shape((20, 20), 30)


def test_dataset_pad_size():
    assert dataset_pad_size("drive", [(584, 565)]) == (592, 592)
    assert dataset_pad_size("stare", [(605, 700)]) == (704, 704)
    assert dataset_pad_size("synthetic", [(48, 48)]) is None
    assert dataset_pad_size("drive", [(700, 700)]) is None  # does not fit: multiple of 8 instead


def test_sigmoid_is_stable_and_keeps_dtype():
    z = np.array([-1000.0, -3.0, 0.0, 3.0, 1000.0], dtype=np.float32)
    p = sigmoid(z)
    assert p.dtype == np.float32
    assert np.all(np.isfinite(p))
    with np.errstate(over="ignore"):
        expected = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    np.testing.assert_allclose(p, expected, rtol=1e-6, atol=0)


def test_prediction_equals_padded_forward_cropped_back(model, rng):
    image = rng.random((37, 45, 3)).astype(np.float32)
    prob = predict_proba(model, image)
    assert prob.shape == (37, 45) and prob.dtype == np.float32
    model.eval()
    with no_grad():
        logits = model(pad_to(image, (40, 48))[None])[0, :37, :45, 0]
    model.train()
    np.testing.assert_allclose(prob, sigmoid(logits), rtol=0, atol=1e-6)
    assert np.all((prob >= 0) & (prob <= 1))


def test_fixed_pad_size_changes_only_the_context_not_the_shape(model, rng):
    image = rng.random((30, 30, 3)).astype(np.float32)
    small = predict_logits(model, image)
    large = predict_logits(model, image, pad_size=48)
    assert small.shape == large.shape == (30, 30)
    model.eval()
    with no_grad():
        expected = model(pad_to(image, (48, 48))[None])[0, :30, :30, 0]
    model.train()
    np.testing.assert_allclose(large, expected, atol=1e-6)


def test_eval_mode_restored_no_dropblock_no_caches(model, rng):
    image = rng.random((32, 32, 3)).astype(np.float32)
    model.train()
    first = predict_logits(model, image)
    second = predict_logits(model, image)
    np.testing.assert_array_equal(first, second)  # DropBlock off: deterministic
    assert model.training and model.enc1.block1.drop.training  # previous mode restored
    assert all(m._cache is None for _, m in model.named_modules())  # no_grad kept nothing
    model.eval()
    predict_logits(model, image)
    assert not model.training
    model.train()


def test_batches_and_lists_of_mixed_sizes_match_one_by_one(model, rng):
    images = [rng.random(shape).astype(np.float32) for shape in [(24, 24, 3), (33, 20, 3), (24, 24, 3)]]
    one = [predict_logits(model, im) for im in images]
    together = predict_logits(model, images, batch_size=2)
    assert isinstance(together, list) and [z.shape for z in together] == [(24, 24), (33, 20), (24, 24)]
    for a, b in zip(one, together):
        np.testing.assert_allclose(a, b, atol=1e-5)
    stack = np.stack([images[0], images[2]])
    out = predict_proba(model, stack, batch_size=2)
    assert isinstance(out, np.ndarray) and out.shape == (2, 24, 24)


def _f1(mask, label):
    tp = np.sum(mask & label)
    return 2 * tp / (mask.sum() + label.sum())


@pytest.fixture(scope="module")
def fundus():
    """A generated 300 x 263 fundus image (its sides are not multiples of 8) and its vessel label."""
    from numpyseg.data.synthetic import make_fundus

    sample = make_fundus((300, 263), 5)
    return sample.image, sample.label.astype(bool)


@pytest.mark.parametrize("tile", [128, 136, 200])
def test_tiled_prediction_equals_whole_image(model, fundus, tile):
    image, label = fundus
    whole = predict_proba(model, image)
    tiled = predict_proba(model, image, tile=tile)
    assert tiled.shape == whole.shape == (300, 263)
    assert np.abs(tiled - whole).max() <= 1e-3
    assert abs(_f1(tiled >= 0.5, label) - _f1(whole >= 0.5, label)) <= 0.002


def test_tiled_prediction_of_sa_unet_v1_equals_whole_image(fundus):
    """BatchNorm in eval mode is local: no statistics sweep, the halo alone makes tiles exact."""
    v1 = build_model({"arch": "sa_unet", "base_channels": 8, "block_size": 3, "seed": 1})
    assert v1.receptive_radius() == 89
    image = fundus[0]
    np.testing.assert_allclose(predict_proba(v1, image, tile=128), predict_proba(v1, image), atol=1e-5)


def test_tiles_without_the_halo_or_the_whole_image_statistics_differ(model, fundus):
    """Each of the two corrections is needed: dropping either changes the prediction."""
    from numpyseg.inference import evaluation_mode, normalised_with, tile_layout, whole_image_statistics

    image = pad_to(fundus[0], (304, 264))
    whole = predict_logits(model, image)
    with evaluation_mode(model):
        statistics = whole_image_statistics(model, image)
        with normalised_with(model, statistics):   # whole-image statistics, but no halo
            no_halo = np.zeros_like(whole)
            for (wy, wy1, wx, wx1), _ in tile_layout(304, 264, 128, 0):
                no_halo[wy:wy1, wx:wx1] = model(image[None, wy:wy1, wx:wx1])[0, :, :, 0]
        own_statistics = np.zeros_like(whole)       # halo, but each window's own statistics
        for (wy, wy1, wx, wx1), (y0, y1, x0, x1) in tile_layout(304, 264, 128, 112):
            z = model(image[None, wy:wy1, wx:wx1])[0, :, :, 0]
            own_statistics[wy + y0:wy + y1, wx + x0:wx + x1] = z[y0:y1, x0:x1]
    assert np.abs(no_halo - whole).max() > 1e-2
    assert np.abs(own_statistics - whole).max() > 1e-2


def test_receptive_radius_bounds_where_a_pixel_is_felt(model):
    """With the statistics fixed, changing one pixel changes logits up to, not beyond, the radius."""
    from numpyseg.inference import evaluation_mode, normalised_with, whole_image_statistics

    radius = model.receptive_radius()
    assert radius == 110
    image = np.random.default_rng(2).random((264, 264, 3)).astype(np.float32)
    changed = image.copy()
    changed[131, 131] = 1.0 - changed[131, 131]
    with evaluation_mode(model):
        with normalised_with(model, whole_image_statistics(model, image)):
            delta = np.abs(model(changed[None]) - model(image[None]))[0, :, :, 0]
    rows, cols = np.nonzero(delta > 0)
    reach = max(np.abs(rows - 131).max(), np.abs(cols - 131).max())
    assert radius - 16 <= reach <= radius


def test_whole_image_statistics_equal_groupnorms_own(model, fundus):
    """Statistics merged over tiles (Chan et al.) give each GroupNorm's whole-image output."""
    from numpyseg.inference import evaluation_mode, normalised_with, tile_layout, whole_image_statistics

    image = pad_to(fundus[0], (304, 264))
    with evaluation_mode(model):
        statistics = whole_image_statistics(model, image, tile_layout(304, 264, 152, 112))
        with normalised_with(model, statistics):
            frozen = model(image[None])
        plain = model(image[None])
    assert len(statistics.known) == 14
    assert np.abs(frozen - plain).max() <= 1e-4


def test_tile_must_be_a_multiple_of_8(model, fundus):
    with pytest.raises(ValueError, match="multiple of 8"):
        predict_logits(model, fundus[0], tile=30)


def test_tiled_prediction_reports_progress(model, fundus):
    messages = []
    predict_proba(model, fundus[0], tile=160, progress=messages.append)
    assert messages[:2] == ["GroupNorm statistics 1/14 (4 tiles)", "GroupNorm statistics 2/14 (4 tiles)"]
    assert messages[-1] == "tile 4/4"


# --------------------------------------------------------------- test-time augmentation
def test_the_eight_symmetries_are_distinct_and_invert():
    from numpyseg.inference import DIHEDRAL, dihedral, undo_dihedral

    a = np.arange(5 * 7 * 2).reshape(5, 7, 2)
    images = [dihedral(a, k, flip) for k, flip in DIHEDRAL]
    assert len(DIHEDRAL) == 8
    assert len({x.tobytes() + bytes(x.shape) for x in images}) == 8
    for (k, flip), x in zip(DIHEDRAL, images):
        assert x.shape == ((5, 7, 2) if k % 2 == 0 else (7, 5, 2))
        np.testing.assert_array_equal(undo_dihedral(x, k, flip), a)


def test_tta_of_a_pixelwise_model_equals_the_plain_prediction(rng):
    """A 1 x 1 convolution commutes with every flip and turn, so its TTA is its plain pass."""
    from numpyseg.layers.conv import Conv2d

    pixelwise = Conv2d(3, 1, 1, rng=rng)
    image = rng.random((37, 45, 3)).astype(np.float32)
    plain = predict_proba(pixelwise, image)
    np.testing.assert_allclose(predict_proba(pixelwise, image, tta=True), plain, atol=1e-6)


def test_tta_of_the_network_averages_the_eight_back_transformed_maps(model, rng):
    from numpyseg.inference import DIHEDRAL, dihedral, undo_dihedral

    image = rng.random((40, 48, 3)).astype(np.float32)
    expected = np.mean([undo_dihedral(predict_proba(model, np.ascontiguousarray(dihedral(image, k, flip))), k, flip)
                        for k, flip in DIHEDRAL], axis=0)
    tta = predict_proba(model, image, tta=True)
    np.testing.assert_allclose(tta, expected, atol=1e-6)
    assert np.abs(tta - predict_proba(model, image)).max() > 1e-4   # the network is not symmetric


def test_bad_images_are_one_line_errors(model):
    with pytest.raises(ValueError, match="expected an image"):
        predict_logits(model, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="does not fit"):
        predict_logits(model, np.zeros((40, 40, 3), np.float32), pad_size=32)


def test_load_model_round_trip_and_errors(model, tmp_path, rng):
    path = save_checkpoint(tmp_path / "w.npz", model, config=model.config, epoch=3)
    loaded, checkpoint = load_model(path)
    assert checkpoint.epoch == 3 and not loaded.training
    image = rng.random((24, 24, 3)).astype(np.float32)
    np.testing.assert_array_equal(predict_logits(model, image), predict_logits(loaded, image))

    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="bad.npz"):
        load_model(bad)
    weird = save_checkpoint(tmp_path / "weird.npz", model, config={"arch": "resnet"}, epoch=0)
    with pytest.raises(CheckpointError, match="cannot build its model"):
        load_model(weird)
