"""The benchmark runs end to end at a small size and reports every figure it promises."""

import json

import numpy as np
import pytest

from numpyseg import benchmark
from numpyseg.cli.main import main


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_quick_benchmark_reports_every_figure(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = main(["benchmark", "--quick", "--size", "32", "--repeats", "1", "--batches", "1", "2",
                 "--no-startup", "--json", str(path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "inference (batch 1)" in printed and "training step (batch 2)" in printed
    assert "time per layer type" in printed
    results = json.loads(path.read_text())
    assert results["config"]["size"] == 32
    for key in ("inference", "train_step_b1", "train_step_b2"):
        figure = results[key]
        assert figure["numpyseg"]["median"] > 0 and len(figure["numpyseg"]["times"]) == 1
        if results["config"]["torch"]:
            assert figure["torch"]["median"] > 0
            assert figure["ratio"] == pytest.approx(figure["numpyseg"]["median"] / figure["torch"]["median"])
        else:
            assert "ratio" not in figure
    assert results["first_call"]["inference"] > 0
    # a 32x32 SA-UNetv2 inference needs Python + numpy + numba: tens of MB, not GB
    assert 20 < results["memory_mb"]["numpyseg"] < 2000
    if results["config"]["torch"]:
        assert results["memory_mb"]["ratio"] == pytest.approx(
            results["memory_mb"]["numpyseg"] / results["memory_mb"]["torch"])
    # the training-step profile sees every kind of layer the model has, plus loss and optimiser
    profile = results["profile_train_step"]
    # (GroupNorm and SiLU run fused in SA-UNetv2: one category, "norm + activation")
    for category in ("conv", "transposed conv", "norm + activation", "attention", "pooling",
                     "dropblock", "loss", "optimiser"):
        assert category in profile, category
    assert profile["conv"]["forward"] > 0 and profile["conv"]["backward"] > 0
    assert results["profile_inference"]["conv"]["backward"] == 0.0  # inference has no backward


def test_layer_profile_restores_the_layer_classes(rng):
    from numpyseg.layers.activations import SiLU
    from numpyseg.layers.conv import Conv2d

    conv_forward, silu_own = Conv2d.forward, "forward" in vars(SiLU)
    layer, act = Conv2d(2, 3, rng=rng), SiLU()
    x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
    with benchmark.layer_profile() as prof:
        act(layer(x))
        layer.backward(np.ones((1, 6, 6, 3), np.float32))
    assert Conv2d.forward is conv_forward and ("forward" in vars(SiLU)) == silu_own
    seconds = prof.as_dict()
    assert seconds["conv"]["forward"] > 0 and seconds["conv"]["backward"] > 0
    assert seconds["activation"]["forward"] > 0


def test_nested_time_is_charged_to_the_inner_layer_only():
    prof = benchmark.LayerProfile()
    import time

    inner = prof.timed("conv", "forward", lambda: time.sleep(0.02))
    outer = prof.timed("attention", "forward", lambda: (time.sleep(0.01), inner()))
    start = time.perf_counter()
    outer()
    total = time.perf_counter() - start
    seconds = prof.as_dict()
    assert seconds["conv"]["forward"] >= 0.02
    assert seconds["attention"]["forward"] >= 0.01
    # the inner 20 ms is not counted twice: the two exclusive times add up to the whole call
    assert seconds["conv"]["forward"] + seconds["attention"]["forward"] <= total + 1e-6


def test_conv_benchmark_rows(capsys):
    rows = benchmark.conv_benchmark(shapes=[(16, 4, 16, 3), (16, 2, 1, 7)], repeats=1,
                                    use_torch=_has_torch(), log=print)
    assert [(r["c_in"], r["c_out"], r["k"]) for r in rows] == [(4, 16, 3), (2, 1, 7)]
    for r in rows:
        assert r["forward"] > 0 and r["backward"] > 0
        if _has_torch():
            assert r["forward_ratio"] == pytest.approx(r["forward"] / r["torch_forward"])
    assert "k7" in capsys.readouterr().out


def test_benchmark_rejects_bad_options(capsys):
    assert main(["benchmark", "--size", "30", "--no-torch"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert main(["benchmark", "--repeats", "0", "--no-torch"]) == 2
