"""The training loop: batches and loss masks, the validation split, reproducibility,
learning, resume after an interruption, Ctrl-C, NaN handling, time limit, logs."""

import json
import os
import signal

import numpy as np
import pytest

from numpyseg.checkpoint import load_checkpoint
from numpyseg.data.datasets import Sample
from numpyseg.data.synthetic import make_dataset
from numpyseg.models import SAUNetV2
from numpyseg.training import batches
from numpyseg.training import trainer as T
from numpyseg.training.config import TrainConfig, merge_for_resume
from numpyseg.training.logs import read_history_csv
from numpyseg.training.samples import split_validation
from numpyseg.training.state import generator_states, set_generator_states
from numpyseg.training.trainer import Trainer, TrainingDiverged

TINY = dict(synthetic_count=6, synthetic_size=32, batch_size=2, base_channels=8, val_count=2, block_size=3,
            epochs=2)
RUN_KEYS = ("epoch", "steps", "train_loss", "val_loss", "val_f1", "val_auc", "lr", "best")


@pytest.fixture(autouse=True)
def no_curves(request, monkeypatch):
    """Drawing curves.png costs more than a tiny epoch: stubbed except where a test checks it."""
    if request.node.name != "test_logs_checkpoints_and_curves":
        monkeypatch.setattr(T.logs, "plot_curves", lambda *args, **kwargs: None)


def tiny(**overrides):
    return TrainConfig(**{**TINY, **overrides})


def quiet(lines):
    return lines.append


def weights(path):
    return load_checkpoint(path).model_state


def same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def run_part(history):
    return [{k: r[k] for k in RUN_KEYS if k in r} for r in history]


# ------------------------------------------------------------------ config and data


def test_config_rejects_bad_options_in_one_line():
    for bad, pattern in [(dict(patch_size=30), "multiple of 8"), (dict(lr=-1.0), "--lr"),
                         (dict(pos_weight="heavy"), "--pos-weight"), (dict(monitor="val_dice"), "--monitor"),
                         (dict(dataset="drive"), "--data-root"), (dict(val_fraction=1.0), "--val-fraction")]:
        with pytest.raises(ValueError, match=pattern) as info:
            tiny(**bad)
        assert "\n" not in str(info.value)
    assert tiny(pos_weight="balanced").pos_weight == "balanced"
    assert tiny(pos_weight="2.5").pos_weight == 2.5


def test_resume_may_change_only_session_options():
    saved = tiny(epochs=2)
    merged = merge_for_resume(saved, {"epochs": 5, "time_limit": 3.0, "lr": saved.lr})
    assert merged.epochs == 5 and merged.time_limit == 3.0 and merged.lr == saved.lr
    with pytest.raises(ValueError, match="--lr 0.1 differs from the run being resumed"):
        merge_for_resume(saved, {"lr": 0.1})


def test_validation_split_is_from_training_images_and_fixed_by_seed():
    samples = make_dataset(10, (16, 16), seed=0)
    train, val = split_validation(samples, tiny(val_count=None, val_fraction=0.2))
    assert len(val) == 2 and len(train) == 8
    assert {s.name for s in train} | {s.name for s in val} == {s.name for s in samples}
    assert not {s.name for s in train} & {s.name for s in val}
    again = split_validation(samples, tiny(val_count=None, val_fraction=0.2))[1]
    assert [s.name for s in again] == [s.name for s in val]
    other = [split_validation(samples, tiny(val_count=3, seed=seed))[1] for seed in range(4)]
    assert len({tuple(s.name for s in v) for v in other}) > 1
    with pytest.raises(ValueError, match="at least one must be left"):
        split_validation(samples, tiny(val_count=10))


def test_epoch_plans():
    rng = np.random.default_rng(0)
    plan = batches.plan_epoch(rng, 5, 2, steps=0, one_pass=True)
    assert [len(b) for b in plan] == [2, 2, 1]
    assert sorted(i for b in plan for i in b) == [0, 1, 2, 3, 4]
    plan = batches.plan_epoch(rng, 3, 2, steps=4)
    assert [len(b) for b in plan] == [2, 2, 2, 2]
    flat = [i for b in plan for i in b]
    assert sorted(flat[:3]) == [0, 1, 2] and sorted(flat[3:6]) == [0, 1, 2]
    assert batches.default_steps([(48, 48)] * 4, 2, 0) == 2
    assert batches.default_steps([(64, 64)] * 4, 2, 32) == 8


def test_batches_leave_padding_and_optionally_outside_fov_out_of_the_loss():
    image = np.full((20, 28, 3), 0.5, np.float32)
    label = np.zeros((20, 28), np.uint8)
    label[5:8] = 1
    fov = np.zeros((20, 28), np.uint8)
    fov[2:18, 3:25] = 1
    samples = [Sample("a", image, label, fov)]
    x, y, m = batches.make_batch(samples, [0, 0], (24, 32), None)
    assert x.shape == (2, 24, 32, 3) and y.shape == m.shape == (2, 24, 32, 1)
    assert m[:, :20, :28].all() and not m[:, 20:].any() and not m[:, :, 28:].any()
    assert np.array_equal(y[0, :20, :28, 0], label)
    _, _, m_fov = batches.make_batch(samples, [0], (24, 32), None, loss_fov=True)
    assert np.array_equal(m_fov[0, :20, :28, 0], fov) and not m_fov[0, 20:].any()


# ----------------------------------------------------------------------- training


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    paths = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        Trainer(tiny(epochs=1, seed=seed), tmp_path / name, log=quiet([])).fit()
        paths.append(tmp_path / name / "last.npz")
    a, b, c = (weights(p) for p in paths)
    assert same_weights(a, b)
    assert not same_weights(a, c)


def test_loss_falls_when_overfitting_two_images(tmp_path):
    samples = make_dataset(2, (32, 32), seed=5)
    config = tiny(epochs=2, steps_per_epoch=8, batch_size=2, lr=1e-2, dropblock_rate=0.0, augment=False,
                  val_count=0, early_stop=0)
    trainer = Trainer(config, tmp_path / "run", log=quiet([]), samples=(samples, []))
    result = trainer.fit()
    first, second = (r["train_loss"] for r in result.history)
    assert result.status == "completed" and trainer.monitor == "train_loss"
    assert second < 0.8 * first, (first, second)


def test_logs_checkpoints_and_curves(tmp_path):
    lines = []
    run = tmp_path / "run"
    result = Trainer(tiny(epochs=2), run, log=lines.append).fit()
    assert result.status == "completed" and result.epoch == 2
    for name in ("last.npz", "best.npz", "history.csv", "history.json", "curves.png"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_history_csv(run / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    document = json.loads((run / "history.json").read_text())
    assert len(document["history"]) == 2 and document["monitor"] == "val_f1"
    assert float(rows[1]["train_loss"]) == pytest.approx(document["history"][1]["train_loss"])
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    for word in ("train", "val", "F1", "AUC", "lr", "img/s", "elapsed", "ETA"):
        assert word in epoch_lines[0]
    last = load_checkpoint(run / "last.npz")
    assert last.epoch == 2 and last.config["base_channels"] == 8
    best = load_checkpoint(run / "best.npz")
    assert best.epoch == result.best_epoch


def test_progress_lines_within_long_epochs(tmp_path):
    lines = []
    config = tiny(epochs=1, patch_size=16, steps_per_epoch=4, log_every=2)
    Trainer(config, tmp_path / "run", log=lines.append).fit()
    steps = [line for line in lines if "step 2/4" in line]
    assert len(steps) == 1 and "loss" in steps[0] and "img/s" in steps[0] and "ETA" in steps[0]


def test_resume_at_epoch_boundary_continues_the_same_run(tmp_path):
    straight = Trainer(tiny(epochs=2), tmp_path / "a", log=quiet([])).fit()
    Trainer(tiny(epochs=1), tmp_path / "b", log=quiet([])).fit()
    resumed = Trainer(tiny(epochs=2), tmp_path / "b", resume=True, log=quiet([])).fit()
    assert same_weights(weights(tmp_path / "a" / "last.npz"), weights(tmp_path / "b" / "last.npz"))
    a, b = load_checkpoint(tmp_path / "a" / "last.npz"), load_checkpoint(tmp_path / "b" / "last.npz")
    assert all(np.array_equal(a.optim_state[k], b.optim_state[k]) for k in a.optim_state)
    assert run_part(straight.history) == run_part(resumed.history)
    assert a.extra["scheduler"] == b.extra["scheduler"]


def test_keyboard_interrupt_mid_epoch_saves_and_resume_is_exact(tmp_path, monkeypatch):
    config = tiny(epochs=3, patch_size=32, steps_per_epoch=3)
    straight = Trainer(config, tmp_path / "a", log=quiet([])).fit()

    calls = {"n": 0}
    original = Trainer.train_step

    def interrupted_step(self, *batch):
        calls["n"] += 1
        if calls["n"] == 5:  # the 2nd step of epoch 2
            raise KeyboardInterrupt
        return original(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    result = Trainer(config, tmp_path / "b", log=quiet([])).fit()
    assert result.status == "interrupted" and result.saved
    assert "--resume" in result.message and "after step 1 of 3" in result.message
    saved = load_checkpoint(tmp_path / "b" / "last.npz")
    assert saved.epoch == 1 and saved.extra["step_in_epoch"] == 1

    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = Trainer(config, tmp_path / "b", resume=True, log=quiet([])).fit()
    assert resumed.status == "completed"
    assert same_weights(weights(tmp_path / "a" / "last.npz"), weights(tmp_path / "b" / "last.npz"))
    assert run_part(straight.history) == run_part(resumed.history)


def test_ctrl_c_signal_stops_after_the_step_and_a_second_one_quits(tmp_path, monkeypatch):
    # A process started in the background by a non-interactive shell ignores SIGINT; give this
    # test Python's default handler, as a terminal has it, and check training restores it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_once_then_twice(tmp_path, monkeypatch)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_once_then_twice(tmp_path, monkeypatch):
    original = Trainer.train_step
    calls = {"n": 0}

    def step_with_ctrl_c(self, *batch):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C during step 3
        return original(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", step_with_ctrl_c)
    lines = []
    result = Trainer(tiny(epochs=3), tmp_path / "run", log=lines.append).fit()
    assert result.status == "interrupted" and result.saved
    assert any("Ctrl-C" in line for line in lines)
    saved = load_checkpoint(tmp_path / "run" / "last.npz")
    assert saved.epoch == 1 and saved.extra["step_in_epoch"] == 1  # step 3 = epoch 2, step 1 finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def step_with_two_ctrl_c(self, *batch):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return original(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", step_with_two_ctrl_c)
    result = Trainer(tiny(epochs=3), tmp_path / "run", resume=True, log=quiet([])).fit()
    assert result.status == "interrupted" and not result.saved
    assert "epoch 1) is kept" in result.message
    assert load_checkpoint(tmp_path / "run" / "last.npz").extra["step_in_epoch"] == 1  # untouched


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = Trainer.loss
    calls = {"n": 0}

    def loss_turning_nan(self, logits, labels, masks):
        calls["n"] += 1
        value, grad = original(self, logits, labels, masks)
        return (float("nan"), grad) if calls["n"] >= 4 else (value, grad)

    monkeypatch.setattr(Trainer, "loss", loss_turning_nan)
    run = tmp_path / "run"
    good_before = None
    with pytest.raises(TrainingDiverged) as info:
        trainer = Trainer(tiny(epochs=3), run, log=quiet([]))
        trainer.fit()
    message = str(info.value)
    assert "\n" not in message
    assert "NaN" in message and "epoch 2, step 2" in message and "last.npz (epoch 1)" in message
    good_before = load_checkpoint(run / "last.npz")
    assert good_before.epoch == 1
    assert all(np.isfinite(v).all() for v in good_before.model_state.values())


def test_nan_weights_are_caught_too(tmp_path, monkeypatch):
    def poisoned_step(self):
        for _, p in self.params:
            p.data[...] = np.nan

    trainer = Trainer(tiny(epochs=1), tmp_path / "run", log=quiet([]))
    monkeypatch.setattr(trainer.optimizer, "step", poisoned_step.__get__(trainer.optimizer))
    with pytest.raises(TrainingDiverged, match="weights .* became NaN/inf at epoch 1, step 1.*no checkpoint"):
        trainer.fit()
    assert not (tmp_path / "run" / "last.npz").exists()


def test_time_limit_stops_after_the_epoch(tmp_path):
    result = Trainer(tiny(epochs=5, time_limit=1e-6), tmp_path / "run", log=quiet([])).fit()
    assert result.status == "time_limit" and result.epoch == 1
    assert "--resume" in result.message
    assert load_checkpoint(tmp_path / "run" / "last.npz").epoch == 1


def test_generator_states_round_trip():
    from numpyseg.models.unet import build_model

    a = build_model({"arch": "sa_unetv2", "base_channels": 8, "seed": 1})
    b = build_model({"arch": "sa_unetv2", "base_channels": 8, "seed": 2})
    a.enc1.block1.drop.rng.random(5)
    state = json.loads(json.dumps(generator_states(a)))
    set_generator_states(b, state)
    assert b.enc1.block1.drop.rng.random() == a.enc1.block1.drop.rng.random()
    assert len(state["generators"]) == 1  # one generator shared by every DropBlock
    assert len(state["owners"]) == 14  # one DropBlock per ConvBlock: 6 stages x 2 + 2 in the bottleneck


def test_plateau_halves_lr_and_early_stopping_stops(tmp_path, monkeypatch):
    scores = {"val_loss": 0.5, "val_f1": 0.1, "val_auc": 0.5}
    monkeypatch.setattr(Trainer, "validate", lambda self: dict(scores))  # a flat validation loss
    result = Trainer(tiny(epochs=10, patience_lr=1, early_stop=2), tmp_path / "run", log=quiet([])).fit()
    assert result.status == "early_stopped" and result.epoch == 3
    # Keras semantics: epoch 1 sets the best loss; epochs 2 and 3 do not beat it, and each
    # cuts the rate for the next epoch (patience 1); epoch 3 is the 2nd without improvement.
    assert [r["lr"] for r in result.history] == [1e-3, 1e-3, 5e-4]
    assert load_checkpoint(tmp_path / "run" / "last.npz").optim_state["lr"] == pytest.approx(2.5e-4)
    assert [r["best"] for r in result.history] == [True, False, False]  # val_f1 never beaten
    assert result.best_epoch == 1


def test_sa_unet_v1_and_balanced_pos_weight_train(tmp_path):
    from numpyseg.inference import load_model, predict_proba

    result = Trainer(tiny(epochs=1, arch="sa_unet", pos_weight="balanced", loss_fov=True), tmp_path / "run",
                     log=quiet([])).fit()
    assert result.status == "completed"
    model, checkpoint = load_model(tmp_path / "run" / "last.npz")
    assert checkpoint.config["arch"] == "sa_unet" and type(model).__name__ == "SAUNet"
    prob = predict_proba(model, make_dataset(1, (32, 32), seed=9)[0].image)
    assert prob.shape == (32, 32) and np.all((prob >= 0) & (prob <= 1))


def test_trainer_skips_the_image_gradient(tmp_path):
    trainer = Trainer(tiny(epochs=1), tmp_path / "run", log=lambda line: None)
    assert trainer.model.input_grad is False  # no step uses dL/d(image)
    assert SAUNetV2().input_grad is True      # while a model built by hand returns it


def test_cosine_schedule_and_weight_average_resume_exactly(tmp_path):
    options = dict(epochs=3, schedule="cosine", warmup_epochs=1, ema=0.9, early_stop=0)
    straight = Trainer(tiny(**options), tmp_path / "a", log=quiet([])).fit()
    Trainer(tiny(**{**options, "time_limit": 1e-9}), tmp_path / "b", log=quiet([])).fit()  # stops after epoch 1
    resumed = Trainer(tiny(**{**options, "time_limit": None}), tmp_path / "b", resume=True, log=quiet([])).fit()
    a, b = load_checkpoint(tmp_path / "a" / "last.npz"), load_checkpoint(tmp_path / "b" / "last.npz")
    assert same_weights(a.model_state, b.model_state)
    assert all(np.array_equal(a.optim_state[k], b.optim_state[k]) for k in a.optim_state)
    assert any(k.startswith("ema.") for k in a.optim_state)
    assert run_part(straight.history) == run_part(resumed.history)
    rates = [row["lr"] for row in straight.history]
    assert rates[0] > rates[1] > rates[2] == pytest.approx(TrainConfig().min_lr)   # cosine down to --min-lr
    # the raw weights are scored beside the average; best.npz holds the average that was scored
    assert all("raw_val_f1" in row and "val_f1" in row for row in straight.history)
    best = load_checkpoint(tmp_path / "a" / "best.npz")
    assert same_weights(best.model_state, {k[len("ema."):]: v for k, v in best.optim_state.items()
                                           if k.startswith("ema.") and k != "ema.updates"})


def test_schedule_options_are_checked():
    with pytest.raises(T.ConfigError, match="--schedule"):
        tiny(schedule="step")
    with pytest.raises(T.ConfigError, match="--warmup-epochs"):
        tiny(warmup_epochs=1)
    with pytest.raises(T.ConfigError, match="--ema"):
        tiny(ema=1.0)
    with pytest.raises(T.ConfigError, match="--patience-lr sets the plateau schedule"):
        tiny(schedule="cosine", patience_lr=3)
