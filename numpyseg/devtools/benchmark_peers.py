"""The engines a user would otherwise pick, running the same network with the same weights.

All start from the PyTorch twin of the numpyseg model (numpyseg.interop.torch_reference),
each set up as its own users would:

- PyTorch eager, NCHW (its default memory layout), `torch.set_num_threads(threads)`;
- PyTorch eager, channels_last: the same model with NHWC strides, which lets PyTorch's
  CPU convolutions (oneDNN) skip their layout conversions;
- ONNX Runtime: the twin exported to ONNX (`torch.onnx.export`, the dynamo exporter,
  which needs onnxscript), CPU provider, graph optimisations ORT_ENABLE_ALL,
  `threads` intra-op threads;
- OpenVINO: the same ONNX file on the CPU plugin, performance hint LATENCY, inference
  precision f32 (so no bf16 on CPUs that have it), `threads` inference threads.

ONNX Runtime and OpenVINO also report back the settings they run with (`settings()`),
which the benchmark keeps with their figures.

Every inference peer takes numpyseg's input, a (N, H, W, C) float32 image, and returns
(N, H, W, 1) logits; converting layouts is part of its time, as it is for its users.
Before anything is timed, each peer's logits are compared with numpyseg's
(`relative_error`); a peer that differs by MAX_RELATIVE_ERROR or more is not timed.

ONNX Runtime and OpenVINO are an optional extra (`pip install numpyseg[bench]`);
`inference_peers` reports a missing one as NOT_INSTALLED instead of failing.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np

MAX_RELATIVE_ERROR = 1e-4
NOT_INSTALLED = "not installed (pip install numpyseg[bench])"
TORCH_NOT_INSTALLED = "not installed (pip install numpyseg[parity])"
PEER_NAMES = ("PyTorch", "PyTorch channels_last", "ONNX Runtime", "OpenVINO")


def relative_error(theirs: np.ndarray, ours: np.ndarray) -> float:
    """max |theirs - ours| / max |ours|: the worst difference, relative to the largest logit."""
    ours = np.asarray(ours, np.float64)
    return float(np.max(np.abs(np.asarray(theirs, np.float64) - ours)) / max(np.max(np.abs(ours)), 1e-30))


def installed(*modules: str) -> bool:
    """Whether every module can be imported (checked without importing it)."""
    return all(importlib.util.find_spec(name) is not None for name in modules)


def nchw(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> a contiguous (N, C, H, W) copy."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ------------------------------------------------------------------ PyTorch
class TorchRunner:
    """The PyTorch twin of the same model (same weights), NCHW, with torch's Adam.

    Inference and the training step (forward, 0.5 BCE + 0.5 MCC, backward, Adam).
    """

    name = "PyTorch"

    def __init__(self, numpy_model, threads: int):
        import torch

        from numpyseg.interop.torch_reference import torch_twin

        from numpyseg.interop.torch_reference import TorchDropBlock

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = torch_twin(numpy_model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, eps=1e-7)
        self.dropblock_rates = {m: m.rate for m in self.model.modules() if isinstance(m, TorchDropBlock)}

    def _tensor(self, a):
        return self.torch.from_numpy(nchw(a))

    def inference(self, x):
        self.model.eval()
        with self.torch.no_grad():
            return self.model(self._tensor(x))

    def logits(self, x) -> np.ndarray:
        """Inference as a (N, H, W, 1) numpy array."""
        return self.inference(x).permute(0, 2, 3, 1).numpy()

    def set_dropblock(self, on: bool) -> None:
        """Switch every DropBlock of the twin on (the model's rate) or off (rate 0)."""
        for module, rate in self.dropblock_rates.items():
            module.rate = rate if on else 0.0

    def train_step(self, x, y):
        torch = self.torch
        self.model.train()
        z = self.model(self._tensor(x))
        t = self._tensor(y)
        # 0.5 * BCE (from the logits) + 0.5 * (1 - soft MCC), as numpyseg.losses.bce_mcc_loss
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z, t)
        p = torch.sigmoid(z)
        tp, tn = (p * t).sum(), ((1 - p) * (1 - t)).sum()
        fp, fn = (p * (1 - t)).sum(), ((1 - p) * t).sum()
        mcc = (tp * tn - fp * fn) / (torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) + 1e-7)
        loss = 0.5 * bce + 0.5 * (1 - mcc)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


class TorchChannelsLastPeer:
    """PyTorch eager inference in the channels_last memory format (a copy of the twin)."""

    name = "PyTorch channels_last"

    def __init__(self, twin):
        import torch

        self.torch = torch
        self.model = copy.deepcopy(twin).eval().to(memory_format=torch.channels_last)

    def logits(self, x) -> np.ndarray:
        # NHWC data seen as NCHW has exactly channels_last strides: no copy needed
        image = self.torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        with self.torch.no_grad():
            return self.model(image).permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------- ONNX
def export_onnx(twin, size: int, path: Path) -> Path:
    """Write the twin as an ONNX model for a (1, 3, size, size) input, weights inside the file.

    Uses torch.onnx.export with the dynamo exporter (PyTorch's default, needs onnxscript).
    Its progress messages and warnings are silenced: the benchmark prints its own.
    Returns:
        path.
    """
    import torch

    image = torch.zeros(1, twin.enc1.block1.conv.in_channels, size, size)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(twin.eval(), (image,), str(path), dynamo=True, external_data=False,
                              input_names=["image"], output_names=["logits"], verbose=False)
    finally:
        exporter_log.setLevel(level)
    return Path(path)


class OnnxRuntimePeer:
    """ONNX Runtime on the CPU: ORT_ENABLE_ALL graph optimisations, `threads` intra-op threads."""

    name = "ONNX Runtime"

    def __init__(self, onnx_path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one graph branch at a time, as numpyseg
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def logits(self, x) -> np.ndarray:
        return self.session.run(None, {self.input: nchw(x)})[0].transpose(0, 2, 3, 1)

    def settings(self) -> dict:
        """The settings as the session reports them back (not as they were asked for)."""
        options = self.session.get_session_options()
        return {"graph_optimization_level": options.graph_optimization_level.name,
                "intra_op_threads": options.intra_op_num_threads,
                "providers": self.session.get_providers()}


class OpenVinoPeer:
    """OpenVINO's CPU plugin: LATENCY hint, float32 inference precision, `threads` threads."""

    name = "OpenVINO"

    def __init__(self, onnx_path: Path, threads: int):
        import openvino as ov

        hint = ov.properties.hint
        config = {hint.performance_mode: hint.PerformanceMode.LATENCY,
                  hint.inference_precision: ov.Type.f32,
                  ov.properties.inference_num_threads: threads}
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def logits(self, x) -> np.ndarray:
        result = self.request.infer({0: nchw(x)})
        return result[self.compiled.output(0)].transpose(0, 2, 3, 1)

    def settings(self) -> dict:
        """The settings as the compiled model reports them back (not as they were asked for)."""
        import openvino as ov

        hint = ov.properties.hint
        return {"performance_hint": str(self.compiled.get_property(hint.performance_mode)),
                "inference_precision": self.compiled.get_property(hint.inference_precision).get_type_name(),
                "threads": self.compiled.get_property(ov.properties.inference_num_threads)}


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def inference_peers(twin, size: int, threads: int, folder: Path) -> tuple[list, dict[str, str]]:
    """Build every inference peer that can run here.

    Args:
        twin: the PyTorch twin (numpyseg.interop.torch_reference.torch_twin).
        size: the image side the ONNX model is exported for.
        threads: threads each engine may use.
        folder: where the ONNX file is written (a temporary folder of the run).
    Returns:
        (peers, unavailable): peers have `name` and `logits(x)`; unavailable maps the
        name of each peer that cannot run to the reason, e.g. NOT_INSTALLED.
    """
    peers, unavailable = [TorchChannelsLastPeer(twin)], {}
    wanted = {"ONNX Runtime": (OnnxRuntimePeer, "onnxruntime"), "OpenVINO": (OpenVinoPeer, "openvino")}
    runnable = {name: spec for name, spec in wanted.items() if installed(spec[1])}
    unavailable.update({name: NOT_INSTALLED for name in wanted if name not in runnable})
    if not runnable:
        return peers, unavailable
    if not installed("onnx", "onnxscript"):
        unavailable.update({name: NOT_INSTALLED + " (the ONNX export needs onnx and onnxscript)"
                            for name in runnable})
        return peers, unavailable
    try:
        onnx_path = export_onnx(twin, size, Path(folder) / "sa_unetv2.onnx")
    except Exception as error:  # noqa: BLE001 - any exporter failure is reported, not raised
        unavailable.update({name: f"ONNX export failed ({_one_line(error)})" for name in runnable})
        return peers, unavailable
    for name, (cls, _) in runnable.items():
        try:
            peers.append(cls(onnx_path, threads))
        except Exception as error:  # noqa: BLE001 - an engine that cannot load the model is reported
            unavailable[name] = f"could not load the ONNX model ({_one_line(error)})"
    return peers, unavailable
