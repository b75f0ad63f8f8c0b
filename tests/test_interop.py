"""Bridges: the ONNX model and the PyTorch state dict give numpyseg's predictions, and come back."""

import numpy as np
import pytest

from numpyseg.checkpoint import load_checkpoint, save_checkpoint
from numpyseg.cli.main import main
from numpyseg.errors import ConfigError
from numpyseg.inference import SHIPPED_WEIGHTS, evaluation_mode, load_model
from numpyseg.models import SAUNet, SAUNetV2

SHAPES = [(2, 16, 16, 3), (1, 24, 40, 3)]  # a small batch, and a non-square image


def randomised(model, seed=5):
    """The model with every parameter and buffer redrawn (norm affine maps and BatchNorm
    running statistics away from their 1 / 0 defaults, so a wrong formula shows)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, value in model.state_dict().items():
        if name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif name.endswith(("norm.weight", "norm.bias", "running_mean")):
            state[name] = rng.normal(0.5, 0.5, value.shape).astype(np.float32)
        else:
            state[name] = value
    model.load_state_dict(state)
    return model


def tiny(cls):
    return randomised(cls(base_channels=8, block_size=3, seed=1))


def logits_of(model, x):
    with evaluation_mode(model):
        return model(x)


def save_weights(model, path):
    save_checkpoint(path, model, None, config=model.config, epoch=0)
    return path


def relative_error(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------ ONNX
@pytest.mark.parametrize("cls", [SAUNetV2, SAUNet])
def test_onnx_model_matches_numpyseg_in_onnxruntime(cls, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install -e .[onnx])")
    pytest.importorskip("onnx", reason="onnx not installed (pip install -e .[onnx])")
    model = tiny(cls)
    out = tmp_path / "model.onnx"
    assert main(["export", str(save_weights(model, tmp_path / "w.npz")), "--format", "onnx",
                 "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logits", "probability"]
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.random(shape, dtype=np.float32)
        expected = logits_of(model, x)
        logits, probability = session.run(None, {"image": x})
        assert logits.shape == probability.shape == shape[:3] + (1,)
        assert logits.dtype == np.float32
        assert relative_error(logits, expected) <= 1e-4
        np.testing.assert_allclose(probability, 1 / (1 + np.exp(-expected)), atol=1e-5)


def test_onnx_export_of_the_shipped_weights_names_the_extra_when_missing(tmp_path, monkeypatch):
    from numpyseg.interop import weights

    real_import = weights.importlib.import_module

    def no_onnx(name, *args):
        if name == "onnx":
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(weights.importlib, "import_module", no_onnx)
    out = tmp_path / "shipped.onnx"
    with pytest.raises(ConfigError, match=r"numpyseg\[onnx\]"):
        from numpyseg.interop.convert import export_as
        export_as(SHIPPED_WEIGHTS, out, "onnx")
    assert not out.exists()


def test_export_refuses_a_wrong_suffix_and_an_existing_file(tmp_path, capsys):
    weights = save_weights(tiny(SAUNetV2), tmp_path / "w.npz")
    assert main(["export", str(weights), "--format", "onnx", "--out", str(tmp_path / "m.pt")]) == 2
    assert "--format onnx writes a .onnx file" in capsys.readouterr().err
    taken = tmp_path / "taken.pt"
    taken.write_bytes(b"mine")
    assert main(["export", str(weights), "--format", "torch", "--out", str(taken)]) == 2
    assert "exists" in capsys.readouterr().err
    assert taken.read_bytes() == b"mine"


# ------------------------------------------------------------------ PyTorch
@pytest.mark.parametrize("cls", [SAUNetV2, SAUNet])
def test_torch_round_trip_gives_identical_arrays_and_predictions(cls, torch, tmp_path):
    from numpyseg.interop.torch_reference import torch_twin

    model = tiny(cls)
    weights = save_weights(model, tmp_path / "w.npz")
    pt, back = tmp_path / "twin.pt", tmp_path / "back.npz"
    assert main(["export", str(weights), "--format", "torch", "--out", str(pt)]) == 0
    assert main(["export", str(pt), "--format", "npz", "--out", str(back)]) == 0

    restored = load_checkpoint(back)
    # the architecture is read back from the shapes; DropBlock's training-only settings
    # are not in the weights and take the spec's defaults
    assert restored.config == dict(model.config, block_size=7, dropblock_rate=0.15)
    original = model.state_dict()
    assert set(restored.model_state) == set(original)
    for name, value in original.items():
        np.testing.assert_array_equal(restored.model_state[name], value, err_msg=name)

    # the .pt is a plain state dict of the twin, and the twin predicts what numpyseg predicts
    fresh = torch_twin(cls(base_channels=8, block_size=3, seed=9))  # other weights, same shapes
    fresh.load_state_dict(torch.load(pt, weights_only=True))
    fresh.eval()
    x = np.random.default_rng(2).random(SHAPES[1], dtype=np.float32)
    reloaded, _ = load_model(back)
    expected = logits_of(model, x)
    np.testing.assert_array_equal(logits_of(reloaded, x), expected)
    with torch.no_grad():
        from_torch = fresh(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    assert relative_error(from_torch, expected) <= 1e-4


def test_torch_import_rejects_a_foreign_state_dict(torch, tmp_path, capsys):
    pt = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, pt)
    assert main(["export", str(pt), "--format", "npz", "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "error: not a state dict of the numpyseg PyTorch twin" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


def test_run_folder_source_takes_best_npz(torch, tmp_path, capsys):
    model = tiny(SAUNetV2)
    run = tmp_path / "run"
    run.mkdir()
    assert main(["export", str(run), "--format", "torch", "--out", str(tmp_path / "a.pt")]) == 2
    assert f"run folder {run} has no best.npz" in capsys.readouterr().err
    save_weights(model, run / "best.npz")
    assert main(["export", str(run), "--format", "torch", "--out", str(tmp_path / "a.pt")]) == 0
    state = torch.load(tmp_path / "a.pt", weights_only=True)
    np.testing.assert_array_equal(state["up1.conv.weight"].numpy(),
                                  model.state_dict()["up1.weight"].transpose(3, 2, 0, 1))


# ------------------------------------------------------------------ distributed training
@pytest.mark.parametrize("pos_weight", [1.0, 3.0])
def test_torch_loss_is_numpysegs_loss(torch, pos_weight):
    from numpyseg.losses import bce_mcc_loss as numpy_loss
    from numpyseg.interop.torch_reference import bce_mcc_loss

    rng = np.random.default_rng(4)
    z = rng.normal(0, 2, (2, 8, 8, 1))
    m = (rng.random(z.shape) < 0.8).astype(np.float64)
    for y in ((rng.random(z.shape) < 0.3).astype(np.float64), np.zeros(z.shape)):  # zeros: D = 0
        tz = torch.tensor(z, requires_grad=True)
        loss = bce_mcc_loss(tz, torch.tensor(y), torch.tensor(m), pos_weight=pos_weight)
        loss.backward()
        value, grad = numpy_loss(z, y, m, pos_weight=pos_weight)
        assert loss.item() == pytest.approx(value, rel=1e-10)
        np.testing.assert_allclose(tz.grad.numpy(), grad, rtol=1e-8, atol=1e-14)


@pytest.mark.slow
def test_ddp_training_on_two_cpu_processes_comes_back_into_numpyseg(torch, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import numpyseg
    from numpyseg.interop.ddp_train import build_parser, initial_model, job_from_args
    from numpyseg.interop.torch_bridge import model_from_torch
    from numpyseg.interop.torch_reference import torch_twin

    out = tmp_path / "ddp.pt"
    argv = ["--synthetic-count", "4", "--synthetic-size", "32", "--base-channels", "8", "--block-size", "3",
            "--batch-size", "1", "--epochs", "2", "--steps-per-epoch", "2", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(Path(numpyseg.__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-m", "numpyseg.interop.ddp_train", "--nproc", "2"] + argv,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "epoch 2/2" in done.stdout and "weights identical on all 2 processes" in done.stdout

    start = initial_model(job_from_args(build_parser().parse_args(argv)))
    trained = model_from_torch(out, block_size=3)
    assert trained.config == start.config
    moved = [np.max(np.abs(trained.state_dict()[k] - v)) for k, v in start.state_dict().items()]
    assert max(moved) > 1e-4  # two epochs of Adam changed the weights

    twin = torch_twin(start)
    twin.load_state_dict(torch.load(out, weights_only=True))
    twin.eval()
    x = np.random.default_rng(1).random((1, 32, 40, 3), dtype=np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    assert relative_error(logits_of(trained, x), expected) <= 1e-4
