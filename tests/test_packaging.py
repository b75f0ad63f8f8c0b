"""Packaging: records name no folder of the machine, `numpyseg --version`, the model card."""

import json
import re
from pathlib import Path

import pytest

import numpyseg
from numpyseg.checkpoint import load_checkpoint
from numpyseg.cli.main import main
from numpyseg.inference import SHIPPED_WEIGHTS
from numpyseg.training import trainer as T
from numpyseg.training.config import TrainConfig
from numpyseg.training.portable import portable_command, portable_path
from numpyseg.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path, name", [("/home/ana/data/DRIVE/", "DRIVE"), ("C:\\data\\DRIVE", "DRIVE"),
                                        ("runs/drive", "drive"), ("DRIVE", "DRIVE"), (None, None)])
def test_portable_path_keeps_the_folder_name(path, name):
    assert portable_path(path) == name


def test_portable_command_rewrites_every_path_option():
    command = ("numpyseg train --dataset folder --images '/home/ana/my data' --labels=/srv/lab "
               "--data-root /x/DRIVE --epochs 3 --out /home/ana/runs/r1")
    assert portable_command(command) == ("numpyseg train --dataset folder --images 'my data' "
                                         "--labels=lab --data-root DRIVE --epochs 3 --out r1")


def test_exported_record_and_logs_name_no_folder_of_the_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(T.logs, "plot_curves", lambda *a, **k: None)
    # a folder dataset under a deep absolute path: every piece of it must stay out of the records
    from numpyseg.data.synthetic import make_dataset
    from PIL import Image
    import numpy as np

    data = tmp_path / "secret_home" / "mydata"
    for sub in ("images", "labels"):
        (data / sub).mkdir(parents=True)
    for s in make_dataset(4, (32, 32), seed=0):
        Image.fromarray((s.image * 255).astype(np.uint8)).save(data / "images" / f"{s.name}.png")
        Image.fromarray((s.label * 255).astype(np.uint8)).save(data / "labels" / f"{s.name}.png")
    run = tmp_path / "secret_home" / "run1"
    config = TrainConfig(dataset="folder", data_root=str(data), batch_size=2, base_channels=8, val_count=1,
                         block_size=3, epochs=1)
    Trainer(config, run, log=lambda line: None, command=f"numpyseg train --data-root {data} --out {run}").fit()
    out = tmp_path / "w" / "model.npz"
    assert main(["export", str(run), "--out", str(out)]) == 0

    texts = {"record": out.with_suffix(".md").read_text(),
             "npz summary": json.dumps(load_checkpoint(out).extra["training"]),
             "history.json": (run / "history.json").read_text()}
    for what, text in texts.items():
        assert "secret_home" not in text and str(tmp_path) not in text, what
    summary = load_checkpoint(out).extra["training"]
    assert "--data-root mydata" in summary["command"] and summary["command"].endswith("--out run1")
    assert summary["sessions"][0]["command"] == "numpyseg train --data-root mydata --out run1"
    assert json.loads(texts["history.json"])["run"]["data_root"] == "mydata"
    # the run's own checkpoints keep the real path, which --resume needs
    assert load_checkpoint(run / "last.npz").extra["train_config"]["data_root"] == str(data)


def test_shipped_record_names_no_folder_of_the_machine():
    record = SHIPPED_WEIGHTS.with_suffix(".md").read_text()
    summary = json.dumps(load_checkpoint(SHIPPED_WEIGHTS).extra["training"])
    for text in (record, summary):
        assert not re.search(r"(^|[\s(`'\"])(/|[A-Za-z]:\\)\w", text), "an absolute path"
    assert "--data-root DRIVE" in record


def test_version_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"numpyseg {numpyseg.__version__}"
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert numpyseg.__version__ == declared


def test_model_card_sits_beside_the_shipped_weights_with_the_readme_scores():
    card = (SHIPPED_WEIGHTS.parent / "MODEL_CARD.md").read_text()
    for topic in ("Intended use", "not", "diagnos", "DRIVE", "terms", "Limitations", "field of view"):
        assert topic in card, topic
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| DRIVE test"))
    assert row in readme  # the card quotes the README's results row, not numbers of its own
