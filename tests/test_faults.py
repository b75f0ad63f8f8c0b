"""Faults a user meets: bad option values, a diverging run, SIGTERM, kill -9 leftovers,
a full disk, a read-only folder, out of memory, and commands that would overwrite a
user's file.  Each ends in one line on stderr and exit status 2 (or 130 for a stop
that saved the run), never a traceback, and nothing of the user's is lost."""

import errno
import json
import os
import signal
import threading

import numpy as np
import pytest

from numpyseg import atomic
from numpyseg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpyseg.cli.main import main
from numpyseg.errors import ConfigError, TrainingDiverged
from numpyseg.devtools.gradcheck import check_function
from numpyseg.inference import load_model
from numpyseg.losses.bce import BALANCED_MAX_WEIGHT, balanced_pos_weight, bce_with_logits, softplus
from numpyseg.models import build_model
from numpyseg.training import trainer as T
from numpyseg.training.config import TrainConfig
from numpyseg.training.interrupts import InterruptGuard
from numpyseg.training.state import check_run_folder
from numpyseg.training.trainer import Trainer

TINY = dict(synthetic_count=6, synthetic_size=32, batch_size=2, base_channels=8, val_count=2, block_size=3)
TINY_ARGS = ["--synthetic-count", "6", "--synthetic-size", "32", "--batch-size", "2", "--base-channels", "8",
             "--val-count", "2", "--block-size", "3"]


@pytest.fixture(autouse=True)
def no_curves(monkeypatch):
    """Drawing curves.png costs more than a tiny epoch."""
    monkeypatch.setattr(T.logs, "plot_curves", lambda *args, **kwargs: None)


@pytest.fixture(scope="module")
def run_one_epoch(tmp_path_factory):
    """A finished one-epoch run (read-only for the tests: copy before changing it)."""
    import numba

    run = tmp_path_factory.mktemp("faults") / "run"
    threads = numba.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(T.logs, "plot_curves", lambda *args, **kwargs: None)
        numba.set_num_threads(1)  # tiny arrays: a parallel region costs more than the work
        try:
            Trainer(TrainConfig(**TINY, epochs=1), run, log=lambda line: None).fit()
        finally:
            numba.set_num_threads(threads)
    return run


def copy_run(source, target):
    target.mkdir(parents=True)
    for entry in source.iterdir():
        (target / entry.name).write_bytes(entry.read_bytes())
    return target


def error_line(capsys, command):
    """The one stderr line of a failed command (after any indented progress lines), checked for its form."""
    lines = capsys.readouterr().err.rstrip().splitlines()
    while lines and lines[0].startswith("  "):
        lines.pop(0)
    err = "\n".join(lines).strip()
    assert "Traceback" not in err and "\n" not in err, err
    assert err.startswith(f"numpyseg {command}: error: "), err
    return err


def all_finite(checkpoint):
    return all(np.isfinite(v).all() for v in {**checkpoint.model_state, **checkpoint.optim_state}.values()
               if np.asarray(v).dtype.kind == "f")


# ------------------------------------------------------- 10: balanced pos_weight


def test_balanced_weight_is_finite_and_positive_in_every_batch():
    shape = (1, 20, 10, 1)  # 200 pixels
    vessels = np.ones(shape)
    background = np.zeros(shape)
    one_vessel = background.copy()
    one_vessel[0, 0, 0, 0] = 1.0
    mixed = background.copy()
    mixed[0, :5] = 1.0  # 50 vessel pixels, 150 background
    assert balanced_pos_weight(mixed) == 3.0
    assert balanced_pos_weight(vessels) == 1.0 / BALANCED_MAX_WEIGHT   # 1 / 200 clipped up to 0.01
    assert balanced_pos_weight(vessels[:, :2, :2]) == 0.25               # max(0, 1) / 4
    assert balanced_pos_weight(one_vessel) == BALANCED_MAX_WEIGHT        # 199 clipped down to 100
    assert balanced_pos_weight(background) == 1.0                        # no vessels: plain BCE


def test_all_vessel_batch_keeps_a_loss_and_a_gradient(rng):
    z = rng.standard_normal((2, 4, 4, 1))
    y = np.ones_like(z)
    value, grad = bce_with_logits(z, y, pos_weight="balanced")
    w = 1.0 / 32  # max(#neg, 1) / #pos = 1 / 32
    assert value == pytest.approx(w * softplus(-z).mean(), rel=1e-12) and value > 0
    assert np.all(grad < 0)  # every vessel pixel is pushed towards "vessel"
    report = check_function(lambda zz: bce_with_logits(zz, y, pos_weight="balanced")[0], [grad], [z],
                            max_entries=None)
    assert report.passed, report
    # a batch without vessels: the weight has nothing to weigh, the loss is plain BCE
    zero = np.zeros_like(z)
    assert bce_with_logits(z, zero, pos_weight="balanced")[0] == pytest.approx(softplus(z).mean(), rel=1e-12)


# ------------------------------------------------------------- 12: divergence


def test_train_with_a_huge_lr_stops_with_a_clear_error_and_saves_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "3", "--lr", "1e6"] + TINY_ARGS) == 2
    err = error_line(capsys, "train")
    assert "training diverged: the loss rose to" in err and "100 times the run's first loss" in err
    assert "epoch 1, step 2" in err and "lower --lr" in err
    assert not (run / "best.npz").exists() and not (run / "last.npz").exists()


def test_divergence_after_a_good_epoch_keeps_that_epochs_checkpoints(tmp_path, monkeypatch, run_one_epoch):
    run = copy_run(run_one_epoch, tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in ("last.npz", "best.npz")}
    reference = load_checkpoint(run / "last.npz").extra["reference_loss"]
    assert reference > 0
    original = Trainer.loss

    def exploding(self, logits, labels, masks):
        value, grad = original(self, logits, labels, masks)
        return 101 * reference, grad

    monkeypatch.setattr(Trainer, "loss", exploding)
    with pytest.raises(TrainingDiverged, match=r"the loss rose to .* at epoch 2, step 1 .*last\.npz \(epoch 1\)"):
        Trainer(TrainConfig(**TINY, epochs=3), run, resume=True, log=lambda line: None).fit()
    assert {name: (run / name).read_bytes() for name in before} == before


def test_infinite_adam_moments_are_caught_and_never_saved(tmp_path, monkeypatch, run_one_epoch):
    run = copy_run(run_one_epoch, tmp_path / "run")
    before = (run / "last.npz").read_bytes()
    trainer = Trainer(TrainConfig(**TINY, epochs=3), run, resume=True, log=lambda line: None)
    step = trainer.optimizer.step

    def overflowing_step():  # g^2 overflows float32: v = inf while the weights stay finite
        step()
        name = trainer.optimizer.params[0][0]
        trainer.optimizer.state["v"][name][...] = np.inf

    monkeypatch.setattr(trainer.optimizer, "step", overflowing_step)
    with pytest.raises(TrainingDiverged, match=r"the Adam moments \(v\..*\) became NaN/inf at epoch 2, step 1"):
        trainer.fit()
    assert (run / "last.npz").read_bytes() == before
    with pytest.raises(TrainingDiverged):  # save() itself refuses non-finite state
        trainer.save("other.npz")
    assert not (run / "other.npz").exists()


def test_resuming_a_checkpoint_with_non_finite_state_is_refused(tmp_path, run_one_epoch):
    run = copy_run(run_one_epoch, tmp_path / "run")
    trainer = Trainer(TrainConfig(**TINY, epochs=3), run, resume=True, log=lambda line: None)
    name = trainer.optimizer.params[0][0]
    trainer.optimizer.state["m"][name][...] = np.nan
    # as an older numpyseg wrote it: straight through the checkpoint writer
    save_checkpoint(run / "last.npz", trainer.model, trainer.optimizer, config=trainer.model_config,
                    epoch=trainer.epoch, extra=trainer._extra())
    with pytest.raises(CheckpointError, match=r"last\.npz: the Adam moments \(m\..*\) hold NaN/inf"):
        Trainer(TrainConfig(**TINY, epochs=3), run, resume=True, log=lambda line: None)


# -------------------------------------------------- 13: nothing overwritten


def test_export_refuses_the_runs_own_checkpoints_and_foreign_files(tmp_path, capsys, run_one_epoch):
    run = copy_run(run_one_epoch, tmp_path / "run")
    last = (run / "last.npz").read_bytes()
    assert main(["export", str(run), "--out", str(run / "last.npz")]) == 2
    assert "last.npz already exists and is not a weights file written by numpyseg export" in \
        error_line(capsys, "export")
    assert (run / "last.npz").read_bytes() == last
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"] + TINY_ARGS) == 0  # still resumes
    capsys.readouterr()

    notes = tmp_path / "notes.npz"
    notes.write_bytes(b"my own file")
    assert main(["export", str(run), "--out", str(notes)]) == 2
    assert "notes.npz already exists" in error_line(capsys, "export")
    assert notes.read_bytes() == b"my own file"

    record = tmp_path / "model.md"  # the record's name is taken by a user's file
    record.write_text("my notes")
    assert main(["export", str(run), "--out", str(tmp_path / "model.npz")]) == 2
    assert "model.md already exists" in error_line(capsys, "export")
    assert record.read_text() == "my notes" and not (tmp_path / "model.npz").exists()

    out = tmp_path / "weights" / "model.npz"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert main(["export", str(run), "--out", str(out), "--last"]) == 0  # an earlier export is replaced
    assert load_checkpoint(out).extra["training"]["kept"] == "last"


def test_train_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    for extra in ([], ["--overwrite"]):
        assert main(["train", "--out", str(folder), "--epochs", "1"] + TINY_ARGS + extra) == 2
        assert "is not empty and holds no numpyseg run (it has holiday.jpg)" in error_line(capsys, "train")
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]

    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["train", "--out", str(a_file)] + TINY_ARGS) == 2
    assert "is a file, not a folder" in error_line(capsys, "train")
    with pytest.raises(ConfigError, match="nothing to resume"):
        check_run_folder(tmp_path / "empty", resume=True, overwrite=False)


def test_evaluate_json_replaces_only_its_own_score_file(tmp_path, capsys):
    model = build_model({"arch": "sa_unetv2", "base_channels": 8, "block_size": 3})
    weights = save_checkpoint(tmp_path / "w.npz", model, config=model.config, epoch=0)
    options = ["evaluate", "--weights", str(weights), "--dataset", "synthetic", "--synthetic-count", "1",
               "--synthetic-size", "32", "--rescale", "off", "--json"]
    mine = tmp_path / "mine.json"
    mine.write_text('{"a": 1}')
    assert main(options + [str(mine)]) == 2
    assert "--json" in error_line(capsys, "evaluate") and mine.read_text() == '{"a": 1}'

    scores = tmp_path / "scores.json"
    assert main(options + [str(scores)]) == 0
    assert main(options + [str(scores), "--threshold", "0.3"]) == 0  # its own earlier file: replaced
    assert json.loads(scores.read_text())["threshold"] == 0.3


# ------------------------------------------------- 14: SIGTERM and kill -9


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="this platform has no SIGTERM")
def test_sigterm_saves_the_step_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    original = Trainer.train_step
    calls = {"n": 0}

    def step_with_sigterm(self, *batch):
        calls["n"] += 1
        if calls["n"] == 2:  # `timeout` or a scheduler ends the job during step 2
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", step_with_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    run = tmp_path / "run"
    options = ["train", "--out", str(run), "--epochs", "3", "--steps-per-epoch", "4"] + TINY_ARGS
    assert main(options) == 130
    out = capsys.readouterr()
    assert "SIGTERM: stopping after this step" in out.out
    assert "interrupted by SIGTERM in epoch 1 after step 2 of 4" in out.err
    assert f"resume with: numpyseg train --out {run} --resume" in out.err
    assert load_checkpoint(run / "last.npz").extra["step_in_epoch"] == 2
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is removed again

    monkeypatch.setattr(Trainer, "train_step", original)
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert f"resuming {run / 'last.npz'} at epoch 1 of 3, step 3 of 4" in capsys.readouterr().out


def test_no_handler_is_installed_outside_the_main_thread():
    seen = {}

    def enter():
        with InterruptGuard(lambda line: None) as guard:
            seen["installed"] = dict(guard._previous)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen["installed"] == {}


def test_temporaries_left_by_kill_9_are_removed_at_the_next_start(tmp_path, run_one_epoch):
    run = copy_run(run_one_epoch, tmp_path / "run")
    leftovers = [run / ".last.npz.k2x_9abc.tmp", run / ".best.npz.0123abcd.tmp", run / ".history.csv.abcdefgh.tmp"]
    kept = [run / ".last.npz.tmp", run / ".last.npz.toolong12.tmp", run / "last.npz.abcdefgh.tmp",
            run / ".mine.npz.abcdefgh.tmp", run / ".last.npz.abcdefgh.tmp.bak"]
    for path in leftovers + kept:
        path.write_bytes(b"\0" * 64)
    lines = []
    Trainer(TrainConfig(**TINY, epochs=2), run, resume=True, log=lines.append).fit()
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in kept)
    assert sum("temporary file left by a run that was killed" in line for line in lines) == 3


# ------------------------------------- 15: tracebacks become one-line errors


@pytest.mark.parametrize("argv, expected", [
    (["summary", "--base-channels", "0"], "base_channels (--base-channels) must be a multiple of 8, from 8 to 256"),
    (["summary", "--base-channels", "12"], "must be a multiple of 8"),
    (["summary", "--size", "0"], "--size must be a multiple of 8, from 8"),
    (["summary", "--size", "-8"], "--size must be"),
    (["demo", "--threshold", "2"], "--threshold must be a finite number in (0, 1), got 2.0"),
    (["demo", "--threshold", "nan"], "--threshold must be a finite number in (0, 1), got nan"),
    (["evaluate", "--dataset", "synthetic", "--synthetic-count", "0"], "--synthetic-count must be from 1"),
    (["evaluate", "--dataset", "synthetic", "--threshold", "0"], "--threshold must be"),
    (["evaluate", "--batch-size", "0"], "--batch-size must be from 1"),
    (["evaluate", "--limit", "-1"], "--limit must be at least 1"),
    (["train", "--base-channels", "1000000000"], "base_channels (--base-channels) must be"),
    (["train", "--lr", "nan"], "--lr must be a finite number"),
    (["train", "--bce-weight", "nan"], "--bce-weight must be a finite number"),
    (["train", "--gamma", "inf"], "--gamma must be a finite number"),
    (["train", "--rotate", "-5"], "--rotate (degrees) must be"),
    (["train", "--pos-weight", "0"], "--pos-weight (a number, or 'balanced') must be"),
    (["train", "--pos-weight", "nan"], "--pos-weight (a number, or 'balanced') must be"),
    (["train", "--seed", "-1"], "--seed must be at least 0"),
    (["train", "--synthetic-size", "100000"], "--synthetic-size must be from 16 to 4096"),
    (["train", "--patch-size", "-8"], "--patch-size (0 for whole images) must be"),
    (["train", "--min-lr", "1"], "--min-lr 1 is above --lr 0.001"),
    (["train", "--time-limit", "nan"], "--time-limit (minutes) must be"),
    (["benchmark", "--size", "0"], "--size must be from 8"),
    (["benchmark", "--batches", "0"], "--batches must be from 1"),
    (["gradcheck", "--seed", "-1"], "--seed must be at least 0"),
])
def test_bad_numbers_give_one_line_naming_the_option(argv, expected, tmp_path, capsys):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert expected in error_line(capsys, argv[0])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("width", [0, 1_000_000_000])
def test_checkpoint_with_an_impossible_width_is_a_checkpoint_error(width, tmp_path, capsys):
    model = build_model({"arch": "sa_unetv2", "base_channels": 8, "block_size": 3})
    path = save_checkpoint(tmp_path / "w.npz", model, config={**model.config, "base_channels": width}, epoch=0)
    with pytest.raises(CheckpointError, match=rf"w\.npz: cannot build its model .*got {width}"):
        load_model(path)
    assert main(["evaluate", "--weights", str(path), "--dataset", "synthetic"]) == 2
    assert "must be a multiple of 8, from 8 to 256" in error_line(capsys, "evaluate")


@pytest.mark.parametrize("argv, hint", [
    (["train", "--epochs", "1"], "lower --batch-size or train on patches with a smaller --patch-size"),
    (["evaluate", "--dataset", "synthetic", "--synthetic-count", "1", "--synthetic-size", "32", "--rescale", "off", "--quiet"],
     "lower --batch-size, or predict large images in tiles"),
])
def test_out_of_memory_says_what_to_make_smaller(argv, hint, tmp_path, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Trainer, "fit", no_memory)
    monkeypatch.setattr("numpyseg.inference.predict_proba", no_memory)
    if argv[0] == "train":
        argv = argv + TINY_ARGS + ["--out", str(tmp_path / "run")]
    else:
        model = build_model({"arch": "sa_unetv2", "base_channels": 8, "block_size": 3})
        argv = argv + ["--weights", str(save_checkpoint(tmp_path / "w.npz", model, config=model.config, epoch=0))]
    assert main(argv) == 2
    assert f"out of memory: {hint}" in error_line(capsys, argv[0])


def test_out_of_memory_points_predict_to_tiles(tmp_path, capsys, monkeypatch):
    from PIL import Image

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("numpyseg.inference.predict_proba", no_memory)
    image = tmp_path / "big.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    model = build_model({"arch": "sa_unetv2", "base_channels": 8, "block_size": 3})
    weights = save_checkpoint(tmp_path / "w.npz", model, config=model.config, epoch=0)
    assert main(["predict", str(image), "--weights", str(weights), "--out", str(tmp_path / "out"),
                 "--rescale", "off", "--quiet"]) == 2
    assert "out of memory: predict large images in tiles with --tile PX" in error_line(capsys, "predict")


# --------------------------------------------- 16: full disk, read-only folder


def test_disk_full_names_the_target_and_leaves_it_unchanged(tmp_path, monkeypatch):
    target = tmp_path / "scores.json"
    target.write_bytes(b"old")

    def full(source, destination):
        raise OSError(errno.ENOSPC, "No space left on device", source)

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OSError) as info:
        atomic.atomic_write_bytes(target, b"new")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert "the disk is full" in info.value.strerror
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_disk_full_during_training_is_one_line_naming_the_checkpoint(tmp_path, capsys, monkeypatch):
    def full(source, destination):
        raise OSError(errno.ENOSPC, "No space left on device", source)

    monkeypatch.setattr(atomic.os, "replace", full)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "1"] + TINY_ARGS) == 2
    err = error_line(capsys, "train")
    assert err.startswith(f"numpyseg train: error: {run / 'best.npz'}: No space left on device: the disk is full"), err
    assert not any(p.name.endswith(".tmp") for p in run.iterdir())


def test_read_only_folder_names_the_target_not_the_temporary(tmp_path, monkeypatch):
    def refused(*args, dir=None, prefix="", suffix="", **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, prefix + "abcd1234" + suffix))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refused)
    target = tmp_path / "best.npz"
    with pytest.raises(OSError) as info:
        atomic.atomic_write_bytes(target, b"x")
    assert info.value.filename == str(target) and "choose a writable folder" in info.value.strerror
    assert ".tmp" not in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="permissions: root (and Windows) ignore a read-only folder's mode")
def test_read_only_folder_for_real(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OSError) as info:
            atomic.atomic_write_bytes(folder / "out.png", b"x")
        assert info.value.filename == str(folder / "out.png")
        assert "choose a writable folder" in info.value.strerror
    finally:
        folder.chmod(0o755)


def test_a_file_where_a_folder_is_expected_and_the_reverse_are_named(tmp_path, capsys):
    model = build_model({"arch": "sa_unetv2", "base_channels": 8, "block_size": 3})
    weights = save_checkpoint(tmp_path / "w.npz", model, config=model.config, epoch=0)
    assert main(["export", str(weights), "--out", str(tmp_path / "e.npz")]) == 2
    assert "is a file, not a run folder" in error_line(capsys, "export")
    assert main(["evaluate", "--weights", str(tmp_path), "--dataset", "synthetic"]) == 2
    assert "is a folder: name a checkpoint file in it" in error_line(capsys, "evaluate")
