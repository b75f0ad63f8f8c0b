"""`numpyseg demo`: the shipped photograph is segmented and a figure written."""

import numpy as np
import pytest
from PIL import Image

from numpyseg.checkpoint import save_checkpoint
from numpyseg.cli.demo import DEMO_IMAGE
from numpyseg.cli.main import main
from numpyseg.models import SAUNetV2


@pytest.fixture
def weights(tmp_path):
    model = SAUNetV2(base_channels=8, seed=0)
    return save_checkpoint(tmp_path / "w.npz", model, config=model.config, epoch=0)


def test_demo_image_is_shipped_with_its_licence():
    image = Image.open(DEMO_IMAGE)
    assert image.size == (540, 540) and image.mode == "RGB"
    assert "CC0" in (DEMO_IMAGE.parent / "README.md").read_text()


def test_demo_writes_figure_and_probability_map(tmp_path, weights, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--weights", str(weights), "--out", str(out)]) == 0
    figure = np.asarray(Image.open(out))
    assert figure.shape[1] > 3 * 300  # three panels side by side
    prob = np.asarray(Image.open(tmp_path / "demo_prob.png"))
    assert prob.shape == (540, 540)
    assert "retina.jpg" in capsys.readouterr().out


def test_demo_rejects_non_png_output(tmp_path, weights, capsys):
    assert main(["demo", "--weights", str(weights), "--out", str(tmp_path / "x.jpg")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--out must name a .png" in err


def test_demo_overwrites_nothing_without_overwrite(tmp_path, weights, capsys):
    out = tmp_path / "foo.png"
    (tmp_path / "foo_prob.png").write_bytes(b"the user's own file")
    assert main(["demo", "--weights", str(weights), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "foo_prob.png exists already" in err and "--overwrite" in err
    assert (tmp_path / "foo_prob.png").read_bytes() == b"the user's own file" and not out.exists()
    assert main(["demo", "--weights", str(weights), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert np.asarray(Image.open(tmp_path / "foo_prob.png")).shape == (540, 540)


def test_demo_does_not_create_a_mistyped_folder(tmp_path, weights, capsys):
    out = tmp_path / "no_such_folder" / "demo.png"
    assert main(["demo", "--weights", str(weights), "--out", str(out), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.parent.exists()
