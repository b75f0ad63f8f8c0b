"""Speed and memory benchmark: numpyseg's SA-UNetv2 against the same network in PyTorch.

What is measured, all in one run so that every figure shares the machine's load:

- inference: one forward pass of a (1, S, S, 3) image, eval mode, under no_grad();
- a training step: forward, BCE + MCC loss, backward, Adam update (batch 1 and 4);
- for each figure the PyTorch twin (numpyseg.models.torch_reference) with the same
  weights and thread count, timed *alternately* with numpyseg (numpyseg, torch,
  numpyseg, torch, ...), so a neighbour's burst of work slows both, and the ratio
  numpyseg / PyTorch stays meaningful on a shared machine; medians are reported;
- the first call (numba compiles its kernels, or loads them from its disk cache)
  separately from the repeated calls;
- the peak resident memory (ru_maxrss) of a fresh process doing one inference;
- the start-up time of a fresh process (import, build, first small forward), twice:
  the second run finds every kernel in numba's cache;
- time per layer type (conv, transposed conv, norm, attention, ...), by
  temporarily wrapping each layer class's forward/backward with a timer
  (`layer_profile`); time spent in a nested layer is charged to that layer only.

Programmatic use: `run_benchmark(...)` returns a dict (what `--json` writes);
`format_report(results)` turns it into the table `numpyseg benchmark` prints.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from statistics import median

import numpy as np

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
    patched = []
    for name, cls in _layer_classes().items():
        for direction in ("forward", "backward"):
            own = cls.__dict__.get(direction)
            original = getattr(cls, direction)
            patched.append((cls, direction, own))
            setattr(cls, direction, profile.timed(CATEGORIES[name], direction, original))
    try:
        yield profile
    finally:
        for cls, direction, own in reversed(patched):
            if own is None:
                delattr(cls, direction)  # the method was inherited: uncover it again
            else:
                setattr(cls, direction, own)


# -------------------------------------------------------------- the workload
def _inputs(batch: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    # a thin-vessel-like target: about 12 % positives, as in DRIVE
    y = (rng.random((batch, size, size, 1)) < 0.12).astype(np.float32)
    return x, y


class NumpysegRunner:
    """The numpyseg side: one model, its optimiser, and the three workloads."""

    def __init__(self, size: int, seed: int = 0):
        from numpyseg.models import SAUNetV2
        from numpyseg.optim import Adam

        # no dL/d(image), as in training (and as PyTorch, whose input has no requires_grad)
        self.model = SAUNetV2(seed=seed, input_grad=False)
        self.optimizer = Adam(self.model.named_parameters(), lr=1e-3)
        self.size = size

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


class TorchRunner:
    """The PyTorch twin of the same model (same weights), NCHW, with torch's Adam."""

    def __init__(self, numpy_model, threads: int):
        import torch

        from numpyseg.models.torch_reference import torch_twin

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = torch_twin(numpy_model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, eps=1e-7)

    def _tensor(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))

    def inference(self, x):
        self.model.eval()
        with self.torch.no_grad():
            return self.model(self._tensor(x))

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


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def _figure(ours: list[float], theirs: list[float] | None) -> dict:
    result = {"numpyseg": {"median": median(ours), "times": ours}}
    if theirs:
        result["torch"] = {"median": median(theirs), "times": theirs}
        result["ratio"] = median(ours) / median(theirs)
    return result


# ------------------------------------------------------- fresh subprocesses
_MEMORY_SNIPPET = r"""
import resource, sys, numpy as np
size, side = int(sys.argv[1]), sys.argv[2]
from numpyseg.models import SAUNetV2
model = SAUNetV2().eval()
x = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
if side == "torch":
    import torch
    from numpyseg.models.torch_reference import torch_twin
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

    from numpyseg.layers.conv import conv2d_backward, conv2d_forward

    threads = threads or numba.get_num_threads()
    torch = _import_torch(use_torch, threads)
    rng = np.random.default_rng(0)
    rows = []
    for size, c_in, c_out, k in shapes:
        size = max(k, int(round(size * scale)))
        x = rng.standard_normal((1, size, size, c_in)).astype(np.float32)
        w = (rng.standard_normal((k, k, c_in, c_out)) * 0.1).astype(np.float32)
        b = np.zeros(c_out, np.float32)
        g = rng.standard_normal((1, size, size, c_out)).astype(np.float32)
        _, cache = conv2d_forward(x, w, b)
        conv2d_backward(g, cache)  # compile / warm up
        times = {"fwd": [], "bwd": [], "torch_fwd": [], "torch_bwd": []}
        if torch is not None:
            tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
            tw = torch.tensor(w.transpose(3, 2, 0, 1), requires_grad=True)
            tb = torch.tensor(b, requires_grad=True)
            tg = torch.tensor(g.transpose(0, 3, 1, 2))
            conv = torch.nn.functional.conv2d
        for _ in range(repeats):
            times["fwd"].append(_timed(conv2d_forward, x, w, b))
            times["bwd"].append(_timed(conv2d_backward, g, cache))
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

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "torch": torch.__version__ if torch else None,
            "load_average_before": _load()}


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return None


def run_benchmark(size: int = 592, repeats: int = 5, batches=(1, 4), use_torch: bool = True,
                  threads: int | None = None, memory: bool = True, startup: bool = True,
                  profile: bool = True, log=print) -> dict:
    """Run every measurement described in the module docstring; return the results dict.

    Args:
        size: image height and width (a multiple of 8).
        repeats: timed repetitions per figure (after one warm-up call).
        batches: batch sizes of the training-step figures.
        use_torch: also time the PyTorch twin when torch is installed.
        threads: numba (and torch) threads; default: numba's current setting.
        memory, startup, profile: include the subprocess memory / start-up
            measurements and the per-layer-type split.
        log: progress messages (None: silent).
    """
    import numba

    if size % 8:
        raise ValueError(f"size must be a multiple of 8 (three 2x2 poolings), got {size}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if threads:
        numba.set_num_threads(threads)
    threads = numba.get_num_threads()
    log = log or (lambda *a: None)
    torch = _import_torch(use_torch, threads)
    results = {"config": {"size": size, "repeats": repeats, "batches": list(batches),
                          "torch": torch is not None},
               "machine": _machine(threads, torch)}

    ours = NumpysegRunner(size)
    theirs = TorchRunner(ours.model, threads) if torch is not None else None

    # ---- first calls: numba compiles (or loads its cache), torch warms up
    x1, y1 = _inputs(1, size)
    log("warm-up (numba compilation or cache load) ...")
    first = {"inference": _timed(ours.inference, x1)}
    first["train_step"] = _timed(ours.train_step, x1, y1)
    first["inference_again"] = _timed(ours.inference, x1)
    results["first_call"] = first
    if theirs is not None:
        theirs.inference(x1)
        theirs.train_step(x1, y1)

    # ---- inference, alternating
    log(f"inference {size}x{size}, {repeats} repeats ...")
    a, b = [], []
    for _ in range(repeats):
        a.append(_timed(ours.inference, x1))
        if theirs is not None:
            b.append(_timed(theirs.inference, x1))
    results["inference"] = _figure(a, b)

    # ---- training steps, alternating
    for batch in batches:
        log(f"training step, batch {batch}, {repeats} repeats ...")
        xb, yb = _inputs(batch, size, seed=batch)
        ours.train_step(xb, yb)  # warm-up at this batch size
        if theirs is not None:
            theirs.train_step(xb, yb)
        a, b = [], []
        for _ in range(repeats):
            a.append(_timed(ours.train_step, xb, yb))
            if theirs is not None:
                b.append(_timed(theirs.train_step, xb, yb))
        results[f"train_step_b{batch}"] = _figure(a, b)

    # ---- where the time goes
    if profile:
        log("per-layer-type profile ...")
        with layer_profile() as prof:
            ours.inference(x1)
        results["profile_inference"] = prof.as_dict()
        with layer_profile() as prof:
            ours.train_step(x1, y1, profile=prof)
        results["profile_train_step"] = prof.as_dict()

    # ---- fresh processes
    if memory:
        log("peak memory of one inference in a fresh process ...")
        mem = {"numpyseg": peak_memory_mb(size, "numpyseg", threads)}
        if torch is not None:
            mem["torch"] = peak_memory_mb(size, "torch", threads)
            mem["ratio"] = mem["numpyseg"] / mem["torch"]
        results["memory_mb"] = mem
    if startup:
        log("start-up time of a fresh process (twice) ...")
        results["startup"] = startup_seconds()
    results["machine"]["load_average_after"] = _load()
    return results


def _seconds(value: float) -> str:
    return f"{value:8.3f} s" if value >= 0.1 else f"{value * 1e3:7.1f} ms"


def format_report(results: dict) -> str:
    """The results dict as a readable table."""
    cfg, mach = results["config"], results["machine"]
    size = cfg["size"]
    has_torch = cfg["torch"]
    lines = [f"numpyseg benchmark: SA-UNetv2 at {size}x{size}, {mach['threads']} threads, "
             f"median of {cfg['repeats']}",
             f"machine: {mach['cpu']}, {mach['cores']} cores; numpy {mach['numpy']}, "
             f"numba {mach['numba']}" + (f", torch {mach['torch']}" if has_torch else ", torch absent"),
             f"load average: {mach['load_average_before']} before, {mach.get('load_average_after')} after",
             ""]
    header = f"{'figure':<34}{'numpyseg':>12}" + (f"{'PyTorch':>12}{'ratio':>8}" if has_torch else "")
    lines += [header, "-" * len(header)]

    def row(label, figure):
        text = f"{label:<34}{_seconds(figure['numpyseg']['median']):>12}"
        if "torch" in figure:
            text += f"{_seconds(figure['torch']['median']):>12}{figure['ratio']:>8.2f}"
        return text

    lines.append(row("inference (batch 1)", results["inference"]))
    for batch in cfg["batches"]:
        lines.append(row(f"training step (batch {batch})", results[f"train_step_b{batch}"]))
    if "memory_mb" in results:
        mem = results["memory_mb"]
        text = f"{'peak memory, one inference':<34}{mem['numpyseg']:>9.0f} MB"
        if "torch" in mem:
            text += f"{mem['torch']:>9.0f} MB{mem['ratio']:>8.2f}"
        lines.append(text)
    lines.append("")
    first = results["first_call"]
    lines.append(f"first inference (compile or load numba cache): {_seconds(first['inference']).strip()}, "
                 f"first training step: {_seconds(first['train_step']).strip()}")
    if "startup" in results:
        s = results["startup"]
        for key, label in (("first_process", "fresh process #1"), ("second_process", "fresh process #2")):
            r = s[key]
            lines.append(f"{label}: import {r['import']:.2f} s, build + first 64x64 forward "
                         f"{r['first_forward']:.2f} s, whole process {r['process']:.2f} s")
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


def main(argv=None) -> int:
    """Command-line entry (also `numpyseg benchmark`)."""
    import argparse

    from numpyseg.cli import benchmark as cli

    parser = argparse.ArgumentParser(prog="numpyseg-benchmark", description=cli.HELP)
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def write_json(results: dict, path: str) -> None:
    """Write the results dict (from run_benchmark or conv_benchmark) as indented JSON."""
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
