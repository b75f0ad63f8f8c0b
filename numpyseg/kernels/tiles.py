"""The register tile: building blocks of every direct convolution kernel, one shape per CPU.

What a register tile is
-----------------------
A convolution does the same multiply-adds as one big matrix product; what makes
it fast is *where the partial sums live*.  A CPU core starts two fused
multiply-adds (FMAs) per cycle, each taking about 4 cycles, so it needs at least
8 independent sums in flight, and those sums must stay in its vector registers:
an FMA whose sum goes back to memory waits for the load and the store.  So each
kernel computes a small *tile* of outputs completely before storing it:

    forward (`tile_dot`): `pixels` neighbouring output pixels x `width` output channels
        a_u[t] = b[o0 + t]                                     u < pixels, t < width
        a_u[t] += x[pixel u, input m] * w[m, o0 + t]           for every input m of the tap row

    weight gradient (`tile_wgrad_run`): `channels` input channels x `width` output channels
        a_q[t] += x[pixel r, c0 + q] * dout[pixel r, o0 + t]   summed along a run of pixels r

Each accumulator a_u is a small array made by `tile_buffer`, a fixed-size array
on the stack.  Once LLVM has unrolled the loop over t, every index into it is a
constant, so LLVM keeps it in registers, and its SLP ("superword") vectoriser
turns the scalar lanes t into vector instructions.  The accumulators are
written out one by one (a0 .. a7) rather than as a loop over u: a loop of
8 x 16 is too big for LLVM to unroll, and then nothing stays in registers (we
measured 30x slower).

One tile shape per instruction set
----------------------------------
How big the tile can be is set by the register file:

    instruction set   vector registers  floats each  forward tile      weight-gradient tile
                                                     pixels x channels  in x out channels
    AVX-512           32                16           8 x 32 (16 regs)  8 x 16 (8 regs)
    AVX2              16                8            4 x 16 (8 regs)   4 x 16 (8 regs)
    portable (SSE,    16 (NEON: 32)     4            4 x 8 (8 regs)    4 x 8 (8 regs)
      ARM NEON, ...)

The rest of the registers hold the weight vectors and the broadcast inputs:
LLVM loads all of a tile's inputs before its FMAs, so an AVX2 tile of 6 x 16
(12 accumulators + 6 inputs + 2 weight vectors = 20 registers) already spills,
while 4 x 16 needs 14 of the 16.  A
tile that needs more registers than the CPU has does not fail: LLVM "spills"
the extra sums to the stack, and every FMA then waits for a load and a store
(an AVX-512-sized tile compiled for AVX2 needs 32 registers of the 16).  A
smaller tile than the CPU could hold wastes its FMA units.  So the shapes are
compile-time choices, `TILE_SHAPES` below; every one of them computes the same
numbers on any x86-64 or ARM CPU (only their speed differs, and the tests check
every one against the plain reference), and numpyseg picks the one for the CPU
it runs on when it is imported (`TILE_VARIANT`; override with the environment
variable NUMPYSEG_TILES=avx512|avx2|portable, e.g. to benchmark one on another
CPU).  numba compiles only the variant that is called.

Only the kernels that do arithmetic on data they reuse have a tile: the
convolution and transposed convolution, forward and both gradients.  The fused
GroupNorm + SiLU, the activations, pooling and the attention gates stream
through memory once per call; LLVM vectorises their loops for whatever vector
width the CPU has, and memory bandwidth, not registers, sets their speed
(`numpyseg benchmark` prints their GB/s), so they need no variant.

How a shape reaches the machine code
------------------------------------
The building blocks below take the shape (pixels, lanes, width, ...) as
ordinary arguments and are inlined (`inline="always"`) into the kernels.  Each
kernel has one small entry point per variant, `@njit(parallel=True,
cache=True)`, that calls the shared driver with the shape written as
constants.  After inlining those are compile-time constants: LLVM unrolls the
loops over them and drops the accumulators and branches a smaller tile does not
use.  Because each variant is its own function, numba caches each one on disk
under its own name.

Two details keep the hot loop free of extra instructions:
- `flat_get(a, i)` reads a.ravel()[i] directly.  A plain a[i] makes numba add
  the length to negative indices (Python's a[-1]), and where LLVM cannot prove
  the index non-negative that test costs more than the load itself.
- numba compiles with the SLP vectoriser switched off (NUMBA_SLP_VECTORIZE=0),
  so `with_slp` switches it on while the tile kernels compile (compilation
  happens at the first call; `cache=True` stores the result on disk so later
  processes load it instead of compiling).

The tile kernels use only `fastmath={'contract'}`: mul + add may fuse into an
FMA, but sums are never reordered, so a forward pass gives the same numbers for
any thread count.  Set NUMBA_DISABLE_JIT=1 to run every kernel as ordinary
(slow) Python and step through it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np

from numpyseg.errors import ConfigError

_FAST = {"contract"}  # allow FMA fusion only: no reordering of sums


@dataclass(frozen=True)
class TileShape:
    """The register-tile shape of one instruction set (see the module docstring).

    Attributes:
        lanes: float32 values in one vector register (16 AVX-512, 8 AVX2, 4 SSE/NEON);
            weights are packed in blocks of this many output channels.
        pixels: output pixels per forward / input-gradient tile (accumulator rows, at most 8).
        blocks: lane blocks per forward tile (1 or 2): the tile's width is lanes * blocks
            output channels.
        transpose_pixels: pixels per tile of the transposed convolution (forward and dx),
            whose tiles are one block wide: they are a small share of the work, and
            one tile width instead of two halves their compile time.
        wgrad_channels: input channels per weight-gradient tile (accumulators, at most 8).
        wgrad_width: output channels per weight-gradient tile (a multiple of lanes).
    """

    lanes: int
    pixels: int
    blocks: int
    transpose_pixels: int
    wgrad_channels: int
    wgrad_width: int

    @property
    def width(self) -> int:
        """Output channels of one full forward tile."""
        return self.lanes * self.blocks

    def registers(self) -> tuple[int, int, int]:
        """Accumulator registers of the (forward, transposed, weight-gradient) tiles."""
        return self.pixels * self.blocks, self.transpose_pixels, self.wgrad_channels * (self.wgrad_width // self.lanes)


# The entry points of every kernel (numpyseg.kernels.conv_direct, .transpose)
# write these numbers as constants; tests/test_tiles.py checks each variant
# against the plain references.
TILE_SHAPES = {
    "avx512": TileShape(lanes=16, pixels=8, blocks=2, transpose_pixels=8, wgrad_channels=8, wgrad_width=16),
    "avx2": TileShape(lanes=8, pixels=4, blocks=2, transpose_pixels=6, wgrad_channels=4, wgrad_width=16),
    "portable": TileShape(lanes=4, pixels=4, blocks=2, transpose_pixels=6, wgrad_channels=4, wgrad_width=8),
}


def cpu_features() -> set[str]:
    """The instruction-set features numba compiles for, e.g. {'avx2', 'fma', 'avx512f', ...}.

    numba's NUMBA_CPU_FEATURES (a string like '+avx2,+fma,-avx512f') wins when
    set; otherwise the host CPU's features as LLVM reports them.
    """
    if numba.config.CPU_FEATURES:
        return {f[1:] for f in numba.config.CPU_FEATURES.split(",") if f.startswith("+")}
    from llvmlite import binding

    return {name for name, on in binding.get_host_cpu_features().items() if on}


def instruction_set(features: set[str] | None = None) -> str:
    """'AVX-512', 'AVX2', 'AVX', 'SSE', 'ARM (NEON)' or the machine name: the widest vector ISA."""
    import platform

    if features is None and platform.machine().lower().startswith(("arm", "aarch")):
        return "ARM (NEON)"
    features = cpu_features() if features is None else features
    if "avx512f" in features:
        return "AVX-512"
    if "avx2" in features and "fma" in features:
        return "AVX2"
    if "avx" in features:
        return "AVX"
    if "sse2" in features:
        return "SSE"
    return platform.machine() or "unknown"


def choose_variant(features: set[str] | None = None) -> str:
    """The tile variant for a CPU: 'avx512', 'avx2' or 'portable' (anything else)."""
    isa = instruction_set(features)
    return {"AVX-512": "avx512", "AVX2": "avx2"}.get(isa, "portable")


def _variant_from_environment() -> str:
    name = os.environ.get("NUMPYSEG_TILES", "").strip().lower()
    if not name:
        return choose_variant()
    if name not in TILE_SHAPES:
        raise ConfigError(f"NUMPYSEG_TILES={name!r} is not a tile variant: use one of "
                          f"{', '.join(TILE_SHAPES)} or leave it unset to choose by CPU")
    return name


TILE_VARIANT = _variant_from_environment()


def cpu_model() -> str:
    """The CPU's model name ('AMD EPYC', from /proc/cpuinfo on Linux; else what platform says)."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return names[0] if names else cpu
    except OSError:  # not Linux
        return cpu


def machine_summary() -> str:
    """One line naming the CPU, its instruction set, the tile variant and numba's threads.

    E.g. 'AMD EPYC, x86_64, AVX-512 (tiles avx512), 2 cores, 1 numba thread'.  Recorded
    with every training session, since speed (not results) depends on it.
    """
    import os
    import platform

    threads = numba.get_num_threads()
    return (f"{cpu_model()}, {platform.machine()}, {instruction_set()} (tiles {TILE_VARIANT}), {os.cpu_count()} cores, "
            f"{threads} numba thread{'s' if threads != 1 else ''}")


def tile_shape(variant: str | None = None) -> tuple[str, TileShape]:
    """(name, TileShape) of `variant`, or of the variant chosen for this CPU when None."""
    name = TILE_VARIANT if variant is None else variant
    if name not in TILE_SHAPES:
        raise ConfigError(f"unknown tile variant {name!r}: use one of {', '.join(TILE_SHAPES)}")
    return name, TILE_SHAPES[name]


# ------------------------------------------------------------- stack buffers
if numba.config.DISABLE_JIT:

    def tile_buffer(size, dtype):
        """A scratch array of `size` floats (plain NumPy when the JIT is off)."""
        return np.empty(size, dtype=dtype)

    def flat_get(a, index):
        """a.ravel()[index] for a C-contiguous array (plain NumPy when the JIT is off)."""
        return a.reshape(-1)[index]

else:
    from numba.core import cgutils, errors, types
    from numba.extending import intrinsic

    @intrinsic
    def _stack_pointer(typingctx, size, dtype):
        """Pointer to `size` elements of `dtype` on the stack (size: a literal int)."""
        if not isinstance(size, types.IntegerLiteral):
            raise errors.TypingError("tile_buffer needs a compile-time constant size")
        count = size.literal_value
        element = dtype.dtype

        def codegen(context, builder, signature, args):
            llvm_type = context.get_value_type(element)
            # alloca in the entry block: LLVM's SROA can then promote it to registers
            return cgutils.alloca_once(builder, llvm_type,
                                       size=context.get_constant(types.intp, count))

        return types.CPointer(element)(size, dtype), codegen

    @intrinsic
    def flat_get(typingctx, a, index):
        """a.ravel()[index] for a C-contiguous array, without numba's index fix-ups.

        numba adds the length to a negative index (Python's a[-1]); in a hot loop
        whose offsets LLVM cannot prove non-negative, that check costs more than
        the load.  The kernels only pass offsets inside the array.
        """
        if not isinstance(a, types.Array) or a.layout != "C":
            raise errors.TypingError("flat_get needs a C-contiguous array")

        def codegen(context, builder, signature, args):
            array = context.make_array(signature.args[0])(context, builder, args[0])
            pointer = builder.gep(array.data, [args[1]], inbounds=True)
            return builder.load(pointer)

        return a.dtype(a, types.intp), codegen

    @numba.njit(inline="always")
    def tile_buffer(size, dtype):
        """A fixed-size 1-D scratch array on the stack (kept in registers by LLVM)."""
        return numba.carray(_stack_pointer(size, dtype), size)


@contextmanager
def with_slp():
    """Compile numba functions inside this block with LLVM's SLP vectoriser on."""
    previous = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = previous


# ------------------------------------------------------------ weight packing
def pack_weights(w: np.ndarray, lanes: int) -> np.ndarray:
    """(k, k, C_in, C_out) -> (ceil(C_out / lanes), k, k, C_in, lanes), zero-padded.

    Block `blk` holds output channels lanes*blk .. lanes*blk + lanes - 1 as the
    last, contiguous axis, so a tile reads the weights of one input as vectors.
    """
    k, _, c_in, c_out = w.shape
    blocks = -(-c_out // lanes)
    padded = np.zeros((k, k, c_in, blocks * lanes), dtype=w.dtype)
    padded[..., :c_out] = w
    return np.ascontiguousarray(padded.reshape(k, k, c_in, blocks, lanes).transpose(3, 0, 1, 2, 4))


def pack_bias(b: np.ndarray | None, c_out: int, dtype, lanes: int) -> np.ndarray:
    """(C_out,) or None -> (ceil(C_out / lanes), lanes), zero-padded."""
    blocks = -(-c_out // lanes)
    padded = np.zeros(blocks * lanes, dtype=dtype)
    if b is not None:
        padded[:c_out] = b
    return padded.reshape(blocks, lanes)


# ------------------------------------------------------- the tile itself
# Every argument named pixels, lanes, width or channels is a compile-time
# constant in the kernels that inline these functions.
MAX_WIDTH = 32  # the widest tile (AVX-512: 2 blocks of 16 lanes); the size of every accumulator
@numba.njit(inline="always")
def tile_accumulators(dt):
    """Eight accumulators a0..a7 of MAX_WIDTH lanes (uninitialised), on the calling kernel's stack.

    A tile uses the first `width` lanes of each (and `pixels` of the eight);
    LLVM keeps what is used in registers and drops the rest.
    """
    return (tile_buffer(MAX_WIDTH, dt), tile_buffer(MAX_WIDTH, dt), tile_buffer(MAX_WIDTH, dt),
            tile_buffer(MAX_WIDTH, dt), tile_buffer(MAX_WIDTH, dt), tile_buffer(MAX_WIDTH, dt),
            tile_buffer(MAX_WIDTH, dt), tile_buffer(MAX_WIDTH, dt))


@numba.njit(inline="always")
def tile_fill(bp, blk, lanes, width, a0, a1, a2, a3, a4, a5, a6, a7):
    """a_u[t] = bias of channel lanes*blk + t, from the packed bias bp (blocks, lanes); all eight u."""
    for t in range(width):
        v = bp[blk + t // lanes, t % lanes]
        a0[t] = v
        a1[t] = v
        a2[t] = v
        a3[t] = v
        a4[t] = v
        a5[t] = v
        a6[t] = v
        a7[t] = v


@numba.njit(inline="always")
def tile_zero(width, a0, a1, a2, a3, a4, a5, a6, a7):
    """a_u[t] = 0 for every accumulator u and lane t < width."""
    for t in range(width):
        a0[t] = 0
        a1[t] = 0
        a2[t] = 0
        a3[t] = 0
        a4[t] = 0
        a5[t] = 0
        a6[t] = 0
        a7[t] = 0


@numba.njit(inline="always")
def tile_dot(src, r0, step, count, wa, wb, pixels, lanes, width, a0, a1, a2, a3, a4, a5, a6, a7):
    """a_u[t] += sum_(m < count) src.flat[r0 + u*step + m] * W[m, t],   u < pixels, t < width.

    `pixels` pixels whose inputs are runs of `count` consecutive floats, `step`
    floats apart, against packed weights W = [wa | wb]: wa (count, lanes) holds
    lanes 0 .. lanes-1, wb the next block (used when width = 2 lanes).  Each
    input value feeds `width` lanes, each weight vector `pixels` pixels.
    Accumulators u >= pixels are left alone (and LLVM drops them).
    """
    # pixels beyond the tile re-read pixel 0 (their sums are never used): no read outside src
    r1 = r0 + step if pixels > 1 else r0
    r2 = r0 + 2 * step if pixels > 2 else r0
    r3 = r0 + 3 * step if pixels > 3 else r0
    r4 = r0 + 4 * step if pixels > 4 else r0
    r5 = r0 + 5 * step if pixels > 5 else r0
    r6 = r0 + 6 * step if pixels > 6 else r0
    r7 = r0 + 7 * step if pixels > 7 else r0
    for m in range(count):
        x0 = flat_get(src, r0 + m)
        x1 = flat_get(src, r1 + m)
        x2 = flat_get(src, r2 + m)
        x3 = flat_get(src, r3 + m)
        x4 = flat_get(src, r4 + m)
        x5 = flat_get(src, r5 + m)
        x6 = flat_get(src, r6 + m)
        x7 = flat_get(src, r7 + m)
        for t in range(lanes):
            wv = wa[m, t]
            a0[t] += x0 * wv
            if pixels > 1:
                a1[t] += x1 * wv
            if pixels > 2:
                a2[t] += x2 * wv
            if pixels > 3:
                a3[t] += x3 * wv
            if pixels > 4:
                a4[t] += x4 * wv
            if pixels > 5:
                a5[t] += x5 * wv
            if pixels > 6:
                a6[t] += x6 * wv
            if pixels > 7:
                a7[t] += x7 * wv
            if width > lanes:  # the second block: lanes + t
                wv = wb[m, t]
                a0[lanes + t] += x0 * wv
                if pixels > 1:
                    a1[lanes + t] += x1 * wv
                if pixels > 2:
                    a2[lanes + t] += x2 * wv
                if pixels > 3:
                    a3[lanes + t] += x3 * wv
                if pixels > 4:
                    a4[lanes + t] += x4 * wv
                if pixels > 5:
                    a5[lanes + t] += x5 * wv
                if pixels > 6:
                    a6[lanes + t] += x6 * wv
                if pixels > 7:
                    a7[lanes + t] += x7 * wv


@numba.njit(inline="always")
def tile_store(out, n, i, j0, jstep, o0, pixels, width, a0, a1, a2, a3, a4, a5, a6, a7):
    """out[n, i, j0 + u*jstep, o0 + t] = a_u[t]: `pixels` pixels of one row, the valid lanes t < width."""
    for t in range(min(width, out.shape[3] - o0)):
        out[n, i, j0, o0 + t] = a0[t]
        if pixels > 1:
            out[n, i, j0 + jstep, o0 + t] = a1[t]
        if pixels > 2:
            out[n, i, j0 + 2 * jstep, o0 + t] = a2[t]
        if pixels > 3:
            out[n, i, j0 + 3 * jstep, o0 + t] = a3[t]
        if pixels > 4:
            out[n, i, j0 + 4 * jstep, o0 + t] = a4[t]
        if pixels > 5:
            out[n, i, j0 + 5 * jstep, o0 + t] = a5[t]
        if pixels > 6:
            out[n, i, j0 + 6 * jstep, o0 + t] = a6[t]
        if pixels > 7:
            out[n, i, j0 + 7 * jstep, o0 + t] = a7[t]


@numba.njit(inline="always")
def tile_wgrad_run(x, xs, x_step, g, gs, g_step, count, acc, di, dj, c0, o0, channels, width):
    """acc[di, dj, c0 + q, o0 + t] += sum_(r < count) x.flat[xs + r*x_step + q] * g.flat[gs + r*g_step + t].

    The weight-gradient tile: `channels` input channels (q, at most 8) x `width`
    output channels (t) of one tap, summed along a run of `count` pixels.
    """
    dt = acc.dtype
    a0, a1, a2, a3, a4, a5, a6, a7 = tile_accumulators(dt)
    tile_zero(width, a0, a1, a2, a3, a4, a5, a6, a7)
    for r in range(count):
        xr = xs + r * x_step
        x0 = flat_get(x, xr)
        x1 = flat_get(x, xr + 1) if channels > 1 else x0
        x2 = flat_get(x, xr + 2) if channels > 2 else x0
        x3 = flat_get(x, xr + 3) if channels > 3 else x0
        x4 = flat_get(x, xr + 4) if channels > 4 else x0
        x5 = flat_get(x, xr + 5) if channels > 5 else x0
        x6 = flat_get(x, xr + 6) if channels > 6 else x0
        x7 = flat_get(x, xr + 7) if channels > 7 else x0
        gr = gs + r * g_step
        for t in range(width):
            gv = flat_get(g, gr + t)
            a0[t] += x0 * gv
            if channels > 1:
                a1[t] += x1 * gv
            if channels > 2:
                a2[t] += x2 * gv
            if channels > 3:
                a3[t] += x3 * gv
            if channels > 4:
                a4[t] += x4 * gv
            if channels > 5:
                a5[t] += x5 * gv
            if channels > 6:
                a6[t] += x6 * gv
            if channels > 7:
                a7[t] += x7 * gv
    for t in range(width):
        acc[di, dj, c0, o0 + t] += a0[t]
        if channels > 1:
            acc[di, dj, c0 + 1, o0 + t] += a1[t]
        if channels > 2:
            acc[di, dj, c0 + 2, o0 + t] += a2[t]
        if channels > 3:
            acc[di, dj, c0 + 3, o0 + t] += a3[t]
        if channels > 4:
            acc[di, dj, c0 + 4, o0 + t] += a4[t]
        if channels > 5:
            acc[di, dj, c0 + 5, o0 + t] += a5[t]
        if channels > 6:
            acc[di, dj, c0 + 6, o0 + t] += a6[t]
        if channels > 7:
            acc[di, dj, c0 + 7, o0 + t] += a7[t]
