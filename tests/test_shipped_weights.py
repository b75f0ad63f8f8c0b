"""The SA-UNetv2 weights shipped in the package: they load, carry their training record,
drive `demo` by default, and (where DRIVE is present) still score what the README says."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from numpyseg.cli.evaluate import COLUMNS as TABLE_COLUMNS, REGIONS
from numpyseg.cli.main import main
from numpyseg.data.datasets import STARE_TEST
from numpyseg.inference import SHIPPED_WEIGHTS, load_model

README = Path(__file__).resolve().parent.parent / "README.md"
COLUMNS = tuple(key for key, _ in TABLE_COLUMNS)  # the README table is `evaluate`'s table


def test_shipped_weights_load_with_their_record():
    model, checkpoint = load_model(SHIPPED_WEIGHTS)
    assert model.num_parameters() == 260_521 and not checkpoint.optim_state
    assert SHIPPED_WEIGHTS.stat().st_size < 1.5e6
    training = checkpoint.extra["training"]
    assert training["dataset"] == "drive" and training["seed"] == 0
    assert not set(training["val_images"]) & set(training["train_images"])
    assert all(name.endswith("_training") for name in training["train_images"] + training["val_images"])
    record = SHIPPED_WEIGHTS.with_suffix(".md").read_text()
    assert training["command"] in record and training["command"].startswith("numpyseg train --dataset drive")
    curves = SHIPPED_WEIGHTS.with_name(SHIPPED_WEIGHTS.stem + "_curves.png")
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_uses_the_shipped_weights_by_default(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out)]) == 0
    prob = np.asarray(Image.open(tmp_path / "demo_prob.png"), dtype=np.float64) / 255
    vessels = (prob >= 0.5).mean()
    assert 0.03 < vessels < 0.25, f"{vessels:.3f} of the photograph called vessel"


def readme_row(label: str) -> dict:
    """The numbers of the README results-table row that starts with `label`."""
    for line in README.read_text().splitlines():
        if line.startswith(f"| {label} |"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")][1:]
            return dict(zip(COLUMNS, (float(c) for c in cells)))
    raise AssertionError(f"README has no results row '| {label} |'")


def test_shipped_weights_score_on_drive_test_as_the_readme_says(drive_root, tmp_path):
    scores = tmp_path / "scores.json"
    assert main(["evaluate", "--dataset", "drive", "--data-root", str(drive_root), "--json", str(scores)]) == 0
    result = json.loads(scores.read_text())
    assert result["images"] == 20 and result["split"] == "test"
    assert result["whole"]["mean"]["f1"] >= 0.80
    for region, label in REGIONS:
        row = readme_row(f"numpyseg, {label}")
        for key in COLUMNS:
            assert result[region]["mean"][key] == pytest.approx(row[key], abs=2e-4), (region, key)


STARE_WEIGHTS = SHIPPED_WEIGHTS.with_name("sa_unetv2_stare.npz")


def test_stare_weights_load_with_their_record():
    model, checkpoint = load_model(STARE_WEIGHTS)
    training = checkpoint.extra["training"]
    assert training["dataset"] == "stare" and training["seed"] == 0
    held_out = set(STARE_TEST)
    assert not set(training["train_images"] + training["val_images"]) & held_out   # never saw the test images
    assert not set(training["val_images"]) & set(training["train_images"])
    record = STARE_WEIGHTS.with_suffix(".md").read_text()
    assert training["command"] in record and training["command"].startswith("numpyseg train --dataset stare")


def test_stare_weights_score_on_the_held_out_stare_images_as_the_readme_says(stare_root, tmp_path):
    scores = tmp_path / "stare.json"
    assert main(["evaluate", "--weights", str(STARE_WEIGHTS), "--dataset", "stare", "--data-root", str(stare_root),
                 "--json", str(scores), "--quiet"]) == 0
    result = json.loads(scores.read_text())
    assert result["images"] == len(STARE_TEST) and result["split"] == "test"
    for region, label in REGIONS:
        row = readme_row(f"numpyseg on STARE, {label}")
        for key in COLUMNS:
            assert result[region]["mean"][key] == pytest.approx(row[key], abs=2e-4), (region, key)
