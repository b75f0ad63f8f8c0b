"""The attention explorer: gate maps recorded by the attention layers, segment(explain=True),
the figure and `numpyseg predict --explain`."""

import numpy as np
import pytest
from PIL import Image

import numpyseg.prediction as P
from numpyseg.checkpoint import save_checkpoint
from numpyseg.cli.main import main
from numpyseg.data.synthetic import make_fundus
from numpyseg.errors import ConfigError
from numpyseg.inference import predict_proba
from numpyseg.layers.attention import (CrossScaleSpatialAttention, SpatialAttention,
                                       cross_scale_attention_forward_reference,
                                       spatial_attention_forward_reference)
from numpyseg.layers.module import no_grad
from numpyseg.models.unet import build_model


@pytest.fixture(scope="module")
def model():
    return build_model({"arch": "sa_unetv2", "base_channels": 8, "block_size": 3, "seed": 5})


def reference_gate(layer, *inputs):
    """The layer's gate s (N, H, W) by the plain-NumPy formula of numpyseg.layers.attention."""
    w = layer.conv.weight.data
    if isinstance(layer, SpatialAttention):
        _, cache = spatial_attention_forward_reference(*inputs, w)
    else:
        _, cache = cross_scale_attention_forward_reference(*inputs, w)
    return cache[-1][..., 0]  # s (N, H, W, 1), last in the cache


def capture_inputs(model):
    """Wrap each attention layer's forward (on the instance) to keep a copy of its inputs."""
    seen = {}
    for name, layer in model.attention_layers().items():
        def forward(*inputs, _name=name, _forward=layer.forward):
            seen[_name] = [np.array(x) for x in inputs]
            return _forward(*inputs)
        layer.forward = forward
    return seen


# ------------------------------------------------------------------- the layers
def test_layers_record_their_gate_only_when_asked():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 12, 10, 5)).astype(np.float32)
    dec = rng.standard_normal((2, 12, 10, 3)).astype(np.float32)
    sa, csa = SpatialAttention(rng=rng), CrossScaleSpatialAttention(rng=rng)
    with no_grad():
        sa(x), csa(x, dec)
        assert sa.gate is None and csa.gate is None           # not asked: nothing kept
        sa.record_gate = csa.record_gate = True
        out = sa(x)
        csa(x, dec)
    assert sa._cache is None and csa._cache is None            # no backward cache under no_grad
    assert sa.gate.shape == (2, 12, 10) and csa.gate.shape == (2, 12, 10)
    np.testing.assert_allclose(sa.gate, reference_gate(sa, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(csa.gate, reference_gate(csa, x, dec), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, x * sa.gate[..., None], rtol=1e-5, atol=1e-6)   # the gate that was applied


# ------------------------------------------------------------ segment(explain=True)
def test_segment_explain_returns_the_gates_of_the_forward_pass(model):
    sample = make_fundus((60, 52), 3)                 # padded to 64 x 56 for the network
    seen = capture_inputs(model)
    try:
        result = P.segment(sample.image, P.TrainedModel(model), rescale="off", explain=True)
    finally:
        for layer in model.attention_layers().values():
            del layer.forward                          # back to the class's forward
    explanation = result.explanation
    assert explanation.scale == 1.0 and explanation.image.shape == (64, 56, 3)
    np.testing.assert_array_equal(explanation.image[:60, :52], sample.image)
    assert not explanation.image[60:].any() and not explanation.image[:, 52:].any()
    assert list(explanation.maps) == ["attention", "csa3", "csa2", "csa1"]
    for name, factor in model.ATTENTION_LAYERS:
        gate = explanation.maps[name]
        assert gate.shape == (64 // factor, 56 // factor) and gate.dtype == np.float32
        np.testing.assert_allclose(gate, reference_gate(getattr(model, name), *seen[name])[0],
                                   rtol=1e-5, atol=1e-6)
    # recording changed nothing else, and stops with the call
    np.testing.assert_array_equal(result.probability, predict_proba(model, sample.image))
    assert all(not layer.record_gate for layer in model.attention_layers().values())
    assert P.segment(sample.image, P.TrainedModel(model), rescale="off").explanation is None


def test_explain_maps_are_of_the_rescaled_input(model):
    sample = make_fundus((96, 80), 11)
    from numpyseg.data.fov import derive_fov
    diameter = P.fov_diameter(derive_fov(sample.image))
    result = P.segment(sample.image, P.TrainedModel(model, diameter / 2, False), explain=True)
    assert result.scale == pytest.approx(0.5) and result.explanation.scale == result.scale
    assert result.explanation.image.shape == (48, 40, 3)          # 96 x 80 at x0.5
    assert result.explanation.maps["attention"].shape == (6, 5)
    assert result.probability.shape == (96, 80)


def test_explain_refuses_tiles_and_tta(model):
    sample = make_fundus(32, 1)
    for options in ({"tile": 64}, {"tta": True}):
        with pytest.raises(ConfigError, match="one whole-image forward pass"):
            P.segment(sample.image, P.TrainedModel(model), explain=True, **options)


def test_figure_and_maps_are_written_all_or_nothing(model, tmp_path):
    sample = make_fundus(48, 2)
    result = P.segment(sample.image, P.TrainedModel(model), rescale="off", explain=True)
    paths = P.write_outputs(result, tmp_path, "eye")
    assert paths["explain"].name == "eye_explain.png" and paths["explain_npz"].name == "eye_explain.npz"
    figure = Image.open(paths["explain"])
    assert figure.format == "PNG" and min(figure.size) > 200
    with np.load(paths["explain_npz"]) as saved:
        assert sorted(saved.files) == sorted(result.explanation.maps)
        for name, gate in result.explanation.maps.items():
            np.testing.assert_array_equal(saved[name], gate)
    axes = [a for a in P.explanation_figure(result.explanation).axes if a.get_label() != "<colorbar>"]
    assert len(axes) == 4 and all(len(a.images) == 2 for a in axes)     # photograph + gate in each panel
    with pytest.raises(P.DataError, match="exists already"):
        P.write_outputs(result, tmp_path, "eye")


# ---------------------------------------------------------------------- the CLI
def test_predict_explain_cli(model, tmp_path, capsys):
    weights = save_checkpoint(tmp_path / "w.npz", model, config=model.config, epoch=0)
    sample = make_fundus(40, 9)
    image = tmp_path / "eye.png"
    Image.fromarray((sample.image * 255).round().astype(np.uint8)).save(image)
    command = ["predict", str(image), "--weights", str(weights), "--out", str(tmp_path / "out"), "--quiet",
               "--rescale", "off", "--explain"]
    assert main(command) == 0
    assert "_explain.png" in capsys.readouterr().out
    with np.load(tmp_path / "out" / "eye_explain.npz") as saved:
        assert saved["attention"].shape == (5, 5) and saved["csa1"].shape == (40, 40)
    assert main(command) == 2                                           # never overwrites
    err = capsys.readouterr().err.strip()
    assert err.startswith("numpyseg predict: error: ") and "exists already" in err and "\n" not in err
    assert main(command[:-1] + ["--explain", "--tile", "16", "--out", str(tmp_path / "tiled")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--tile" in err and "\n" not in err and not (tmp_path / "tiled").exists()
