"""The benchmark runs end to end at a small size and reports every figure it promises."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numpyseg.devtools import benchmark, benchmark_peers, roofline
from numpyseg.cli.main import main

REPO = Path(__file__).resolve().parents[1]
PEER_MODULES = {"PyTorch": ("torch",), "PyTorch channels_last": ("torch",),
                "ONNX Runtime": ("torch", "onnx", "onnxscript", "onnxruntime"),
                "OpenVINO": ("torch", "onnx", "onnxscript", "openvino")}


def _has_torch():
    return benchmark_peers.installed("torch")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `numpyseg benchmark --quick` at 32x32: (exit code, printed text, results dict)."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["benchmark", "--quick", "--size", "32", "--repeats", "1", "--batches", "1",
                     "--no-startup", "--json", str(path)])
    return code, printed.getvalue(), json.loads(path.read_text())


def _table(printed: str) -> list[list[str]]:
    """The cells of the Markdown table that starts with '| figure |'."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| figure |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_quick_benchmark_table_has_one_row_per_peer_and_figure(quick_run):
    code, printed, results = quick_run
    assert code == 0
    table = _table(printed)
    assert table[0] == ["figure", "numpyseg", "peer", "numpyseg / peer"]
    assert all(len(row) == 4 for row in table)
    figures = [row[0] for row in table[2:]]
    expected = [f"inference, batch 1 vs {name}" for name in benchmark_peers.PEER_NAMES]
    expected += [f"training step, batch 1, DropBlock {d} vs PyTorch" for d in ("off", "on")]
    expected += ["peak memory of one inference (fresh process) vs PyTorch"]
    assert figures == expected
    # each ratio printed is numpyseg's median over the peer's, from the same results
    by_figure = {row[0]: row for row in table[2:]}
    for name, peer in results["inference"]["peers"].items():
        row = by_figure[f"inference, batch 1 vs {name}"]
        if "ratio" in peer:
            assert float(row[3]) == pytest.approx(results["inference"]["numpyseg"]["median"] / peer["median"],
                                                  abs=0.006)
        else:
            assert row[2] == peer["status"] and row[3] == "-"


def test_quick_benchmark_json_holds_every_figure(quick_run):
    _, printed, results = quick_run
    assert results["config"]["size"] == 32
    assert [(s["batch"], s["dropblock"]) for s in results["train_steps"]] == [(1, False), (1, True)]
    for step in results["train_steps"]:
        assert step["numpyseg"]["median"] > 0 and len(step["numpyseg"]["times"]) == 1
        torch_step = step["peers"]["PyTorch"]
        if _has_torch():
            assert torch_step["ratio"] == pytest.approx(step["numpyseg"]["median"] / torch_step["median"])
        else:
            assert torch_step["status"] == benchmark_peers.TORCH_NOT_INSTALLED
    # a 32x32 SA-UNetv2 inference needs Python + numpy + numba: tens of MB, not GB
    assert 20 < results["memory_mb"]["numpyseg"] < 2000
    # the training-step profile sees every kind of layer the model has, plus loss and optimiser
    profile = results["profile_train_step"]
    for category in ("conv", "transposed conv", "norm + activation", "attention", "pooling",
                     "dropblock", "loss", "optimiser"):
        assert category in profile, category
    assert results["profile_inference"]["conv"]["backward"] == 0.0  # inference has no backward
    roof = results["roofline"]
    assert roof["sgemm"]["gflops"] > 0 and roof["sgemm"]["n"] == 256
    assert [(r["size"], r["c_in"]) for r in roof["conv"]] == [(32, 16), (16, 32), (8, 48), (4, 64)]
    assert f"the authors' count, {roofline.AUTHORS_GFLOPS_592:.2f} GFLOP" in printed
    assert f"instruction set: {roofline.instruction_set()}" in printed


@pytest.mark.parametrize("peer", benchmark_peers.PEER_NAMES)
def test_each_installed_peer_matches_numpyseg_before_it_is_timed(quick_run, peer):
    missing = [m for m in PEER_MODULES[peer] if not benchmark_peers.installed(m)]
    if missing:
        pytest.skip(f"{peer} not available here: {', '.join(missing)} not installed")
    _, printed, results = quick_run
    figure = results["inference"]["peers"][peer]
    assert "status" not in figure, figure.get("status")
    assert figure["relative_error"] < benchmark_peers.MAX_RELATIVE_ERROR
    assert figure["median"] > 0 and figure["ratio"] > 0
    assert f"{peer} {figure['relative_error']:.1e}" in printed
    threads = results["machine"]["threads"]
    if peer == "ONNX Runtime":
        assert figure["settings"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
        assert figure["settings"]["intra_op_threads"] == threads
    if peer == "OpenVINO":
        assert figure["settings"] == {"performance_hint": "LATENCY", "inference_precision": "f32",
                                      "threads": threads}


def test_a_peer_that_disagrees_is_not_timed():
    class Wrong:
        name = "wrong"

        def logits(self, x):
            return x[..., :1] + 1.0

    class Right(Wrong):
        name = "right"

        def logits(self, x):
            return x[..., :1] * (1 + 1e-6)

    x = np.random.default_rng(0).random((1, 8, 8, 3), dtype=np.float32)
    kept, errors, rejected = benchmark._checked_peers([Wrong(), Right()], x[..., :1], x)
    assert [p.name for p in kept] == ["right"]
    assert errors["right"] == pytest.approx(1e-6, rel=0.1)  # float32 rounding of x * (1 + 1e-6)
    assert errors["wrong"] > 0.5 and "not timed" in rejected["wrong"]


def test_missing_engines_are_reported_not_raised(monkeypatch, torch):
    from numpyseg.models import SAUNetV2
    from numpyseg.interop.torch_reference import torch_twin

    monkeypatch.setattr(benchmark_peers, "installed", lambda *modules: "torch" in modules)
    peers, unavailable = benchmark_peers.inference_peers(torch_twin(SAUNetV2()), 16, 1, Path("unused"))
    assert [p.name for p in peers] == ["PyTorch channels_last"]
    assert unavailable == {"ONNX Runtime": benchmark_peers.NOT_INSTALLED,
                           "OpenVINO": benchmark_peers.NOT_INSTALLED}
    assert "pip install numpyseg[bench]" in benchmark_peers.NOT_INSTALLED


def test_model_flops_at_592_are_counted_from_the_layer_shapes():
    from numpyseg.models import SAUNetV2

    counted = roofline.forward_flops(SAUNetV2(), 592)
    # the same count by hand from the architecture: 3x3 convs at their output size, the
    # transposed convs at their input size, the 1x1 head and four 7x7 2->1 attention convs
    c1, c2, c3, c4 = 16, 32, 48, 64
    convs = [(592, 3, c1), (592, c1, c1), (296, c1, c2), (296, c2, c2), (148, c2, c3), (148, c3, c3),
             (74, c3, c4), (74, c4, c4), (148, 2 * c3, c3), (148, c3, c3), (296, 2 * c2, c2),
             (296, c2, c2), (592, 2 * c1, c1), (592, c1, c1)]
    macs = sum(s * s * 9 * a * b for s, a, b in convs) + 592 * 592 * c1
    transposed = sum(s * s * 9 * a * b for s, a, b in [(74, c4, c3), (148, c3, c2), (296, c2, c1)])
    attention = sum(s * s * 49 * 2 for s in (74, 148, 296, 592))
    assert counted["total"] == 2 * (macs + transposed + attention)
    assert counted["by_layer"]["ConvTranspose2d"] == 2 * transposed
    # the authors publish 21.19 GFLOP; 2 x MACs comes within 2 % of it (20.79 GFLOP)
    assert counted["total"] / 1e9 == pytest.approx(roofline.AUTHORS_GFLOPS_592, rel=0.02)
    assert round(counted["total"] / 1e9, 2) == 20.79


def test_roofline_yardsticks(monkeypatch):
    import numpyseg.kernels

    assert roofline.instruction_set() in ("AVX-512", "AVX2", "AVX", "SSE", "ARM (NEON)")
    monkeypatch.delattr(numpyseg.kernels, "TILE_VARIANT", raising=False)
    assert roofline.tile_variant() == "default"
    monkeypatch.setattr(numpyseg.kernels, "TILE_VARIANT", "avx512-8x16", raising=False)
    assert roofline.tile_variant() == "avx512-8x16"
    rows = roofline.conv_throughput(scale=16 / 592, repeats=1, shapes=[(592, 4, 8)])
    assert rows[0]["flops"] == 2 * 16 * 16 * 9 * 4 * 8
    assert all(rows[0][d] > 0 for d in ("forward", "input_grad", "weight_grad"))
    layers = {r["name"]: r for r in roofline.memory_bound_throughput(16, repeats=1)}
    map_bytes = 4 * 16 * 16 * 16
    assert layers["GroupNorm + SiLU (fused)"]["bytes"] == 2 * map_bytes
    assert layers["max pooling 2x2"]["bytes"] == map_bytes + map_bytes // 4
    assert layers["concat"]["bytes"] == 4 * map_bytes
    assert all(r["gbps"] == pytest.approx(r["bytes"] / r["seconds"] / 1e9) for r in layers.values())


def test_library_does_not_import_the_command_line():
    code = "import sys, numpyseg.devtools.benchmark; print(any(m.startswith('numpyseg.cli') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "False"


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


def test_benchmark_rejects_bad_options(capsys, tmp_path):
    assert main(["benchmark", "--size", "30", "--no-torch"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert main(["benchmark", "--repeats", "0", "--no-torch"]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert main(["benchmark", "--batches", "0", "--no-torch"]) == 2
    assert "--batches" in capsys.readouterr().err
    kept = tmp_path / "earlier.json"
    kept.write_text("{}")
    assert main(["benchmark", "--quick", "--json", str(kept)]) == 2
    assert "already exists" in capsys.readouterr().err and kept.read_text() == "{}"
