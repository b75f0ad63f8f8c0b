"""Speed and memory benchmark: numpyseg's SA-UNetv2 against the engines a user would otherwise pick.

What is measured, all in one run so that every figure shares the machine's load:

- inference: one forward pass of a (1, S, S, 3) image, eval mode, under no_grad(),
  against each peer of numpyseg.devtools.benchmark_peers (PyTorch eager, NCHW and
  channels_last; ONNX Runtime; OpenVINO), all with the same weights and thread
  count; each peer's logits are first checked against numpyseg's;
- a training step: forward, 0.5 BCE + 0.5 MCC loss, backward, Adam update, at
  batch 1 and 2, with DropBlock off and on, against PyTorch eager;
- every figure timed *alternately* (numpyseg, peer 1, peer 2, ..., numpyseg, ...),
  so a neighbour's burst of work slows all of them, and the ratios numpyseg / peer
  stay meaningful on a shared machine; medians of the repeats after a warm-up;
- the first call (numba compiles its kernels, or loads them from its disk cache)
  separately from the repeated calls;
- the peak resident memory (ru_maxrss) of a fresh process doing one inference;
- the start-up time of a fresh process (import, build, first small forward), twice:
  the second run finds every kernel in numba's cache;
- time per layer type (conv, transposed conv, norm, attention, ...), by
  temporarily wrapping each layer class's forward/backward with a timer
  (`layer_profile`); time spent in a nested layer is charged to that layer only;
- the machine's yardsticks (numpyseg.devtools.roofline): instruction set, register-tile
  variant, sgemm GFLOP/s, the model's FLOPs, the convolutions' GFLOP/s per direction
  as a fraction of sgemm's, and the GB/s of the memory-bound layers.

Programmatic use: `run_benchmark(...)` returns a dict (what `--json` writes);
`format_report(results)` turns it into the text `numpyseg benchmark` prints.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from statistics import median

import numpy as np

from numpyseg.devtools import roofline
from numpyseg.devtools.benchmark_peers import (MAX_RELATIVE_ERROR, PEER_NAMES, TORCH_NOT_INSTALLED, TorchRunner,
                                      inference_peers, relative_error)
from numpyseg.errors import ConfigError
from numpyseg.devtools.instrument import wrapped_methods
from numpyseg.devtools.roofline import seconds as _timed

# layer class name -> the category its time is charged to
CATEGORIES = {
    "Conv2d": "conv",
    "ConvTranspose2d": "transposed conv",
    "GroupNorm": "norm",
    "GroupNormSiLU": "norm + activation",
    "BatchNorm2d": "norm",
    "SpatialAttention": "attention",
    "CrossScaleSpatialAttention": "attention",
    "MaxPool2d": "pooling",
    "SiLU": "activation",
    "ReLU": "activation",
    "Sigmoid": "activation",
    "DropBlock2d": "dropblock",
    "Concat": "concat",
}
CATEGORY_ORDER = ["conv", "transposed conv", "norm + activation", "norm", "attention", "pooling", "activation",
                  "dropblock", "concat", "loss", "optimiser", "other"]


# ---------------------------------------------------------------- profiling
def _layer_classes() -> dict[str, type]:
    """Every Module subclass defined in numpyseg.layers, by class name."""
    import numpyseg.layers  # noqa: F401  (imports every layer module)
    from numpyseg.layers.module import Module

    found, todo = {}, [Module]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("numpyseg.layers") and sub.__name__ in CATEGORIES:
                found[sub.__name__] = sub
    return found


class LayerProfile:
    """Seconds spent per category and direction: `seconds[category][direction]`."""

    def __init__(self):
        self.seconds: dict[str, dict[str, float]] = {}
        self._stack: list[float] = []  # time spent in nested timed calls, per open call

    def add(self, category: str, direction: str, seconds: float) -> None:
        slot = self.seconds.setdefault(category, {"forward": 0.0, "backward": 0.0})
        slot[direction] += seconds

    def timed(self, category: str, direction: str, function):
        """Wrap `function` so its exclusive time is charged to (category, direction)."""
        def wrapper(*args, **kwargs):
            self._stack.append(0.0)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                nested = self._stack.pop()
                self.add(category, direction, elapsed - nested)
                if self._stack:
                    self._stack[-1] += elapsed
        return wrapper

    def total(self) -> float:
        return sum(v["forward"] + v["backward"] for v in self.seconds.values())

    def as_dict(self) -> dict:
        ordered = sorted(self.seconds, key=lambda c: CATEGORY_ORDER.index(c)
                         if c in CATEGORY_ORDER else len(CATEGORY_ORDER))
        return {c: dict(self.seconds[c]) for c in ordered}


@contextmanager
def layer_profile():
    """Time every layer's forward/backward by category while the block runs.

    >>> with layer_profile() as prof:
    ...     model(x)
    >>> prof.as_dict()   # {'conv': {'forward': 0.08, 'backward': 0.0}, ...}

    The layer classes' methods are replaced by timing wrappers and restored on
    exit, so nothing changes outside the block.
    """
    profile = LayerProfile()
    targets = [(cls, direction, lambda original, c=CATEGORIES[name], d=direction: profile.timed(c, d, original))
               for name, cls in _layer_classes().items() for direction in ("forward", "backward")]
    with wrapped_methods(targets):
        yield profile


# -------------------------------------------------------------- the workload
def _inputs(batch: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    # a thin-vessel-like target: about 12 % positives, as in DRIVE
    y = (rng.random((batch, size, size, 1)) < 0.12).astype(np.float32)
    return x, y


class NumpysegRunner:
    """The numpyseg side: one model, its optimiser, inference and the training step."""

    def __init__(self, size: int, seed: int = 0):
        from numpyseg.models import SAUNetV2
        from numpyseg.optim import Adam

        # no dL/d(image), as in training (and as PyTorch, whose input has no requires_grad)
        from numpyseg.layers import DropBlock2d

        self.model = SAUNetV2(seed=seed, input_grad=False)
        self.optimizer = Adam(self.model.named_parameters(), lr=1e-3)
        self.size = size
        self.dropblock_rates = {m: m.rate for _, m in self.model.named_modules() if isinstance(m, DropBlock2d)}

    def set_dropblock(self, on: bool) -> None:
        """Switch every DropBlock of the model on (the model's rate) or off (rate 0)."""
        for module, rate in self.dropblock_rates.items():
            module.rate = rate if on else 0.0

    def inference(self, x):
        from numpyseg.layers.module import no_grad

        self.model.eval()
        with no_grad():
            return self.model(x)

    def train_step(self, x, y, profile: LayerProfile | None = None):
        from numpyseg.losses import bce_mcc_loss

        model, opt = self.model, self.optimizer
        model.train()
        logits = model(x)
        start = time.perf_counter()
        value, dlogits = bce_mcc_loss(logits, y)
        if profile is not None:
            profile.add("loss", "forward", time.perf_counter() - start)
        opt.zero_grad()
        model.backward(dlogits)
        start = time.perf_counter()
        opt.step()
        if profile is not None:
            profile.add("optimiser", "backward", time.perf_counter() - start)
        return value


# ------------------------------------------------------- fresh subprocesses
_MEMORY_SNIPPET = r"""
import resource, sys, numpy as np
size, side = int(sys.argv[1]), sys.argv[2]
from numpyseg.models import SAUNetV2
model = SAUNetV2().eval()
x = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
if side == "torch":
    import torch
    from numpyseg.interop.torch_reference import torch_twin
    torch.set_num_threads(int(sys.argv[3]))
    twin = torch_twin(model).eval()
    del model
    with torch.no_grad():
        twin(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
else:
    import numba
    numba.set_num_threads(int(sys.argv[3]))
    from numpyseg.layers.module import no_grad
    with no_grad():
        model(x)
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    # Linux: ru_maxrss survives exec(), so a child forked from a big parent would
    # report the parent's size; VmHWM is this process's own high-water mark.
    with open("/proc/self/status") as f:
        peak_kb = int(next(line for line in f if line.startswith("VmHWM")).split()[1])
except (OSError, StopIteration):
    pass
print(peak_kb)
"""

_STARTUP_SNIPPET = r"""
import time
start = time.perf_counter()
import numpy as np
from numpyseg.models import SAUNetV2
from numpyseg.layers.module import no_grad
imported = time.perf_counter()
model = SAUNetV2().eval()
with no_grad():
    model(np.zeros((1, 64, 64, 3), np.float32))
done = time.perf_counter()
print(imported - start, done - imported)
"""


def _python(snippet: str, *args: str, timeout: float = 600) -> str:
    completed = subprocess.run([sys.executable, "-c", snippet, *map(str, args)],
                               capture_output=True, text=True, timeout=timeout, check=False)
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"benchmark subprocess failed: {last}")
    return completed.stdout.strip().splitlines()[-1]


def peak_memory_mb(size: int, side: str, threads: int) -> float:
    """Peak resident memory (MB) of a fresh process doing one inference."""
    kilobytes = float(_python(_MEMORY_SNIPPET, size, side, threads))
    return kilobytes / 1024.0  # VmHWM and Linux's ru_maxrss are in kB


def startup_seconds() -> dict:
    """A fresh process: import time and build + first 64x64 forward, run twice."""
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        imported, first = map(float, _python(_STARTUP_SNIPPET).split())
        runs.append({"import": imported, "first_forward": first,
                     "process": time.perf_counter() - start})
    return {"first_process": runs[0], "second_process": runs[1]}


# --------------------------------------------------------------- conv shapes
MODEL_CONV_SHAPES = [  # (H = W, C_in, C_out, k) of every Conv2d in SA-UNetv2 at 592x592
    (592, 3, 16, 3), (592, 16, 16, 3), (592, 32, 16, 3),
    (296, 16, 32, 3), (296, 32, 32, 3), (296, 64, 32, 3),
    (148, 32, 48, 3), (148, 48, 48, 3), (148, 96, 48, 3),
    (74, 48, 64, 3), (74, 64, 64, 3),
    (592, 16, 1, 1), (592, 2, 1, 7),
]


def conv_benchmark(shapes=MODEL_CONV_SHAPES, repeats: int = 5, use_torch: bool = True,
                   threads: int | None = None, scale: float = 1.0, log=None) -> list[dict]:
    """Time numpyseg's Conv2d forward and backward against torch.nn.functional.conv2d per shape.

    Args:
        scale: multiply every image side by this (e.g. 0.125 for a quick check).
    Returns:
        one dict per shape: size, c_in, c_out, k, forward/backward medians and ratios.
    """
    import numba

    from numpyseg.layers.conv import conv2d_backward_fast, conv2d_forward_fast

    threads = threads or numba.get_num_threads()
    torch = _import_torch(use_torch, threads)
    if log:
        side = max(shapes[0][3], int(round(shapes[0][0] * scale)))
        log(f"Conv2d shapes of SA-UNetv2 (scaled by {scale:.3g}: {side}x{side} for the first), "
            f"{threads} threads, median of {repeats}; load average {_load()}")
    rng = np.random.default_rng(0)
    rows = []
    for size, c_in, c_out, k in shapes:
        size = max(k, int(round(size * scale)))
        x = rng.standard_normal((1, size, size, c_in)).astype(np.float32)
        w = (rng.standard_normal((k, k, c_in, c_out)) * 0.1).astype(np.float32)
        b = np.zeros(c_out, np.float32)
        g = rng.standard_normal((1, size, size, c_out)).astype(np.float32)
        _, cache = conv2d_forward_fast(x, w, b)
        conv2d_backward_fast(g, cache)  # compile / warm up
        times = {"fwd": [], "bwd": [], "torch_fwd": [], "torch_bwd": []}
        if torch is not None:
            tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
            tw = torch.tensor(w.transpose(3, 2, 0, 1), requires_grad=True)
            tb = torch.tensor(b, requires_grad=True)
            tg = torch.tensor(g.transpose(0, 3, 1, 2))
            conv = torch.nn.functional.conv2d
        for _ in range(repeats):
            times["fwd"].append(_timed(conv2d_forward_fast, x, w, b))
            times["bwd"].append(_timed(conv2d_backward_fast, g, cache))
            if torch is not None:
                with torch.no_grad():
                    times["torch_fwd"].append(_timed(conv, tx, tw, tb, 1, k // 2))
                out = conv(tx, tw, tb, 1, k // 2)
                times["torch_bwd"].append(_timed(out.backward, tg))
                tx.grad = tw.grad = tb.grad = None
        row = {"size": size, "c_in": c_in, "c_out": c_out, "k": k,
               "forward": median(times["fwd"]), "backward": median(times["bwd"])}
        if torch is not None:
            row.update(torch_forward=median(times["torch_fwd"]), torch_backward=median(times["torch_bwd"]))
            row.update(forward_ratio=row["forward"] / row["torch_forward"],
                       backward_ratio=row["backward"] / row["torch_backward"])
        rows.append(row)
        if log:
            log(_conv_row(row))
    return rows


def _conv_row(row: dict) -> str:
    text = (f"{row['size']:>4}x{row['size']:<4} {row['c_in']:>3} -> {row['c_out']:<3} k{row['k']}  "
            f"fwd {row['forward'] * 1e3:7.2f} ms")
    if "torch_forward" in row:
        text += f" (torch {row['torch_forward'] * 1e3:6.2f}, x{row['forward_ratio']:.2f})"
    text += f"   bwd {row['backward'] * 1e3:7.2f} ms"
    if "torch_backward" in row:
        text += f" (torch {row['torch_backward'] * 1e3:6.2f}, x{row['backward_ratio']:.2f})"
    return text


# --------------------------------------------------------------------- main
def _import_torch(use_torch: bool, threads: int):
    if not use_torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def _machine(threads: int, torch) -> dict:
    import numba

    from numpyseg.kernels.tiles import cpu_model

    return {"cpu": cpu_model(), "llvm_cpu": roofline.cpu_name(), "instruction_set": roofline.instruction_set(),
            "tile_variant": roofline.tile_variant(), "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "torch": torch.__version__ if torch else None,
            "load_average_before": _load()}


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return None


def check_options(size: int, repeats: int, batches, threads: int | None) -> None:
    """Raise ConfigError (one line naming the option) for a value the benchmark cannot use."""
    if size < 8 or size % 8:
        raise ConfigError(f"--size must be a positive multiple of 8 (three 2x2 poolings), got {size}")
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    if not batches or min(batches) < 1:
        raise ConfigError(f"--batches must be positive batch sizes, got {list(batches)}")


def _alternate(runners: dict, args: tuple, repeats: int) -> dict[str, list[float]]:
    """Time each runner `repeats` times, taking turns: {name: [seconds, ...]}."""
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, function in runners.items():
            times[name].append(_timed(function, *args))
    return times


def _figure(times: dict[str, list[float]], unavailable: dict[str, str], errors: dict[str, float]) -> dict:
    """One figure: numpyseg's median and each peer's median, ratio, parity error or reason."""
    ours = times.pop("numpyseg")
    figure = {"numpyseg": {"median": median(ours), "times": ours}, "peers": {}}
    for name, theirs in times.items():
        figure["peers"][name] = {"median": median(theirs), "times": theirs,
                                 "ratio": median(ours) / median(theirs)}
        if name in errors:
            figure["peers"][name]["relative_error"] = errors[name]
    for name, reason in unavailable.items():
        figure["peers"][name] = {"status": reason}
        if name in errors:
            figure["peers"][name]["relative_error"] = errors[name]
    return figure


def _checked_peers(candidates: list, reference: np.ndarray, x: np.ndarray):
    """Each peer's relative error against numpyseg's logits; only peers under MAX_RELATIVE_ERROR are kept.

    Returns:
        (kept peers, {name: relative error}, {name: reason} for the peers left out).
    """
    kept, errors, rejected = [], {}, {}
    for peer in candidates:
        errors[peer.name] = relative_error(peer.logits(x), reference)
        if errors[peer.name] < MAX_RELATIVE_ERROR:
            peer.logits(x)  # warm-up after the check
            kept.append(peer)
        else:
            rejected[peer.name] = (f"output differs from numpyseg's (relative error "
                                   f"{errors[peer.name]:.1e} >= {MAX_RELATIVE_ERROR:.0e}): not timed")
    return kept, errors, rejected


def _inference_figure(ours, theirs, x, size: int, threads: int, repeats: int, log,
                      no_torch: str = TORCH_NOT_INSTALLED) -> dict:
    """Inference of numpyseg against every peer that runs here (see numpyseg.devtools.benchmark_peers).

    no_torch: what the table says for each peer when `theirs` is None (every peer needs PyTorch).
    """
    reference = ours.inference(x)
    with tempfile.TemporaryDirectory(prefix="numpyseg-benchmark-") as folder:
        if theirs is None:
            candidates, unavailable = [], {name: no_torch for name in PEER_NAMES}
        else:
            log("exporting the PyTorch twin to ONNX and loading the peers ...")
            others, unavailable = inference_peers(theirs.model, size, threads, Path(folder))
            candidates = [theirs] + others
        kept, errors, rejected = _checked_peers(candidates, reference, x)
        unavailable.update(rejected)
        runners = {"numpyseg": ours.inference}
        runners.update({peer.name: peer.logits for peer in kept})
        log(f"inference {size}x{size}, {repeats} repeats, alternately: {', '.join(runners)} ...")
        times = _alternate(runners, (x,), repeats)
    figure = _figure(times, unavailable, errors)
    for peer in kept:
        if hasattr(peer, "settings"):
            figure["peers"][peer.name]["settings"] = peer.settings()
    return figure


def _training_figures(ours, theirs, size: int, batches, repeats: int, log,
                      no_torch: str = TORCH_NOT_INSTALLED) -> list[dict]:
    """Training steps of numpyseg and PyTorch eager, per batch size, DropBlock off then on."""
    figures = []
    for batch in batches:
        xb, yb = _inputs(batch, size, seed=batch)
        for dropblock in (False, True):
            log(f"training step, batch {batch}, DropBlock {'on' if dropblock else 'off'}, "
                f"{repeats} repeats ...")
            runners = {"numpyseg": ours.train_step}
            ours.set_dropblock(dropblock)
            if theirs is not None:
                theirs.set_dropblock(dropblock)
                runners["PyTorch"] = theirs.train_step
            for function in runners.values():
                function(xb, yb)  # warm-up at this batch size
            unavailable = {} if theirs is not None else {"PyTorch": no_torch}
            figure = _figure(_alternate(runners, (xb, yb), repeats), unavailable, {})
            figures.append({"batch": batch, "dropblock": dropblock, **figure})
    ours.set_dropblock(True)
    if theirs is not None:
        theirs.set_dropblock(True)
    return figures


def machine_figures(model, size: int, threads: int, repeats: int, sgemm_size: int = 2048) -> dict:
    """The yardsticks of numpyseg.devtools.roofline, measured now: sgemm, FLOPs, conv GFLOP/s, GB/s.

    sgemm runs last: after a product, the BLAS's threads keep spinning for a moment,
    waiting for more work, and would take the cores from the kernels timed next.
    """
    flops_592 = roofline.forward_flops(model, 592)
    flops_run = flops_592 if size == 592 else roofline.forward_flops(model, size)
    figures = {"gflop_592": flops_592["total"] / 1e9, "gflop_592_by_layer": {
                   name: value / 1e9 for name, value in flops_592["by_layer"].items()},
               "authors_gflop_592": roofline.AUTHORS_GFLOPS_592,
               "gflop_run": flops_run["total"] / 1e9,
               "conv": roofline.conv_throughput(scale=size / 592, repeats=repeats),
               "memory_bound": roofline.memory_bound_throughput(size, repeats=repeats)}
    figures["sgemm"] = roofline.sgemm_gflops(threads, n=sgemm_size, repeats=repeats)
    return figures


def run_benchmark(size: int = 592, repeats: int = 5, batches=(1, 2), use_torch: bool = True,
                  threads: int | None = None, memory: bool = True, startup: bool = True,
                  profile: bool = True, machine: bool = True, sgemm_size: int = 2048, log=print) -> dict:
    """Run every measurement described in the module docstring; return the results dict.

    Args:
        size: image height and width (a multiple of 8).
        repeats: timed repetitions per figure (after one warm-up call).
        batches: batch sizes of the training-step figures.
        use_torch: also time PyTorch and the engines fed by its ONNX export, when installed.
        threads: numba (and every peer's) threads; default: numba's current setting.
        memory, startup, profile, machine: include the subprocess memory / start-up
            measurements, the per-layer-type split, and the machine's yardsticks.
        sgemm_size: side n of the sgemm yardstick's matrices.
        log: progress messages (None: silent).
    Raises:
        ConfigError: a size, repeat count, batch size or thread count out of range.
    """
    import numba

    check_options(size, repeats, batches, threads)
    if threads:
        numba.set_num_threads(threads)
    threads = numba.get_num_threads()
    log = log or (lambda *a: None)
    torch = _import_torch(use_torch, threads)
    results = {"config": {"size": size, "repeats": repeats, "batches": list(batches),
                          "torch": torch is not None, "max_relative_error": MAX_RELATIVE_ERROR},
               "machine": _machine(threads, torch)}

    ours = NumpysegRunner(size)

    # ---- first calls: numba compiles (or loads its cache)
    x1, y1 = _inputs(1, size)
    log("warm-up (numba compilation or cache load) ...")
    first = {"inference": _timed(ours.inference, x1)}
    first["train_step"] = _timed(ours.train_step, x1, y1)
    first["inference_again"] = _timed(ours.inference, x1)
    results["first_call"] = first
    # the twin copies the weights as they are now, after the warm-up's Adam step
    theirs = TorchRunner(ours.model, threads) if torch is not None else None

    no_torch = TORCH_NOT_INSTALLED if use_torch else "left out (PyTorch not used in this run)"
    results["inference"] = _inference_figure(ours, theirs, x1, size, threads, repeats, log, no_torch)
    results["train_steps"] = _training_figures(ours, theirs, size, batches, repeats, log, no_torch)

    if profile:
        log("per-layer-type profile ...")
        with layer_profile() as prof:
            ours.inference(x1)
        results["profile_inference"] = prof.as_dict()
        with layer_profile() as prof:
            ours.train_step(x1, y1, profile=prof)
        results["profile_train_step"] = prof.as_dict()
    if machine:
        log("the machine's yardsticks: sgemm, FLOPs, convolution GFLOP/s, memory-bound GB/s ...")
        results["roofline"] = machine_figures(ours.model, size, threads, repeats, sgemm_size)
        results["roofline"]["inference_gflops"] = (results["roofline"]["gflop_run"]
                                                   / results["inference"]["numpyseg"]["median"])

    # ---- fresh processes
    if memory:
        log("peak memory of one inference in a fresh process ...")
        mem = {"numpyseg": peak_memory_mb(size, "numpyseg", threads), "peers": {}}
        if torch is not None:
            mb = peak_memory_mb(size, "torch", threads)
            mem["peers"]["PyTorch"] = {"mb": mb, "ratio": mem["numpyseg"] / mb}
        else:
            mem["peers"]["PyTorch"] = {"status": no_torch}
        results["memory_mb"] = mem
    if startup:
        log("start-up time of a fresh process (twice) ...")
        results["startup"] = startup_seconds()
    results["machine"]["load_average_after"] = _load()
    return results


# ------------------------------------------------------------------- report
def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value >= 0.1 else f"{value * 1e3:.1f} ms"


def table_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(figure, numpyseg, peer, numpyseg / peer) for each row of the report's table.

    One row per inference peer, per training step and peer, and for the peak memory;
    a peer that did not run shows why in the peer column and "-" as its ratio.
    """
    rows = []

    def add(label: str, ours: str, peers: dict, value_of) -> None:
        for name in [n for n in PEER_NAMES if n in peers] + [n for n in peers if n not in PEER_NAMES]:
            peer = peers[name]
            if "status" in peer:
                rows.append((f"{label} vs {name}", ours, peer["status"], "-"))
            else:
                rows.append((f"{label} vs {name}", ours, value_of(peer), f"{peer['ratio']:.2f}"))

    inference = results["inference"]
    add("inference, batch 1", _seconds(inference["numpyseg"]["median"]), inference["peers"],
        lambda p: _seconds(p["median"]))
    for step in results["train_steps"]:
        label = f"training step, batch {step['batch']}, DropBlock {'on' if step['dropblock'] else 'off'}"
        add(label, _seconds(step["numpyseg"]["median"]), step["peers"], lambda p: _seconds(p["median"]))
    if "memory_mb" in results:
        mem = results["memory_mb"]
        add("peak memory of one inference (fresh process)", f"{mem['numpyseg']:.0f} MB", mem["peers"],
            lambda p: f"{p['mb']:.0f} MB")
    return rows


def _markdown(header: list[str], rows) -> list[str]:
    """A Markdown table: header, separator, one line per row (cells as given)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _parity_lines(results: dict) -> str:
    """The parity check of each peer, and the settings the engines report back."""
    peers = results["inference"]["peers"]
    checked = [f"{name} {peer['relative_error']:.1e}" for name, peer in peers.items()
               if "relative_error" in peer]
    limit = results["config"]["max_relative_error"]
    lines = ["parity with numpyseg's logits, max |peer - numpyseg| / max |numpyseg| (must be < "
             f"{limit:.0e}): " + (", ".join(checked) if checked else "no peer ran")]
    lines += [f"{name} runs with " + ", ".join(f"{k} {v}" for k, v in peer["settings"].items())
              for name, peer in peers.items() if "settings" in peer]
    return "\n".join(lines)


def format_roofline(results: dict) -> list[str]:
    """The machine's yardsticks as text lines (see numpyseg.devtools.roofline for the formulas)."""
    mach, roof = results["machine"], results["roofline"]
    sgemm = roof["sgemm"]
    size = results["config"]["size"]
    threads = (f"{sgemm['threads']} threads (threadpoolctl)" if sgemm["threads_pinned"]
               else "the BLAS's own thread count (threadpoolctl not installed)")
    gflop, authors = roof["gflop_592"], roof["authors_gflop_592"]
    agree = ("agrees" if round(gflop, 2) == authors
             else f"differs by {100 * (gflop - authors) / authors:+.1f} %")
    lines = [f"instruction set: {mach['instruction_set']} (LLVM CPU {mach['llvm_cpu']}); "
             f"register-tile variant: {mach['tile_variant']}",
             f"sgemm: numpy float32 {sgemm['n']}x{sgemm['n']} matmul, {sgemm['blas']}, {threads}: "
             f"{sgemm['gflops']:.1f} GFLOP/s",
             f"model: {gflop:.2f} GFLOP per 592x592 forward (2 x multiply-adds: convolutions, transposed "
             f"convolutions, attention gates); the authors' count, {authors:.2f} GFLOP, {agree}",
             f"inference at {size}x{size}: {roof['gflop_run']:.3g} GFLOP in "
             f"{_seconds(results['inference']['numpyseg']['median'])}, {roof['inference_gflops']:.1f} GFLOP/s "
             f"({roof['inference_gflops'] / sgemm['gflops']:.0%} of sgemm)",
             "", "3x3 convolutions, GFLOP/s (fraction of sgemm's):"]
    rows = [(f"{r['size']}x{r['size']}", f"{r['c_in']} -> {r['c_out']}",
             *(f"{r[d]:.1f} ({r[d] / sgemm['gflops']:.0%})" for d in ("forward", "input_grad", "weight_grad")))
            for r in roof["conv"]]
    lines += _markdown(["size", "channels", "forward", "input gradient", "weight gradient"], rows)
    lines += ["", f"memory-bound layers, forward on {size}x{size}x16 maps, "
              "GB/s = (bytes read + written) / time:"]
    lines += _markdown(["layer", "MB read + written", "time", "GB/s"],
                       [(r["name"], f"{r['bytes'] / 1e6:.1f}", _seconds(r["seconds"]), f"{r['gbps']:.1f}")
                        for r in roof["memory_bound"]])
    return lines


def format_report(results: dict) -> str:
    """The results dict as readable text: the comparison table, then the details."""
    cfg, mach = results["config"], results["machine"]
    size = cfg["size"]
    lines = [f"numpyseg benchmark: SA-UNetv2 at {size}x{size}, {mach['threads']} threads, "
             f"median of {cfg['repeats']}",
             f"machine: {mach['cpu']}, {mach['cores']} cores; numpy {mach['numpy']}, "
             f"numba {mach['numba']}" + (f", torch {mach['torch']}" if cfg["torch"] else ", torch absent"),
             f"load average: {mach['load_average_before']} before, {mach.get('load_average_after')} after",
             _parity_lines(results), ""]
    lines += _markdown(["figure", "numpyseg", "peer", "numpyseg / peer"], table_rows(results))
    lines.append("")
    first = results["first_call"]
    lines.append(f"first inference (compile or load numba cache): {_seconds(first['inference'])}, "
                 f"first training step: {_seconds(first['train_step'])}")
    if "startup" in results:
        s = results["startup"]
        for key, label in (("first_process", "fresh process #1"), ("second_process", "fresh process #2")):
            r = s[key]
            lines.append(f"{label}: import {r['import']:.2f} s, build + first 64x64 forward "
                         f"{r['first_forward']:.2f} s, whole process {r['process']:.2f} s")
    if "roofline" in results:
        lines += [""] + format_roofline(results)
    for key, title in (("profile_inference", "inference"), ("profile_train_step", "training step, batch 1")):
        if key not in results:
            continue
        prof = results[key]
        total = sum(v["forward"] + v["backward"] for v in prof.values()) or 1.0
        lines += ["", f"time per layer type ({title}):",
                  f"{'layer type':<18}{'forward':>11}{'backward':>11}{'share':>8}"]
        for category, v in sorted(prof.items(), key=lambda kv: -(kv[1]["forward"] + kv[1]["backward"])):
            share = (v["forward"] + v["backward"]) / total
            lines.append(f"{category:<18}{_seconds(v['forward']):>11}{_seconds(v['backward']):>11}"
                         f"{share:>7.0%}")
    return "\n".join(lines)


def check_new_file(path: str | os.PathLike) -> Path:
    """Raise ConfigError if `path` exists: results never replace an existing file."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} already exists: give --json a new file name (results are not "
                          "written over an existing file)")
    return path


def write_json(results: dict, path: str | os.PathLike) -> Path:
    """Write the results dict (from run_benchmark or conv_benchmark) as indented JSON, atomically.

    Raises:
        ConfigError: the file already exists.
    """
    from numpyseg.atomic import atomic_write_bytes

    path = check_new_file(path)
    return atomic_write_bytes(path, json.dumps(results, indent=2).encode("utf-8"))
