"""`numpyseg train / evaluate / predict` end to end, in-process, on tiny synthetic data;
every bad input gives one line on stderr and a non-zero exit; DRIVE smoke test."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from numpyseg.checkpoint import load_checkpoint
from numpyseg.cli.main import main
from numpyseg.data.io import read_image
from numpyseg.data.synthetic import make_dataset, make_fundus
from numpyseg.inference import load_model, predict_proba
from numpyseg.prediction import error_map, fov_diameter
from numpyseg.training import trainer as T

TINY = ["--synthetic-count", "6", "--synthetic-size", "32", "--batch-size", "2", "--base-channels", "8",
        "--val-count", "2", "--block-size", "3"]
TIME_COLUMNS = {"images_per_s", "epoch_time_s", "elapsed_s"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for 2 epochs through the CLI; returns the run folder."""
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(run), "--epochs", "2"] + TINY) == 0
    return run


def one_line_error(capsys, command):
    lines = capsys.readouterr().err.rstrip().splitlines()
    while lines and lines[0].startswith("  "):      # progress lines (indented) printed before the error
        lines.pop(0)
    err = "\n".join(lines).strip()
    assert "\n" not in err, err
    assert err.startswith(f"numpyseg {command}: error: "), err
    return err


def save_png(path, array):
    Image.fromarray(array).save(path)
    return path


def synthetic_png(path, size=32, seed=7):
    sample = make_fundus(size, seed)
    Image.fromarray((sample.image * 255).round().astype(np.uint8)).save(path)
    return path, sample


def csv_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in csv.DictReader(f)]


# --------------------------------------------------------------------- end to end


def test_train_evaluate_predict_end_to_end(trained, tmp_path, capsys):
    for name in ("last.npz", "best.npz", "history.csv", "history.json", "curves.png"):
        assert (trained / name).is_file(), name
    assert load_checkpoint(trained / "last.npz").epoch == 2

    scores = tmp_path / "scores.json"
    assert main(["evaluate", "--weights", str(trained / "best.npz"), "--dataset", "synthetic",
                 "--synthetic-size", "32", "--synthetic-count", "3", "--per-image", "--json", str(scores)]) == 0
    out = capsys.readouterr().out
    assert "whole image" in out and "inside FOV" in out and "synthetic_002" in out
    for column in ("Acc", "Sen", "Spe", "F1", "IoU", "MCC", "AUC"):
        assert column in out
    document = json.loads(scores.read_text())
    assert document["images"] == 3 and len(document["fov"]["per_image"]) == 3
    for region in ("whole", "fov"):
        for key, value in document[region]["mean"].items():
            assert 0.0 <= value <= 1.0 or key == "mcc" and -1.0 <= value <= 1.0, (region, key, value)

    image_path, sample = synthetic_png(tmp_path / "eye.png", size=36)
    label_path = tmp_path / "eye_label.png"
    Image.fromarray(sample.label * 255).save(label_path)
    outputs = tmp_path / "pred"
    assert main(["predict", str(image_path), "--weights", str(trained / "best.npz"), "--out", str(outputs),
                 "--label", str(label_path)]) == 0
    assert "F1" in capsys.readouterr().out
    prob = np.asarray(Image.open(outputs / "eye_prob.png"))
    mask = np.asarray(Image.open(outputs / "eye_mask.png"))
    over = np.asarray(Image.open(outputs / "eye_overlay.png"))
    errors = np.asarray(Image.open(outputs / "eye_errors.png"))
    assert prob.shape == mask.shape == (36, 36) and over.shape == errors.shape == (36, 36, 3)
    assert set(np.unique(mask)) <= {0, 255}
    model, _ = load_model(trained / "best.npz")
    expected = predict_proba(model, read_image(image_path))
    np.testing.assert_array_equal(prob, np.round(expected * 255).astype(np.uint8))
    np.testing.assert_array_equal(mask == 255, expected >= 0.5)
    # error map: white TP, red FP, blue FN, black TN
    pred, truth = mask == 255, sample.label == 1
    colours = {(255, 255, 255): pred & truth, (255, 0, 0): pred & ~truth, (0, 0, 255): ~pred & truth,
               (0, 0, 0): ~pred & ~truth}
    for colour, where in colours.items():
        assert np.all(errors[where] == colour), colour
    # vessels tinted, other pixels unchanged
    original = np.asarray(Image.open(image_path))
    np.testing.assert_array_equal(over[~pred], original[~pred])
    if pred.any():
        assert not np.array_equal(over[pred], original[pred])


def test_predict_reads_many_formats_of_odd_sizes(trained, tmp_path, capsys):
    rng = np.random.default_rng(0)
    files = {
        "rgb.png": (37, 45, lambda a: Image.fromarray(a)),
        "photo.jpg": (41, 33, lambda a: Image.fromarray(a)),
        "gray.png": (45, 51, lambda a: Image.fromarray(a[:, :, 1])),
        "rgba.png": (35, 35, lambda a: Image.fromarray(np.dstack([a, np.full(a.shape[:2], 200, np.uint8)]))),
        "deep.png": (43, 39, lambda a: Image.fromarray(a[:, :, 1].astype(np.uint16) * 257)),
        "scan.tif": (47, 43, lambda a: Image.fromarray(a)),
        "old.ppm": (41, 46, lambda a: Image.fromarray(a)),
        "anim.gif": (33, 37, lambda a: Image.fromarray(a).convert("P")),
    }
    paths = []
    for name, (h, w, make) in files.items():
        pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        make(pixels).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    out = tmp_path / "out"
    assert main(["predict", *paths, "--weights", str(trained / "best.npz"), "--out", str(out)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(files)
    for name, (h, w, _) in files.items():
        stem = name.split(".")[0]
        prob = np.asarray(Image.open(out / f"{stem}_prob.png"))
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        over = np.asarray(Image.open(out / f"{stem}_overlay.png"))
        assert prob.shape == (h, w) and prob.dtype == np.uint8, name
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}, name
        assert over.shape == (h, w, 3), name
        exact = np.load(out / f"{stem}_prob.npy")
        assert exact.shape == (h, w) and exact.dtype == np.float32, name
        np.testing.assert_array_equal(prob, np.round(exact * 255).astype(np.uint8))
        assert not (out / f"{stem}_errors.png").exists()


def test_predict_rescales_to_the_trained_fov_by_default(trained, tmp_path, capsys):
    """The run was trained on 32 px images: a 64 px image is predicted at half size, unless turned off."""
    trained_diameter = load_checkpoint(trained / "best.npz").fov_diameter
    assert 24 <= trained_diameter <= 32
    image_path, sample = synthetic_png(tmp_path / "big.png", size=64, seed=3)
    assert 50 <= fov_diameter(sample.fov) <= 64
    weights = ["--weights", str(trained / "best.npz")]
    assert main(["predict", str(image_path), *weights, "--out", str(tmp_path / "auto")]) == 0
    captured = capsys.readouterr()
    assert "FOV rescaled x0.4" in captured.out or "FOV rescaled x0.5" in captured.out
    assert "predicting at x0." in captured.err            # said on stderr as it happens
    assert np.load(tmp_path / "auto" / "big_prob.npy").shape == (64, 64)
    assert np.asarray(Image.open(tmp_path / "auto" / "big_overlay.png")).shape == (64, 64, 3)

    assert main(["predict", str(image_path), *weights, "--out", str(tmp_path / "off"), "--rescale", "off"]) == 0
    assert "rescaled" not in capsys.readouterr().out
    model, _ = load_model(trained / "best.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "off" / "big_prob.npy"),
                                  predict_proba(model, read_image(image_path)))

    assert main(["predict", str(image_path), *weights, "--out", str(tmp_path / "fixed"), "--resize-fov",
                 "--fov-diameter", "40"]) == 0
    assert "FOV rescaled x0.6" in capsys.readouterr().out


def test_training_records_its_fov_diameter_and_export_keeps_it(trained, tmp_path, capsys):
    from numpyseg.data.datasets import load_dataset
    from numpyseg.prediction import training_fov_diameter

    document = json.loads((trained / "history.json").read_text())
    samples = {s.name: s for s in load_dataset("synthetic", split="training", n=6, size=(32, 32), seed=0)}
    expected = training_fov_diameter([samples[name] for name in document["train_images"]])
    assert load_checkpoint(trained / "best.npz").fov_diameter == expected
    assert main(["export", str(trained), "--out", str(tmp_path / "w.npz")]) == 0
    assert load_checkpoint(tmp_path / "w.npz").fov_diameter == expected


def test_predict_warns_about_an_image_without_a_field_of_view(trained, tmp_path, capsys):
    dark = save_png(tmp_path / "dark.png", np.zeros((64, 64, 3), np.uint8))
    assert main(["predict", str(dark), "--weights", str(trained / "best.npz"), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("numpyseg predict: warning: ") and "no field of view found" in err
    assert "\n" not in err


def test_predict_refuses_images_too_small_to_segment(trained, tmp_path, capsys):
    for h, w in ((1, 1), (7, 9), (31, 200)):
        tiny = save_png(tmp_path / f"tiny{h}x{w}.png", np.full((h, w, 3), 128, np.uint8))
        assert main(["predict", str(tiny), "--weights", str(trained / "best.npz"),
                     "--out", str(tmp_path / "o")]) == 2
        err = one_line_error(capsys, "predict")
        assert "too small" in err and f"{h}x{w}" in err and "32 pixels" in err
    assert not (tmp_path / "o").exists()


def test_predict_never_overwrites_without_overwrite(trained, tmp_path, capsys):
    image, _ = synthetic_png(tmp_path / "eye.png")
    out = tmp_path / "out"
    command = ["predict", str(image), "--weights", str(trained / "best.npz"), "--out", str(out), "--quiet"]
    assert main(command) == 0
    capsys.readouterr()
    (out / "eye_mask.png").write_bytes(b"the user's own file")
    assert main(command) == 2
    err = one_line_error(capsys, "predict")
    assert "eye_prob.png exists already" in err and "--overwrite" in err
    assert (out / "eye_mask.png").read_bytes() == b"the user's own file"
    assert main(command + ["--overwrite"]) == 0
    assert np.asarray(Image.open(out / "eye_mask.png")).shape == (32, 32)


def test_predict_progress_goes_to_stderr_and_quiet_silences_it(trained, tmp_path, capsys):
    image, _ = synthetic_png(tmp_path / "eye.png")
    weights = ["--weights", str(trained / "best.npz")]
    assert main(["predict", str(image), *weights, "--out", str(tmp_path / "a"), "--tile", "64"]) == 0
    captured = capsys.readouterr()
    assert "eye.png: predicting at 32x32" in captured.err
    assert captured.out.count("\n") == 1          # the result line only
    assert main(["predict", str(image), *weights, "--out", str(tmp_path / "b"), "--tile", "64", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "eye_prob.npy"), np.load(tmp_path / "b" / "eye_prob.npy"))


def test_evaluate_tta_and_rescaling(trained, tmp_path, capsys):
    scores = {}
    for name, options in (("plain", []), ("tta", ["--tta"]), ("rescaled", ["--resize-fov", "--fov-diameter", "20"])):
        path = tmp_path / f"{name}.json"
        assert main(["evaluate", "--weights", str(trained / "best.npz"), "--dataset", "synthetic",
                     "--synthetic-size", "32", "--synthetic-count", "2", "--json", str(path), "--quiet",
                     *options]) == 0
        scores[name] = (json.loads(path.read_text()), capsys.readouterr())
    plain, tta, rescaled = (scores[k][0] for k in ("plain", "tta", "rescaled"))
    assert plain["tta"] is False and tta["tta"] is True
    assert set(plain["scales"].values()) == {1.0}
    assert "test-time augmentation" in scores["tta"][1].out
    assert plain["fov"]["mean"]["auc"] != tta["fov"]["mean"]["auc"]
    assert all(0.6 < scale < 0.8 for scale in rescaled["scales"].values())
    assert "2 resized to the trained FOV scale" in scores["rescaled"][1].out
    assert all(captured.err == "" for _, captured in scores.values())


def test_interrupt_then_resume_through_the_cli_equals_a_straight_run(tmp_path, capsys, monkeypatch):
    args = TINY + ["--patch-size", "16", "--steps-per-epoch", "3"]
    assert main(["train", "--out", str(tmp_path / "a"), "--epochs", "2"] + args) == 0

    original = T.Trainer.train_step
    calls = {"n": 0}

    def interrupted(self, *batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *batch)

    monkeypatch.setattr(T.Trainer, "train_step", interrupted)
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "b"), "--epochs", "2"] + args) == 130
    err = capsys.readouterr().err
    assert f"numpyseg train --out {tmp_path / 'b'} --resume" in err
    assert (tmp_path / "b" / "last.npz").is_file()

    monkeypatch.setattr(T.Trainer, "train_step", original)
    assert main(["train", "--out", str(tmp_path / "b"), "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    a, b = load_checkpoint(tmp_path / "a" / "last.npz"), load_checkpoint(tmp_path / "b" / "last.npz")
    assert all(np.array_equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
    assert csv_rows(tmp_path / "a" / "history.csv") == csv_rows(tmp_path / "b" / "history.csv")

    # Resuming a finished run says how to go further.
    assert main(["train", "--out", str(tmp_path / "b"), "--resume"]) == 0
    assert "already finished 2 epochs" in capsys.readouterr().out


# ----------------------------------------------------------------------- bad input


def test_train_bad_dataset_folders(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["train", "--dataset", "drive", "--data-root", str(missing), "--out", str(tmp_path / "r")]) == 2
    assert str(missing) in one_line_error(capsys, "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--dataset", "drive", "--data-root", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "training/images" in one_line_error(capsys, "train")
    assert main(["train", "--dataset", "stare", "--out", str(tmp_path / "r")]) == 2
    assert "--data-root" in one_line_error(capsys, "train")
    assert not (tmp_path / "r").exists()


def _folder_dataset(root, n=3, size=32):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for sample in make_dataset(n, (size, size), seed=1):
        Image.fromarray((sample.image * 255).astype(np.uint8)).save(root / "images" / f"{sample.name}.png")
        Image.fromarray(sample.label * 255).save(root / "labels" / f"{sample.name}.png")
    return root


def test_train_truncated_image_and_mismatched_label(tmp_path, capsys):
    root = _folder_dataset(tmp_path / "data")
    victim = root / "images" / "synthetic_001.png"
    victim.write_bytes(victim.read_bytes()[:200])
    assert main(["train", "--dataset", "folder", "--data-root", str(root), "--out", str(tmp_path / "r")]) == 2
    assert "synthetic_001.png" in one_line_error(capsys, "train")

    root = _folder_dataset(tmp_path / "data2")
    Image.fromarray(np.zeros((30, 32), np.uint8)).save(root / "labels" / "synthetic_002.png")
    assert main(["train", "--dataset", "folder", "--images", str(root / "images"), "--labels",
                 str(root / "labels"), "--out", str(tmp_path / "r")]) == 2
    err = one_line_error(capsys, "train")
    assert "synthetic_002.png" in err and "30x32" in err


def test_train_folder_dataset_runs(tmp_path, capsys):
    root = _folder_dataset(tmp_path / "data", n=3)
    assert main(["train", "--dataset", "folder", "--images", str(root / "images"),
                 "--labels", str(root / "labels"),
                 "--out", str(tmp_path / "r"), "--epochs", "1", "--val-count", "1", "--base-channels", "8",
                 "--block-size", "3", "--batch-size", "2"]) == 0
    assert "2 training / 1 validation images" in capsys.readouterr().out


def test_train_refuses_to_clobber_or_change_a_run(trained, tmp_path, capsys):
    assert main(["train", "--out", str(trained)] + TINY) == 2
    assert "--resume" in one_line_error(capsys, "train")
    assert main(["train", "--out", str(trained), "--resume", "--epochs", "3", "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs" in one_line_error(capsys, "train")
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "last.npz not found" in one_line_error(capsys, "train")
    assert main(["train", "--out", str(tmp_path / "x"), "--patch-size", "20"]) == 2
    assert "multiple of 8" in one_line_error(capsys, "train")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "last.npz").write_bytes((trained / "last.npz").read_bytes()[:3000])
    assert main(["train", "--out", str(broken), "--resume"]) == 2
    assert "last.npz" in one_line_error(capsys, "train")


def test_train_nan_loss_exits_non_zero_keeping_the_good_checkpoint(tmp_path, capsys, monkeypatch):
    original = T.Trainer.loss
    calls = {"n": 0}

    def loss(self, *args):
        calls["n"] += 1
        value, grad = original(self, *args)
        return (float("inf") if calls["n"] > 3 else value), grad

    monkeypatch.setattr(T.Trainer, "loss", loss)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "3"] + TINY) == 2
    err = one_line_error(capsys, "train")
    assert "diverged" in err and "last good checkpoint kept" in err and "(epoch 1)" in err
    checkpoint = load_checkpoint(run / "last.npz")
    assert checkpoint.epoch == 1
    assert all(np.isfinite(v).all() for v in checkpoint.model_state.values())
    assert not list(run.glob(".*tmp"))


def test_evaluate_and_predict_bad_weights(tmp_path, capsys, monkeypatch, trained):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes((trained / "best.npz").read_bytes()[:5000])
    assert main(["evaluate", "--weights", str(corrupt), "--dataset", "synthetic"]) == 2
    assert "corrupt.npz" in one_line_error(capsys, "evaluate")
    image, _ = synthetic_png(tmp_path / "eye.png")
    assert main(["predict", str(image), "--weights", str(tmp_path / "missing.npz"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "missing.npz: file not found" in one_line_error(capsys, "predict")

    import numpyseg.inference as inference
    monkeypatch.setattr(inference, "SHIPPED_WEIGHTS", tmp_path / "no_such_weights.npz")
    assert main(["evaluate", "--dataset", "synthetic"]) == 2
    assert "pass --weights" in one_line_error(capsys, "evaluate")
    assert not (tmp_path / "o").exists()


def test_evaluate_bad_dataset_folder(tmp_path, capsys, trained):
    assert main(["evaluate", "--weights", str(trained / "best.npz"), "--dataset", "drive", "--data-root",
                 str(tmp_path / "nope")]) == 2
    assert "nope" in one_line_error(capsys, "evaluate")


def test_predict_bad_inputs_write_nothing(tmp_path, capsys, trained):
    weights = str(trained / "best.npz")
    good, sample = synthetic_png(tmp_path / "good.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:100])
    out = tmp_path / "out"
    assert main(["predict", str(good), str(broken), "--weights", weights, "--out", str(out)]) == 2
    assert "broken.png" in one_line_error(capsys, "predict")
    assert not out.exists() or not any(out.iterdir())

    label = save_png(tmp_path / "label.png", np.zeros((20, 32), np.uint8))
    assert main(["predict", str(good), "--label", str(label), "--weights", weights, "--out", str(out)]) == 2
    err = one_line_error(capsys, "predict")
    assert "label.png" in err and "20x32" in err
    assert main(["predict", str(good), str(good), "--label", str(label), "--weights", weights,
                 "--out", str(out)]) == 2
    assert "one --label per IMAGE" in one_line_error(capsys, "predict")
    assert not out.exists() or not any(out.iterdir())


def test_error_map_colours_unit():
    pred = np.array([[1, 1, 0, 0]], bool)
    label = np.array([[1, 0, 1, 0]], np.uint8)
    np.testing.assert_array_equal(error_map(pred, label)[0],
                                  [[255, 255, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]])


# -------------------------------------------------------------------------- DRIVE


def test_evaluate_on_two_drive_test_images(drive_root, trained, tmp_path, capsys):
    scores = tmp_path / "drive.json"
    assert main(["evaluate", "--weights", str(trained / "best.npz"), "--dataset", "drive", "--data-root",
                 str(drive_root), "--limit", "2", "--per-image", "--json", str(scores)]) == 0
    out = capsys.readouterr().out
    assert "padded to 592x592" in out and "01_test" in out and "02_test" in out
    document = json.loads(scores.read_text())
    assert document["images"] == 2 and document["pad_size"] == [592, 592]
    assert [row["name"] for row in document["fov"]["per_image"]] == ["01_test", "02_test"]
    assert 0.0 <= document["fov"]["mean"]["accuracy"] <= 1.0


# ----------------------------------------------------------------------- STARE end to end


def test_stare_train_and_evaluate_end_to_end(tmp_path, capsys):
    """Files in STARE's exact formats (700 x 605 .ppm / .ppm.gz, 'ah' labels as RGB .ppm):
    train on the training split padded to 704 x 704, score the held-out images."""
    import gzip
    import io

    root = tmp_path / "STARE"
    (root / "stare-images").mkdir(parents=True)
    (root / "labels-ah").mkdir()
    names = ["im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081"]
    for i, name in enumerate(names):
        sample = make_fundus((605, 700), rng=i)
        for folder, suffix, array in (
                ("stare-images", ".ppm", (sample.image * 255).round().astype(np.uint8)),
                ("labels-ah", ".ah.ppm", np.dstack([sample.label * 255] * 3).astype(np.uint8))):
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="PPM")
            data = buffer.getvalue()
            if i % 2:  # half of them gzipped, as the downloads are
                (root / folder / f"{name}{suffix}.gz").write_bytes(gzip.compress(data))
            else:
                (root / folder / f"{name}{suffix}").write_bytes(data)

    run = tmp_path / "run"
    assert main(["train", "--dataset", "stare", "--data-root", str(root), "--out", str(run), "--batch-size", "2",
                 "--base-channels", "8", "--epochs", "1", "--steps-per-epoch", "1", "--val-count", "1"]) == 0
    out = capsys.readouterr().out
    assert "5 training / 1 validation images" in out and "704x704" in out
    document = json.loads((run / "history.json").read_text())
    seen = set(document["train_images"]) | set(document["val_images"])
    assert seen == set(names) - {"im0004", "im0081"}  # the held-out test images stay unseen

    scores = tmp_path / "scores.json"
    assert main(["evaluate", "--weights", str(run / "best.npz"), "--dataset", "stare", "--data-root", str(root),
                 "--json", str(scores)]) == 0
    result = json.loads(scores.read_text())
    assert result["split"] == "test" and result["dataset"] == "stare"
    assert "2 images" in capsys.readouterr().out
