"""Whole-image prediction: padding and cropping, batching, eval mode, tiling, loading weights."""

import numba
import numpy as np
import pytest

from numpyseg.checkpoint import CheckpointError, save_checkpoint
from numpyseg.data.padding import pad_to
from numpyseg.inference import (dataset_pad_size, load_model, padded_shape, predict_logits, predict_proba,
                                sigmoid)
from numpyseg.layers.module import no_grad
from numpyseg.models.unet import build_model


@pytest.fixture(autouse=True, scope="module")
def one_numba_thread():
    # Tiny inputs: a parallel region costs more than the work, badly so on a loaded machine.
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)


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


def test_tiled_prediction(model, rng):
    image = rng.random((40, 56, 3)).astype(np.float32)
    whole = predict_logits(model, image)
    # One tile covering the whole padded image is the whole-image prediction.
    np.testing.assert_allclose(predict_logits(model, image, tile=64, overlap=8), whole, atol=1e-5)
    tiled = predict_logits(model, image, tile=32, overlap=16, batch_size=3)
    assert tiled.shape == (40, 56) and np.all(np.isfinite(tiled))
    # GroupNorm statistics differ per tile, so tiles only approximate the whole image.
    assert np.corrcoef(tiled.ravel(), whole.ravel())[0, 1] > 0.5
    with pytest.raises(ValueError, match="multiple of 8"):
        predict_logits(model, image, tile=30)


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
