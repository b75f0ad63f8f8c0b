"""`numpyseg export`: weights without optimiser state, the record, and the command that
rebuilds the run's config."""

import shlex

import numpy as np
import pytest

from numpyseg.checkpoint import load_checkpoint
from numpyseg.cli.main import build_parser, main
from numpyseg.cli.train import _NOT_CONFIG as NOT_CONFIG  # the options that are not part of a run's config
from numpyseg.inference import load_model
from numpyseg.training import trainer as T
from numpyseg.training.config import TrainConfig
from numpyseg.training.trainer import Trainer

TINY = dict(synthetic_count=6, synthetic_size=32, batch_size=2, base_channels=8, val_count=2, block_size=3,
            epochs=2)


def config_from_command(command: str) -> TrainConfig:
    """Parse a `numpyseg train ...` line with the real parser, as `numpyseg train` does."""
    words = shlex.split(command)
    assert words[:2] == ["numpyseg", "train"]
    args = build_parser().parse_args(words[1:])
    given = {k: v for k, v in vars(args).items() if k not in NOT_CONFIG}
    return TrainConfig(**given)


@pytest.mark.parametrize("options", [
    {},
    dict(dataset="drive", data_root="/data/my DRIVE", batch_size=2, steps_per_epoch=20, pos_weight=1.5,
         val_count=4, time_limit=130.0, epochs=400),
    dict(dataset="stare", data_root="d", pos_weight="balanced", augment=False, rot90=False, loss_fov=True,
         arch="sa_unet", lr=3e-4, monitor="val_auc", patch_size=64, seed=7),
])
def test_command_line_rebuilds_the_same_config(options):
    config = TrainConfig(**options)
    command = config.command_line("runs/x")
    assert command.endswith("--out runs/x")
    assert config_from_command(command) == config


def test_export_keeps_weights_only_and_writes_the_record(tmp_path, monkeypatch):
    monkeypatch.setattr(T.logs, "plot_curves", lambda path, *a, **k: path.write_bytes(b"\x89PNG\r\n\x1a\n"))
    run = tmp_path / "run"
    result = Trainer(TrainConfig(**TINY), run, log=lambda line: None).fit()
    out = tmp_path / "weights" / "model.npz"
    assert main(["export", str(run), "--out", str(out)]) == 0

    exported, best = load_checkpoint(out), load_checkpoint(run / "best.npz")
    assert not exported.optim_state and best.optim_state
    assert out.stat().st_size < (run / "best.npz").stat().st_size / 2
    assert exported.epoch == best.epoch == result.best_epoch
    for key, value in best.model_state.items():
        np.testing.assert_array_equal(exported.model_state[key], value)
    model, _ = load_model(out)  # loads as predict / evaluate / demo load it
    assert model.num_parameters() == exported.extra["training"]["num_parameters"]

    record = (tmp_path / "weights" / "model.md").read_text()
    summary = exported.extra["training"]
    assert summary["command"] in record and "--synthetic-count 6" in summary["command"]
    assert config_from_command(summary["command"]) == TrainConfig(**TINY)
    assert f"epoch {result.best_epoch}" in record and "model_curves.png" in record
    assert (tmp_path / "weights" / "model_curves.png").is_file()
    assert summary["validation"]["val_f1"] == pytest.approx(result.best_value)
    curve = summary["history"]
    assert [row["epoch"] for row in curve] == [row["epoch"] for row in result.history]
    assert [row["val_f1"] for row in curve] == pytest.approx([row["val_f1"] for row in result.history])


def test_sessions_are_recorded_and_listed(tmp_path, monkeypatch):
    monkeypatch.setattr(T.logs, "plot_curves", lambda *a, **k: None)
    run = tmp_path / "run"
    options = ["--synthetic-count", "6", "--synthetic-size", "32", "--batch-size", "2", "--base-channels", "8",
               "--val-count", "2", "--block-size", "3"]
    assert main(["train", "--out", str(run), "--epochs", "1"] + options) == 0
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 0
    sessions = load_checkpoint(run / "last.npz").extra["sessions"]
    assert [s["from_epoch"] for s in sessions] == [0, 1]
    assert sessions[0]["command"].startswith("numpyseg train --out") and "--resume" in sessions[1]["command"]
    assert main(["export", str(run), "--out", str(tmp_path / "m.npz"), "--last"]) == 0
    record = (tmp_path / "m.md").read_text()
    assert "numpyseg train --out run --resume --epochs 2" in record and "at epoch 2" in record  # folder names only


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "m.npz")]) == 2
    assert "run folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m.npz")]) == 2
    assert "best.npz: file not found" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m.txt")]) == 2
    assert ".npz" in capsys.readouterr().err
