"""What this CPU can do, and how much of it numpyseg's layers use.

A timing alone does not say whether code is good: 0.1 s is fast on a laptop and slow
on a server.  This module measures the yardsticks in the same run, on the same threads:

- the instruction set: how wide the CPU's vector registers are (AVX-512: 16 float32
  per instruction, AVX2 and AVX: 8, none: SSE's 4), read from llvmlite, the compiler
  numba uses, so it is what numba compiles for;
- the register-tile variant of numpyseg's convolution kernels in use
  (`numpyseg.kernels.TILE_VARIANT`, "default" when the kernels do not name one);
- sgemm GFLOP/s: numpy's float32 matrix product of two n x n matrices, which costs
  2 n^3 FLOPs (n^3 multiply-adds), done by the BLAS library numpy ships with.  About
  as fast as this CPU multiplies and adds: the "compute roof";
- the FLOPs of the model, from the layer shapes (`forward_flops`), and the
  convolutions' GFLOP/s as a fraction of sgemm's (`conv_throughput`);
- GB/s of the layers that do a few operations per number they read or write
  (`memory_bound_throughput`): for them memory, not arithmetic, is the limit.

FLOPs are counted as 2 x MACs (one multiply-add = one multiply + one add), and a
layer's MACs are

    MACs = (positions where its kernel is applied) x (elements of its weight)

- Conv2d, k x k, stride 1, 'same' (also the 7x7 convolutions inside the attention
  gates): the kernel is applied at every output pixel, N*H*W positions, and has
  k*k*C_in*C_out elements, so MACs = N*H*W * k*k*C_in*C_out;
- ConvTranspose2d, stride 2: every *input* pixel scatters one whole kernel into the
  output, so MACs = N*H_in*W_in * k*k*C_in*C_out (the count TensorFlow's profiler
  uses for Conv2DBackpropInput, the op behind Keras' Conv2DTranspose).

Bias additions, normalisation, activations, pooling and the attention gates'
products are not multiply-adds of a weight and are not counted (they are the
memory-bound layers, measured in GB/s instead).
"""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from statistics import median

import numpy as np

# The authors' count for SA-UNetv2 at 592 x 592, as published with the model (Guo et al.,
# "SA-UNetv2", 2025); printed next to ours for comparison, never used to compute anything.
# Their counting tool is not stated; 2 x MACs by the formula above gives 20.79 GFLOP.
AUTHORS_GFLOPS_592 = 21.19

# One 3x3 convolution per resolution of SA-UNetv2, (H = W at 592 input, C_in, C_out):
# the second convolution of each encoder block, the shape the model runs most.
CONV_SHAPES = [(592, 16, 16), (296, 32, 32), (148, 48, 48), (74, 64, 64)]


def seconds(function, *args) -> float:
    """Wall-clock seconds of one call `function(*args)` (time.perf_counter)."""
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


# ------------------------------------------------------------------ the CPU
def instruction_set() -> str:
    """The widest vector instruction set numba compiles for: numpyseg.kernels.tiles.instruction_set.

    "AVX-512", "AVX2", "AVX", "SSE", "ARM (NEON)" or the machine's name; it follows
    numba's NUMBA_CPU_FEATURES when that is set (compiling for another CPU).
    """
    from numpyseg.kernels.tiles import instruction_set as compiled_for

    return compiled_for()


def cpu_name() -> str:
    """LLVM's name of the CPU numba compiles for (e.g. 'znver4', 'skylake-avx512'; NUMBA_CPU_NAME if set)."""
    import numba

    if numba.config.CPU_NAME and numba.config.CPU_NAME != "host":
        return numba.config.CPU_NAME
    try:
        from llvmlite import binding

        return binding.get_host_cpu_name()
    except (ImportError, RuntimeError):  # pragma: no cover
        return platform.machine()


def tile_variant() -> str:
    """The register-tile variant numpyseg's kernels use (TILE_VARIANT, else 'default')."""
    import numpyseg.kernels as kernels

    return str(getattr(kernels, "TILE_VARIANT", "default"))


def blas_name() -> str:
    """The BLAS library numpy was built with, e.g. 'scipy-openblas 0.3.27' ('unknown' if numpy does not say)."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except (TypeError, KeyError):  # numpy < 1.26 has no mode="dicts"
        return "unknown"


@contextmanager
def blas_threads(threads: int):
    """Limit numpy's BLAS to `threads` threads while the block runs (needs threadpoolctl).

    Yields True when the limit is in force, False when threadpoolctl is not installed
    (the BLAS then uses its own default, usually every core).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield True


def sgemm_gflops(threads: int, n: int = 2048, repeats: int = 3) -> dict:
    """GFLOP/s of numpy's float32 (n, n) @ (n, n): 2 n^3 FLOPs over the median time.

    Returns:
        {"gflops", "n", "blas", "threads", "threads_pinned"}; threads_pinned is False
        when threadpoolctl is missing and the BLAS chose its own thread count.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    with blas_threads(threads) as pinned:
        a @ b  # warm-up: the BLAS starts its threads
        times = [seconds(np.matmul, a, b) for _ in range(max(1, repeats))]
    return {"gflops": 2.0 * n**3 / median(times) / 1e9, "n": n, "blas": blas_name(),
            "threads": threads, "threads_pinned": pinned}


# ------------------------------------------------------------ model FLOPs
def conv_layer_shapes(model, size: int, batch: int = 1) -> list[dict]:
    """Every multiply-add layer a forward pass of `model` runs, with its shapes and MACs.

    Runs one inference (eval mode, no_grad) of a zero image (batch, size, size, C) and
    records, for each Conv2d, ConvTranspose2d and attention gate called, its class,
    the positions where its kernel is applied and its weight's shape (see the module
    docstring for the MACs formula).

    Returns:
        a list of {"layer", "height", "positions", "weight", "macs"} in call order;
        height is the side of the map the kernel runs over (the input's for a
        transposed convolution, the output's otherwise).
    """
    from numpyseg.devtools.instrument import wrapped_methods
    from numpyseg.layers import (Conv2d, ConvTranspose2d, CrossScaleSpatialAttention,
                                 SpatialAttention, no_grad)

    records = []

    def recorder(weight_of):
        def make(original):
            def wrapper(layer, x, *rest):
                weight = weight_of(layer).data.shape
                n, h, w = x.shape[:3]
                records.append({"layer": type(layer).__name__, "height": h, "positions": n * h * w,
                                "weight": tuple(weight), "macs": n * h * w * int(np.prod(weight))})
                return original(layer, x, *rest)
            return wrapper
        return make

    targets = [(Conv2d, "forward", recorder(lambda layer: layer.weight)),
               (ConvTranspose2d, "forward", recorder(lambda layer: layer.weight)),
               # the gates run their 7x7 convolution without calling Conv2d.forward
               (SpatialAttention, "forward", recorder(lambda layer: layer.conv.weight)),
               (CrossScaleSpatialAttention, "forward", recorder(lambda layer: layer.conv.weight))]
    x = np.zeros((batch, size, size, model.in_channels), np.float32)
    was_training = model.training
    model.eval()
    try:
        with wrapped_methods(targets), no_grad():
            model(x)
    finally:
        model.train(was_training)
    return records


def forward_flops(model, size: int) -> dict:
    """FLOPs (2 x MACs) of one forward pass of a (1, size, size, C) image.

    Returns:
        {"total": FLOPs, "by_layer": {class name: FLOPs}} (floats, in FLOPs, not GFLOPs).
    """
    by_layer: dict[str, float] = {}
    for record in conv_layer_shapes(model, size):
        by_layer[record["layer"]] = by_layer.get(record["layer"], 0.0) + 2.0 * record["macs"]
    return {"total": sum(by_layer.values()), "by_layer": by_layer}


# ------------------------------------------------------ conv GFLOP/s
def conv_throughput(scale: float = 1.0, repeats: int = 3, shapes=CONV_SHAPES) -> list[dict]:
    """GFLOP/s of numpyseg's 3x3 convolution kernels, each direction timed apart.

    The three directions of a convolution (see numpyseg.layers.conv) each cost
    2 * H*W * 9*C_in*C_out FLOPs for a batch of one:
    forward (out from x), input gradient (dx from dout), weight gradient (dw from x and dout).

    Args:
        scale: multiply every side in `shapes` by this (size / 592 for a smaller run).
        repeats: timed calls per direction, median taken (after one warm-up call each).
        shapes: (H = W at 592, C_in, C_out) per row.
    Returns:
        one dict per shape: size, c_in, c_out, flops, and the GFLOP/s of
        "forward", "input_grad", "weight_grad".
    """
    from numpyseg.kernels.conv_direct import conv_forward, conv_input_grad, conv_weight_grad

    rng = np.random.default_rng(0)
    rows = []
    for full, c_in, c_out in shapes:
        size = max(3, int(round(full * scale)))
        x = rng.standard_normal((1, size, size, c_in), dtype=np.float32)
        w = rng.standard_normal((3, 3, c_in, c_out), dtype=np.float32) * np.float32(0.1)
        b = np.zeros(c_out, np.float32)
        dout = rng.standard_normal((1, size, size, c_out), dtype=np.float32)
        calls = {"forward": (conv_forward, x, w, b), "input_grad": (conv_input_grad, dout, w),
                 "weight_grad": (conv_weight_grad, x, dout, 3)}
        times = {name: [] for name in calls}
        for function, *args in calls.values():
            function(*args)  # warm-up (and numba's compile or cache load)
        for _ in range(max(1, repeats)):
            for name, (function, *args) in calls.items():
                times[name].append(seconds(function, *args))
        flops = 2.0 * size * size * 9 * c_in * c_out
        row = {"size": size, "c_in": c_in, "c_out": c_out, "flops": flops}
        row.update({name: flops / median(t) / 1e9 for name, t in times.items()})
        rows.append(row)
    return rows


# -------------------------------------------------- memory-bound layers
def memory_bound_throughput(size: int, repeats: int = 3, channels: int = 16) -> list[dict]:
    """GB/s of the forward pass of the layers with little arithmetic per number.

    Each layer runs on the model's full-resolution maps, (1, size, size, channels)
    float32.  Bytes = 4 * (elements read + elements written): the least traffic
    the layer needs, every input read once and every output written once.  A layer
    that passes over its input twice (GroupNorm: the statistics, then the
    normalisation) moves more than that, so its real traffic rate is higher.

    Returns:
        one dict per layer: name, bytes, seconds (median), gbps.
    """
    from numpyseg.layers import (Concat, CrossScaleSpatialAttention, GroupNormSiLU, MaxPool2d,
                                 Sigmoid, SiLU, no_grad)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, size, size, channels), dtype=np.float32)
    y = rng.standard_normal((1, size, size, channels), dtype=np.float32)
    layers = [("GroupNorm + SiLU (fused)", GroupNormSiLU(channels), (x,)),
              ("SiLU", SiLU(), (x,)),
              ("sigmoid", Sigmoid(), (x,)),
              ("max pooling 2x2", MaxPool2d(), (x,)),
              ("cross-scale attention gate", CrossScaleSpatialAttention(7, rng=rng), (x, y)),
              ("concat", Concat(), (x, y))]
    rows = []
    with no_grad():
        for name, layer, inputs in layers:
            layer.eval()
            out = layer(*inputs)  # warm-up
            moved = 4 * (sum(a.size for a in inputs) + out.size)
            t = median(seconds(layer, *inputs) for _ in range(max(1, repeats)))
            rows.append({"name": name, "bytes": moved, "seconds": t, "gbps": moved / t / 1e9})
    return rows
