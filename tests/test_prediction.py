"""numpyseg.prediction: segment() on images of any size and scale, the training FOV scale in
checkpoints, refusals and warnings, outputs written all or nothing; DRIVE: tiles equal the whole image."""

import errno
import warnings

import numpy as np
import pytest
from PIL import Image

import numpyseg.prediction as P
from numpyseg.atomic import atomic_write_all
from numpyseg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpyseg.data.synthetic import make_fundus
from numpyseg.errors import ConfigError, DataError, NumpysegWarning
from numpyseg.inference import SHIPPED_WEIGHTS, predict_proba
from numpyseg.models.unet import build_model


@pytest.fixture(scope="module")
def model():
    return build_model({"arch": "sa_unetv2", "base_channels": 8, "block_size": 3, "seed": 4})


@pytest.fixture(scope="module")
def fundus():
    """A generated 96 x 80 fundus (image, label, FOV) and the diameter of the FOV segment() finds on it."""
    from numpyseg.data.fov import derive_fov

    sample = make_fundus((96, 80), 11)
    return sample, P.fov_diameter(derive_fov(sample.image))


def trained_at(model, diameter):
    return P.TrainedModel(model, float(diameter), False)


# ----------------------------------------------------------------------- segment
def test_segment_returns_every_map_at_the_input_size(model, fundus):
    sample, diameter = fundus
    result = P.segment(sample.image, trained_at(model, diameter), threshold=0.4)
    assert result.probability.shape == (96, 80) and result.probability.dtype == np.float32
    np.testing.assert_array_equal(result.probability, predict_proba(model, sample.image))
    np.testing.assert_array_equal(result.mask, result.probability >= 0.4)
    assert result.overlay.shape == (96, 80, 3) and result.overlay.dtype == np.uint8
    assert result.fov.dtype == bool and abs(result.fov.mean() - sample.fov.mean()) < 0.05
    assert result.scale == 1.0 and result.threshold == 0.4 and result.warnings == ()
    assert result.trained_fov_diameter == diameter and not result.trained_fov_assumed
    # the same image as uint8 or as a file gives the same map
    pixels = np.round(sample.image * 255).astype(np.uint8)
    from_uint8 = P.segment(pixels, trained_at(model, diameter)).probability
    np.testing.assert_allclose(from_uint8, predict_proba(model, pixels.astype(np.float32) / 255), atol=1e-6)


def test_segment_rescales_to_the_trained_fov_outside_the_tolerance(model, fundus):
    sample, diameter = fundus
    half = trained_at(model, diameter / 2)
    result = P.segment(sample.image, half)                      # rescale='auto'
    assert result.scale == pytest.approx(0.5)
    assert result.probability.shape == (96, 80)
    small = np.clip(P.resize_map(sample.image, (48, 40), "bicubic"), 0, 1)
    expected = np.clip(P.resize_map(predict_proba(model, small), (96, 80)), 0, 1)
    np.testing.assert_allclose(result.probability, expected, atol=1e-6)
    plain = P.segment(sample.image, half, rescale="off")
    assert plain.scale == 1.0
    np.testing.assert_array_equal(plain.probability, predict_proba(model, sample.image))
    # within the tolerance: left alone by 'auto', resized by 'always'
    near = trained_at(model, diameter * 1.1)
    assert P.segment(sample.image, near).scale == 1.0
    assert P.segment(sample.image, near, rescale="always").scale == pytest.approx(1.1)


def test_scale_factor_rules():
    assert P.scale_factor(540, 540) == 1.0
    assert P.scale_factor(540 * 1.149, 540) == 1.0                 # inside 15 %
    assert P.scale_factor(1000, 540) == pytest.approx(0.54)
    assert P.scale_factor(1000, 540, "off") == 1.0
    assert P.scale_factor(540 * 1.05, 540, "always") == pytest.approx(1 / 1.05)
    assert P.scale_factor(540 * 1.01, 540, "always") == 1.0         # negligible
    assert P.scale_factor(None, 540) == 1.0                         # no FOV: nothing to measure
    with pytest.raises(DataError, match="only 100 px across"):
        P.scale_factor(100, 540)                                    # x5.4 enlargement
    with pytest.raises(ConfigError, match="rescale must be one of"):
        P.scale_factor(540, 540, "sometimes")


def test_fov_diameter_is_the_larger_side_of_the_bounding_box():
    mask = np.zeros((50, 60), bool)
    mask[5:45, 10:40] = True                                        # 40 x 30
    assert P.fov_diameter(mask) == 40.0
    assert P.fov_diameter(np.zeros((8, 8))) is None
    samples = [make_fundus(size, seed) for seed, size in enumerate((64, 80, 96))]
    diameters = sorted(P.fov_diameter(s.fov) for s in samples)
    assert P.training_fov_diameter(samples) == diameters[1]


def test_an_image_without_a_field_of_view_is_warned_about(model):
    black = np.zeros((64, 72, 3), np.float32)
    with pytest.warns(NumpysegWarning, match="no field of view found"):
        result = P.segment(black, trained_at(model, 540))
    assert not result.fov.any() and result.fov_diameter is None and result.scale == 1.0
    assert len(result.warnings) == 1 and "not meaningful" in result.warnings[0]


@pytest.mark.parametrize("shape", [(1, 1), (7, 9), (31, 64), (64, 20)])
def test_images_too_small_are_refused(model, shape):
    with pytest.raises(DataError, match=f"{shape[0]}x{shape[1]} .* too small.* 32 pixels"):
        P.segment(np.full(shape + (3,), 0.5, np.float32), trained_at(model, 540))


@pytest.mark.parametrize("array, problem", [
    (np.full((40, 40, 3), 2.0, np.float32), "lie in \\[0, 1\\]"),
    (np.full((40, 40, 3), np.nan, np.float32), "finite"),
    (np.zeros((40, 40, 3), np.int32), "dtype int32"),
    (np.zeros((40, 40, 4), np.float32), "shape \\(40, 40, 4\\)"),
])
def test_bad_arrays_are_one_line_errors(model, array, problem):
    with pytest.raises(DataError, match=problem):
        P.segment(array, trained_at(model, 540))


def test_bad_options_are_config_errors(model, fundus):
    image = fundus[0].image
    for options, problem in (({"threshold": 1.5}, "threshold"), ({"tile": 30}, "multiple of 8"),
                             ({"rescale": "yes"}, "rescale")):
        with pytest.raises(ConfigError, match=problem):
            P.segment(image, trained_at(model, 540), **options)


def test_segment_with_tta_or_tiles_reports_progress(model, fundus):
    sample, diameter = fundus
    messages = []
    result = P.segment(sample.image, trained_at(model, diameter), tta=True, progress=messages.append)
    assert messages[:2] == ["image: 80x96, finding the field of view", "image: predicting at 80x96"]
    assert messages[-1] == "test-time augmentation 8/8"
    np.testing.assert_array_equal(result.probability, predict_proba(model, sample.image, tta=True))
    messages.clear()
    tiled = P.segment(sample.image, trained_at(model, diameter), tile=64, progress=messages.append)
    assert messages[-1] == "tile 4/4"
    assert np.abs(tiled.probability - predict_proba(model, sample.image)).max() <= 1e-5


# ------------------------------------------------------------- the training FOV scale
def test_checkpoints_record_the_training_fov_diameter(model, tmp_path):
    path = save_checkpoint(tmp_path / "w.npz", model, config=model.config, epoch=3, fov_diameter=612.5)
    assert load_checkpoint(path).fov_diameter == 612.5
    trained = P.load_trained(path)
    assert trained.fov_diameter == 612.5 and not trained.fov_assumed
    assert P.load_trained(path, fov_diameter=300).fov_diameter == 300.0
    with pytest.raises(ValueError, match="positive number"):
        save_checkpoint(tmp_path / "bad.npz", model, config=model.config, epoch=0, fov_diameter=-1)


def test_checkpoints_without_a_fov_diameter_are_taken_at_drives(model, tmp_path):
    old = save_checkpoint(tmp_path / "old.npz", model, config=model.config, epoch=1)   # the format before
    assert load_checkpoint(old).fov_diameter is None
    trained = P.load_trained(old)
    assert trained.fov_diameter == P.DRIVE_FOV_DIAMETER == 540.0 and trained.fov_assumed


def test_a_bad_recorded_fov_diameter_is_a_checkpoint_error(model, tmp_path):
    import json

    path = save_checkpoint(tmp_path / "w.npz", model, config=model.config, epoch=1)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["fov_diameter"] = "wide"
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="w.npz: metadata 'fov_diameter' must be a positive number"):
        load_checkpoint(path)


@pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="the shipped weights are not present")
def test_the_shipped_weights_load_and_segment_the_demo_photograph():
    from numpyseg.cli.demo import DEMO_IMAGE

    trained = P.load_trained()
    assert trained.fov_diameter == 540.0 and trained.fov_assumed
    result = P.segment(DEMO_IMAGE, trained)
    assert result.scale == 1.0                       # its FOV is DRIVE's size already
    vessels = result.mask[result.fov].mean()
    assert 0.04 < vessels < 0.25, vessels


# ---------------------------------------------------------------------------- outputs
def test_outputs_are_written_with_an_exact_probability_map(model, fundus, tmp_path):
    sample, diameter = fundus
    result = P.segment(sample.image, trained_at(model, diameter))
    paths = P.write_outputs(result, tmp_path / "out", "eye", sample.label)
    assert sorted(paths) == ["errors", "mask", "overlay", "prob", "prob_npy"]
    np.testing.assert_array_equal(np.load(paths["prob_npy"]), result.probability)
    np.testing.assert_array_equal(np.asarray(Image.open(paths["prob"])),
                                  np.round(result.probability * 255).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(Image.open(paths["overlay"])), result.overlay)
    with pytest.raises(DataError, match="eye_prob.png exists already"):
        P.write_outputs(result, tmp_path / "out", "eye", sample.label)
    P.write_outputs(result, tmp_path / "out", "eye", sample.label, overwrite=True)


def test_a_full_disk_leaves_no_output_of_the_image(model, fundus, tmp_path, monkeypatch):
    sample, diameter = fundus
    result = P.segment(sample.image, trained_at(model, diameter))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "save", disk_full)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        P.write_outputs(result, out, "eye")
    assert list(out.iterdir()) == []                 # neither the PNGs nor any temporary file


def test_atomic_write_all_keeps_the_old_files_when_one_write_fails(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_bytes(b"old a")

    def fail(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError):
        atomic_write_all({first: lambda f: f.write(b"new a"), second: fail})
    assert first.read_bytes() == b"old a" and not second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    atomic_write_all({first: lambda f: f.write(b"new a"), second: lambda f: f.write(b"new b")})
    assert first.read_bytes() == b"new a" and second.read_bytes() == b"new b"


# ------------------------------------------------------------------------------ DRIVE
def test_tiled_prediction_equals_whole_image_on_drive(drive_root):
    """The shipped weights on DRIVE 01: 256-pixel tiles give the whole-image probabilities and F1."""
    if not SHIPPED_WEIGHTS.is_file():
        pytest.skip("the shipped weights are not present")
    from numpyseg.data.io import read_image, read_label

    model = P.load_trained().model
    image = read_image(drive_root / "test" / "images" / "01_test.tif")
    label = read_label(drive_root / "test" / "1st_manual" / "01_manual1.gif").astype(bool)
    whole = predict_proba(model, image, pad_size=592)
    tiled = predict_proba(model, image, pad_size=592, tile=256)

    def f1(prob):
        mask = prob >= 0.5
        return 2 * np.sum(mask & label) / (mask.sum() + label.sum())
    assert np.abs(tiled - whole).max() <= 1e-3
    assert abs(f1(tiled) - f1(whole)) <= 0.002
    assert f1(whole) > 0.8


def test_warnings_are_not_raised_for_ordinary_images(model, fundus):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NumpysegWarning)
        P.segment(fundus[0].image, trained_at(model, fundus[1]))
