"""Direct (im2col-free) numba kernels for the k x k, stride-1, 'same' convolution.

Why not im2col + one big matrix product?
-----------------------------------------
`numpyseg.kernels.im2col` turns the convolution into one GEMM, which is easy to
read but slow at 592 x 592: the column matrix of a 16 -> 16 layer has
592 * 592 * (3 * 3 * 16) floats = 200 MB, nine times the input.  Writing it,
then reading it back, costs more than the arithmetic.  Cutting it into row
strips that fit in the cache helps, but then a BLAS call per strip must hand the
two cores back and forth between numba's and OpenBLAS's thread pools, and on a
busy machine every hand-over can wait for a scheduler time slice (we measured
10-20 ms per strip).  So these kernels read the input where it lies and use
only numba's threads: one `prange` over image rows per call.

The register tile
-----------------
The arithmetic is the same as the GEMM; what matters is *where the partial sums
live*.  A CPU core can start two 16-float fused multiply-adds (FMAs) per cycle,
each taking about 4 cycles, so it needs at least 8 independent sums in flight,
and those sums must stay in its 32 vector registers: an FMA whose sum goes back
to memory waits for the load and the store.  So each kernel computes a small
*tile* of outputs completely before storing it:

    forward (_forward_tile): PIX = 8 neighbouring output pixels x LANES = 16 output channels
        a_u[t] = b[o0 + t]                               u = 0..7, t = 0..15
        for every kernel row di, and every (dj, c) of that row (k*C_in values):
            a_u[t] += x[i + di - p, j0 + u + dj - p, c] * w[di, dj, c, o0 + t]

    (_forward_tile2 does two blocks of 16 output channels at once, 16 sums,
     so every input value loaded feeds two FMAs.)

    weight gradient (_wgrad_tile): CB = 8 input channels x 16 output channels of one tap
        a_q[t] += x[i + di - p, j + dj - p, c0 + q] * dout[i, j, o0 + t]     summed over pixels j

Each accumulator a_u is a 16-float array declared with `tile_buffer()`, a
fixed-size array on the stack.  Every index into it is a constant once LLVM has
unrolled the 16-lane loop, so LLVM keeps it in one register, and its SLP
("superword") vectoriser turns the 16 scalar lanes t into one AVX-512
instruction (two AVX2 ones on older CPUs).  The eight accumulators are written
out one by one rather than as a loop over u: a loop of 8 x 16 is too big for
LLVM to unroll, and then nothing stays in registers (we measured 30x slower).
The two loops on the accumulators are written once, `tile_dot` (eight pixels
against a block of packed weights) and `tile_wgrad_run` (eight input channels
against 16 output-gradient lanes, along a run of pixels), and inlined into
every tile kernel here and in `numpyseg.kernels.transpose`.
The weights are repacked once per call into blocks of 16 output channels,
`wp[blk, di, (dj, c), t]`, so one tile reads its 16 weights as one vector
(channel counts that are not multiples of 16 are padded with zeros).

Two details keep the hot loop free of extra instructions:
- in NHWC the k*C_in inputs (dj, c) of one kernel row are consecutive floats,
  so the inner loop is a single loop over them;
- `flat_get(a, i)` reads a.ravel()[i] directly.  A plain a[i] makes numba add
  the length to negative indices (Python's a[-1]), and where LLVM cannot prove
  the index non-negative that test costs more than the load itself.

numba compiles with the SLP vectoriser switched off (NUMBA_SLP_VECTORIZE=0),
so `with_slp` switches it on while *these* kernels compile (compilation
happens at the first call; `cache=True` stores the result on disk so later
processes load it instead of compiling).  The tile kernels use only
`fastmath={'contract'}`: mul + add may fuse into an FMA, but sums are never
reordered, so the forward pass and dx are the same for any thread count (dW
adds one partial sum per thread, so its last bits depend on the thread count).

Borders and odd sizes: where a tile would read outside the image sideways (the
first and last p columns) `_forward_pixel` does one pixel at a time with
bounds checks; rows outside the image are skipped tap by tap; when the row is
not a multiple of 8 pixels, the last tile is shifted left to end at the
border and overlaps its neighbour (those pixels are computed twice,
identically).

Few channels (the 7x7 attention convolutions, 2 -> 1): 16 lanes of output
channels would be mostly padding, so those use *planar* kernels that hold
each channel as a (H, W) plane and put the vector lanes along the pixels of a
row.  A 1x1 convolution with few outputs (the head, 16 -> 1) is a dot product
per pixel (`pointwise_forward_kernel`).

Every kernel has a plain reference: `numpyseg.layers.conv.conv2d_naive` for the
forward, and the im2col formulas (`conv2d_forward_simple`/`conv2d_backward_simple`,
the `*_reference` functions in numpyseg.kernels.im2col) for all of them; see
tests/test_conv.py.  Set NUMBA_DISABLE_JIT=1 to run these kernels as ordinary
(slow) Python.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np
from numba import prange

LANES = 16  # output channels per tile: one AVX-512 register of float32
PIX = 8  # output pixels per forward tile (the eight accumulators of tile_dot)
CB = 8  # input channels per weight-gradient tile (the eight accumulators of tile_wgrad_run)

_FAST = {"contract"}  # allow FMA fusion only: no reordering of sums


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
def pack_weights(w: np.ndarray) -> np.ndarray:
    """(k, k, C_in, C_out) -> (ceil(C_out / 16), k, k, C_in, 16), zero-padded.

    Block `blk` holds output channels 16*blk .. 16*blk + 15 as the last,
    contiguous axis, so one tile reads its 16 weights as one vector.
    """
    k, _, c_in, c_out = w.shape
    blocks = -(-c_out // LANES)
    padded = np.zeros((k, k, c_in, blocks * LANES), dtype=w.dtype)
    padded[..., :c_out] = w
    return np.ascontiguousarray(padded.reshape(k, k, c_in, blocks, LANES).transpose(3, 0, 1, 2, 4))


def pack_bias(b: np.ndarray | None, c_out: int, dtype) -> np.ndarray:
    """(C_out,) or None -> (ceil(C_out / 16), 16), zero-padded."""
    blocks = -(-c_out // LANES)
    padded = np.zeros(blocks * LANES, dtype=dtype)
    if b is not None:
        padded[:c_out] = b
    return padded.reshape(blocks, LANES)



# ------------------------------------------------------- the register tile
# The inner work of every direct kernel (convolution forward, transposed
# convolution forward and input gradient, both weight gradients) is one of the
# two loops below, on eight 16-lane accumulators a0..a7 made by the caller with
# tile_buffer().  They are inlined into each kernel (inline="always"), so LLVM
# still sees the accumulators as its own stack arrays and keeps them in registers.
@numba.njit(inline="always")
def tile_accumulators(dt):
    """Eight LANES-wide accumulators a0..a7 (uninitialised), on the calling kernel's stack."""
    return (tile_buffer(LANES, dt), tile_buffer(LANES, dt), tile_buffer(LANES, dt), tile_buffer(LANES, dt),
            tile_buffer(LANES, dt), tile_buffer(LANES, dt), tile_buffer(LANES, dt), tile_buffer(LANES, dt))


@numba.njit(inline="always")
def tile_fill(row, a0, a1, a2, a3, a4, a5, a6, a7):
    """a_u[t] = row[t] for every accumulator u (row: LANES values, e.g. a bias block)."""
    for t in range(LANES):
        v = row[t]
        a0[t] = v
        a1[t] = v
        a2[t] = v
        a3[t] = v
        a4[t] = v
        a5[t] = v
        a6[t] = v
        a7[t] = v


@numba.njit(inline="always")
def tile_zero(a0, a1, a2, a3, a4, a5, a6, a7):
    """a_u[t] = 0 for every accumulator u."""
    for t in range(LANES):
        a0[t] = 0
        a1[t] = 0
        a2[t] = 0
        a3[t] = 0
        a4[t] = 0
        a5[t] = 0
        a6[t] = 0
        a7[t] = 0


@numba.njit(inline="always")
def tile_dot(src, r0, step, count, wrow, a0, a1, a2, a3, a4, a5, a6, a7):
    """a_u[t] += sum_(m < count) src.flat[r0 + u*step + m] * wrow[m, t],  u = 0..7.

    Eight pixels whose inputs are runs of `count` consecutive floats, `step`
    floats apart, against one (count, LANES) block of packed weights: each
    input value feeds 16 lanes, each weight vector eight pixels.
    """
    r1 = r0 + step
    r2 = r1 + step
    r3 = r2 + step
    r4 = r3 + step
    r5 = r4 + step
    r6 = r5 + step
    r7 = r6 + step
    for m in range(count):
        x0 = flat_get(src, r0 + m)
        x1 = flat_get(src, r1 + m)
        x2 = flat_get(src, r2 + m)
        x3 = flat_get(src, r3 + m)
        x4 = flat_get(src, r4 + m)
        x5 = flat_get(src, r5 + m)
        x6 = flat_get(src, r6 + m)
        x7 = flat_get(src, r7 + m)
        for t in range(LANES):
            wv = wrow[m, t]
            a0[t] += x0 * wv
            a1[t] += x1 * wv
            a2[t] += x2 * wv
            a3[t] += x3 * wv
            a4[t] += x4 * wv
            a5[t] += x5 * wv
            a6[t] += x6 * wv
            a7[t] += x7 * wv


@numba.njit(inline="always")
def tile_store(out, n, i, j0, jstep, o0, a0, a1, a2, a3, a4, a5, a6, a7):
    """out[n, i, j0 + u*jstep, o0 + t] = a_u[t]: eight pixels of one row, the valid lanes of a block."""
    for t in range(min(LANES, out.shape[3] - o0)):
        out[n, i, j0, o0 + t] = a0[t]
        out[n, i, j0 + jstep, o0 + t] = a1[t]
        out[n, i, j0 + 2 * jstep, o0 + t] = a2[t]
        out[n, i, j0 + 3 * jstep, o0 + t] = a3[t]
        out[n, i, j0 + 4 * jstep, o0 + t] = a4[t]
        out[n, i, j0 + 5 * jstep, o0 + t] = a5[t]
        out[n, i, j0 + 6 * jstep, o0 + t] = a6[t]
        out[n, i, j0 + 7 * jstep, o0 + t] = a7[t]


@numba.njit(inline="always")
def tile_wgrad_run(x, xs, x_step, g, gs, g_step, count, acc, di, dj, c0, o0):
    """acc[di, dj, c0 + q, o0 + t] += sum_(r < count) x.flat[xs + r*x_step + q] * g.flat[gs + r*g_step + t].

    The weight-gradient tile: CB = 8 input channels (q) x 16 output channels (t)
    of one tap, summed along a run of `count` pixels.
    """
    dt = acc.dtype
    a0, a1, a2, a3, a4, a5, a6, a7 = tile_accumulators(dt)
    tile_zero(a0, a1, a2, a3, a4, a5, a6, a7)
    for r in range(count):
        xr = xs + r * x_step
        x0 = flat_get(x, xr)
        x1 = flat_get(x, xr + 1)
        x2 = flat_get(x, xr + 2)
        x3 = flat_get(x, xr + 3)
        x4 = flat_get(x, xr + 4)
        x5 = flat_get(x, xr + 5)
        x6 = flat_get(x, xr + 6)
        x7 = flat_get(x, xr + 7)
        gr = gs + r * g_step
        for t in range(LANES):
            gv = flat_get(g, gr + t)
            a0[t] += x0 * gv
            a1[t] += x1 * gv
            a2[t] += x2 * gv
            a3[t] += x3 * gv
            a4[t] += x4 * gv
            a5[t] += x5 * gv
            a6[t] += x6 * gv
            a7[t] += x7 * gv
    for t in range(LANES):
        acc[di, dj, c0, o0 + t] += a0[t]
        acc[di, dj, c0 + 1, o0 + t] += a1[t]
        acc[di, dj, c0 + 2, o0 + t] += a2[t]
        acc[di, dj, c0 + 3, o0 + t] += a3[t]
        acc[di, dj, c0 + 4, o0 + t] += a4[t]
        acc[di, dj, c0 + 5, o0 + t] += a5[t]
        acc[di, dj, c0 + 6, o0 + t] += a6[t]
        acc[di, dj, c0 + 7, o0 + t] += a7[t]


# ------------------------------------------------------------------ forward
@numba.njit(fastmath=_FAST, cache=True)
def _forward_tile(x, wp, bp, out, n, i, j0, blk):
    """PIX = 8 pixels (n, i, j0 .. j0+7) x 16 channels of block `blk`; all taps in range along j.

    The eight accumulators a0..a7 are written out one by one (rather than as a
    loop over pixels) so that LLVM fully unrolls only the 16-lane loop, keeps
    each accumulator in one vector register, and still has 8 independent
    FMA chains: an FMA takes 4 cycles and a core starts 2 per cycle, so fewer
    than 8 chains would leave the multipliers idle.
    """
    h = x.shape[1]
    k = wp.shape[1]
    kc = wp.shape[2]  # k * C_in: one kernel row of taps, flattened as (dj, c)
    c_in = kc // k
    p = k // 2
    dt = out.dtype
    a0, a1, a2, a3, a4, a5, a6, a7 = tile_accumulators(dt)
    tile_fill(bp[blk], a0, a1, a2, a3, a4, a5, a6, a7)
    # In NHWC, the k taps (dj, c) of one kernel row are k*C consecutive floats
    # of the input row: pixel j0+u reads row[(j0+u-p)*C : (j0+u-p)*C + k*C].
    s0 = (j0 - p) * c_in
    for di in range(k):
        ii = i + di - p
        if ii < 0 or ii >= h:
            continue  # zero padding above/below the image
        r0 = (n * h + ii) * x.shape[2] + s0  # flat offset of pixel j0 - p in row ii
        tile_dot(x, r0, c_in, kc, wp[blk, di], a0, a1, a2, a3, a4, a5, a6, a7)
    tile_store(out, n, i, j0, 1, blk * LANES, a0, a1, a2, a3, a4, a5, a6, a7)


@numba.njit(fastmath=_FAST, cache=True)
def _forward_tile2(x, wp, bp, out, n, i, j0, blk):
    """Like _forward_tile for two lane blocks at once: 8 pixels x 32 channels (blk, blk+1).

    Each input value loaded feeds two FMAs (one per block), and the 16
    accumulators (a0..a7 for block blk, b0..b7 for block blk+1) give the FMA
    units twice the independent work.  Both blocks must be full (C_out >= 16 (blk+2)).
    """
    h = x.shape[1]
    k = wp.shape[1]
    kc = wp.shape[2]
    c_in = kc // k
    p = k // 2
    dt = out.dtype
    a0, a1, a2, a3, a4, a5, a6, a7 = tile_accumulators(dt)
    b0, b1, b2, b3, b4, b5, b6, b7 = tile_accumulators(dt)
    tile_fill(bp[blk], a0, a1, a2, a3, a4, a5, a6, a7)
    tile_fill(bp[blk + 1], b0, b1, b2, b3, b4, b5, b6, b7)
    s0 = (j0 - p) * c_in
    for di in range(k):
        ii = i + di - p
        if ii < 0 or ii >= h:
            continue
        r0 = (n * h + ii) * x.shape[2] + s0
        r1 = r0 + c_in
        r2 = r1 + c_in
        r3 = r2 + c_in
        r4 = r3 + c_in
        r5 = r4 + c_in
        r6 = r5 + c_in
        r7 = r6 + c_in
        for m in range(kc):
            x0 = flat_get(x, r0 + m)
            x1 = flat_get(x, r1 + m)
            x2 = flat_get(x, r2 + m)
            x3 = flat_get(x, r3 + m)
            x4 = flat_get(x, r4 + m)
            x5 = flat_get(x, r5 + m)
            x6 = flat_get(x, r6 + m)
            x7 = flat_get(x, r7 + m)
            for t in range(LANES):
                wa = wp[blk, di, m, t]
                wb = wp[blk + 1, di, m, t]
                a0[t] += x0 * wa
                a1[t] += x1 * wa
                a2[t] += x2 * wa
                a3[t] += x3 * wa
                a4[t] += x4 * wa
                a5[t] += x5 * wa
                a6[t] += x6 * wa
                a7[t] += x7 * wa
                b0[t] += x0 * wb
                b1[t] += x1 * wb
                b2[t] += x2 * wb
                b3[t] += x3 * wb
                b4[t] += x4 * wb
                b5[t] += x5 * wb
                b6[t] += x6 * wb
                b7[t] += x7 * wb
    tile_store(out, n, i, j0, 1, blk * LANES, a0, a1, a2, a3, a4, a5, a6, a7)
    tile_store(out, n, i, j0, 1, (blk + 1) * LANES, b0, b1, b2, b3, b4, b5, b6, b7)


@numba.njit(fastmath=_FAST, cache=True)
def _forward_pixel(x, wp, bp, out, n, i, j, blk):
    """One output pixel x 16 channels, with bounds checks in both directions (image borders)."""
    h = x.shape[1]
    k = wp.shape[1]
    c_in = wp.shape[2] // k
    w = x.shape[2] // c_in
    p = k // 2
    acc = tile_buffer(LANES, out.dtype)
    for t in range(LANES):
        acc[t] = bp[blk, t]
    for di in range(k):
        ii = i + di - p
        if ii < 0 or ii >= h:
            continue
        # the taps dj that stay inside the image, as a contiguous run of (dj, c)
        dj_lo = max(0, p - j)
        dj_hi = min(k, w + p - j)
        row = (n * h + ii) * x.shape[2] + (j + dj_lo - p) * c_in
        for m in range((dj_hi - dj_lo) * c_in):
            xv = flat_get(x, row + m)
            for t in range(LANES):
                acc[t] += xv * wp[blk, di, dj_lo * c_in + m, t]
    o0 = blk * LANES
    for t in range(min(LANES, out.shape[3] - o0)):
        out[n, i, j, o0 + t] = acc[t]


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_forward_kernel(x, wp, bp, out):
    """out = conv(x, w) + b; x as (N, H, W*C_in), wp packed as (blocks, k, k*C_in, 16), out (N, H, W, C_out).

    One parallel task per output row (n, i).  In a row, columns p .. W-p-1 are
    covered by PIX-wide tiles whose taps never leave the image sideways; when
    W - 2p is not a multiple of PIX, one more tile ends exactly at column W-p-1,
    overlapping its neighbour (those pixels are computed twice, identically).
    The p border columns on each side, and rows narrower than a tile, are done
    pixel by pixel with bounds checks.
    """
    n_img, h, _ = x.shape
    w, c_out = out.shape[2], out.shape[3]
    blocks = wp.shape[0]
    p = wp.shape[1] // 2
    inner = w - 2 * p  # columns whose taps all lie inside the image
    tiles = inner // PIX if inner >= PIX else 0
    last = w - p - PIX  # start of the final, possibly overlapping, tile
    for task in prange(n_img * h):
        n = task // h
        i = task % h
        blk = 0
        while blk < blocks:
            # two full blocks go through the 32-channel tile; a last odd or partial block the 16-channel one
            pair = blk + 1 < blocks and (blk + 2) * LANES <= c_out
            count = 2 if pair else 1
            if tiles == 0:
                for j in range(w):
                    for b in range(blk, blk + count):
                        _forward_pixel(x, wp, bp, out, n, i, j, b)
                blk += count
                continue
            for j in range(p):
                for b in range(blk, blk + count):
                    _forward_pixel(x, wp, bp, out, n, i, j, b)
            if pair:
                for tile in range(tiles):
                    _forward_tile2(x, wp, bp, out, n, i, p + tile * PIX, blk)
                if tiles * PIX < inner:
                    _forward_tile2(x, wp, bp, out, n, i, last, blk)
            else:
                for tile in range(tiles):
                    _forward_tile(x, wp, bp, out, n, i, p + tile * PIX, blk)
                if tiles * PIX < inner:
                    _forward_tile(x, wp, bp, out, n, i, last, blk)
            for j in range(w - p, w):
                for b in range(blk, blk + count):
                    _forward_pixel(x, wp, bp, out, n, i, j, b)
            blk += count


# ---------------------------------------------------------- weight gradient
@numba.njit(fastmath=_FAST, cache=True)
def _wgrad_tile(x, dout5, acc_out, n, i, di, dj, c0, blk):
    """Adds sum_j x[n, i+di-p, j+dj-p, c0+q] * dout[n, i, j, 16 blk + t] into acc_out[di, dj, c0+q, 16 blk + t].

    CB = 8 input channels (accumulators a0..a7, one vector register each) x 16
    output channels of one tap, summed along one row of pixels j.
    x is viewed as (N, H, W*C_in), dout5 as (N, H, W, C_out / 16, 16).
    """
    k = acc_out.shape[0]
    c_in = acc_out.shape[2]
    w = dout5.shape[2]
    p = k // 2
    j_lo = max(0, p - dj)  # output pixels whose tap dj lies inside the image
    j_hi = min(w, w + p - dj)
    xs = ((n * x.shape[1] + i + di - p) * w + j_lo + dj - p) * c_in + c0  # flat x[n, ii, j_lo+dj-p, c0]
    ds = (((n * dout5.shape[1] + i) * w + j_lo) * dout5.shape[3] + blk) * LANES  # flat dout5[n, i, j_lo, blk, 0]
    tile_wgrad_run(x, xs, c_in, dout5, ds, dout5.shape[3] * LANES, j_hi - j_lo, acc_out, di, dj, c0, blk * LANES)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_weight_grad_kernel(x, dout5, partial):
    """dW[di, dj, c, o] = sum_{n,i,j} x[n, i+di-p, j+dj-p, c] * dout[n, i, j, o].

    For C_in a multiple of CB and C_out a multiple of 16; x is viewed as
    (N, H, W*C_in) and dout5 as (N, H, W, C_out / 16, 16).  `partial` has shape (T, k, k, C_in, C_out):
    task t sums the rows t, t+T, t+2T, ... into partial[t], so no two tasks
    write the same memory; the caller adds the T partial sums.  The two rows
    a task reads (one of x, one of dout) stay in the core's cache while all
    k*k taps and channel blocks use them.
    """
    n_img, h = x.shape[0], x.shape[1]
    tasks, k, c_in = partial.shape[0], partial.shape[1], partial.shape[3]
    blocks = dout5.shape[3]
    p = k // 2
    for task in prange(tasks):
        acc_out = partial[task]
        acc_out[:] = 0
        for row in range(task, n_img * h, tasks):
            n = row // h
            i = row % h
            for di in range(k):
                ii = i + di - p
                if ii < 0 or ii >= h:
                    continue
                for dj in range(k):
                    for blk in range(blocks):
                        for c0 in range(0, c_in, CB):
                            _wgrad_tile(x, dout5, acc_out, n, i, di, dj, c0, blk)


# ------------------------------------------- few channels: planar kernels
# The attention convolutions (7x7, 2 -> 1) have too few output channels for a
# 16-lane tile.  For them the few channels are stored as planes, (N, C, H, W),
# so consecutive pixels of one channel are consecutive floats, and the
# vector lanes run along the pixels of a row instead.
@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_forward_planar_kernel(x, w, b, out):
    """out[n, o, i, j] = b[o] + sum_{di,dj,c} w[di, dj, c, o] * x[n, c, i+di-p, j+dj-p].

    x (N, C_in, H, W) and out (N, C_out, H, W), planar; one task per output row.
    """
    n_img, c_in, h, wd = x.shape
    k, c_out = w.shape[0], w.shape[3]
    p = k // 2
    for task in prange(n_img * h):
        n = task // h
        i = task % h
        acc = np.empty(wd, dtype=out.dtype)  # one output row, stays in the L1 cache
        for o in range(c_out):
            for j in range(wd):
                acc[j] = b[o]
            for di in range(k):
                ii = i + di - p
                if ii < 0 or ii >= h:
                    continue
                for c in range(c_in):
                    x_base = ((n * c_in + c) * h + ii) * wd  # flat x[n, c, ii, 0]
                    for dj in range(k):
                        wv = w[di, dj, c, o]
                        j_lo = max(0, p - dj)
                        j_hi = min(wd, wd + p - dj)
                        shift = x_base + dj - p
                        # counting jr from 0 lets LLVM see the index is never negative (and vectorise)
                        for jr in range(j_hi - j_lo):
                            acc[j_lo + jr] += wv * flat_get(x, shift + j_lo + jr)
            for j in range(wd):
                out[n, o, i, j] = acc[j]


@numba.njit(parallel=True, fastmath=True, cache=True)
def conv_weight_grad_planar_kernel(x, dout, partial):
    """partial[t, di, dj, c, o] = sum over rows t, t+T, ... of sum_j x[n,c,i+di-p,j+dj-p] dout[n,o,i,j].

    x (N, C_in, H, W) and dout (N, C_out, H, W), planar.  Each sum along a row
    is a dot product of two contiguous vectors (fastmath lets LLVM split it
    into vector partial sums).
    """
    n_img, c_in, h, wd = x.shape
    c_out = dout.shape[1]
    tasks, k = partial.shape[0], partial.shape[1]
    p = k // 2
    for task in prange(tasks):
        acc = partial[task]
        acc[:] = 0
        for row in range(task, n_img * h, tasks):
            n = row // h
            i = row % h
            for di in range(k):
                ii = i + di - p
                if ii < 0 or ii >= h:
                    continue
                for c in range(c_in):
                    x_base = ((n * c_in + c) * h + ii) * wd
                    for o in range(c_out):
                        g_base = ((n * c_out + o) * h + i) * wd
                        for dj in range(k):
                            j_lo = max(0, p - dj)
                            j_hi = min(wd, wd + p - dj)
                            shift = x_base + dj - p
                            s = 0.0
                            for j in range(j_lo, j_hi):
                                s += flat_get(x, shift + j) * flat_get(dout, g_base + j)
                            acc[di, dj, c, o] += s


# ------------------------------------------------ bias and 1x1 weight gradients
@numba.njit(parallel=True, cache=True)
def bias_grad_kernel(d2, partial):
    """partial[t, o] = sum of d2[r, o] over the rows r of chunk t (d2: (rows, C_out)).

    NumPy's d2.sum(axis=0) walks the short channel axis innermost for every
    row; here each task adds whole rows into a C_out-long float64 accumulator,
    which LLVM vectorises along the channels.
    """
    rows, c_out = d2.shape
    tasks = partial.shape[0]
    chunk = (rows + tasks - 1) // tasks
    for task in prange(tasks):
        acc = np.zeros(c_out, dtype=np.float64)
        for r in range(task * chunk, min(rows, (task + 1) * chunk)):
            for o in range(c_out):
                acc[o] += d2[r, o]
        for o in range(c_out):
            partial[task, o] = acc[o]


@numba.njit(parallel=True, cache=True)
def pointwise_weight_grad_kernel(x2, d2, partial):
    """partial[t, c, o] = sum over the rows r of chunk t of x2[r, c] * d2[r, o].

    The weight gradient of a 1x1 convolution (x2: (pixels, C_in), d2: (pixels,
    C_out)) when C_out is too small for the 16-lane tile (the head: C_out = 1);
    vectorised along C_in.
    """
    rows, c_in = x2.shape
    c_out = d2.shape[1]
    tasks = partial.shape[0]
    chunk = (rows + tasks - 1) // tasks
    for task in prange(tasks):
        acc = np.zeros((c_out, c_in), dtype=np.float64)
        for r in range(task * chunk, min(rows, (task + 1) * chunk)):
            for o in range(c_out):
                g = d2[r, o]
                for c in range(c_in):
                    acc[o, c] += x2[r, c] * g
        for o in range(c_out):
            for c in range(c_in):
                partial[task, c, o] = acc[o, c]


@numba.njit(parallel=True, fastmath=True, cache=True)
def pointwise_forward_kernel(x2, w2, b, out2):
    """out2[r, o] = b[o] + sum_c x2[r, c] * w2[c, o]: a 1x1 convolution with few outputs.

    One dot product of length C_in per pixel and output (the head: 16 -> 1),
    vectorised along C_in (fastmath lets LLVM sum the lanes in any order).
    """
    rows, c_in = x2.shape
    c_out = w2.shape[1]
    for r in prange(rows):
        for o in range(c_out):
            s = b[o]
            for c in range(c_in):
                s += x2[r, c] * w2[c, o]
            out2[r, o] = s


# ----------------------------------------------------------- Python wrappers
def _use_planar(c_in: int, c_out: int) -> bool:
    """Few channels in and out (the 7x7 attention convs): vectorise along pixels."""
    return c_out < LANES and c_in * c_out <= 8


def _planar(a: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> contiguous (N, C, H, W)."""
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def conv2d_direct(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                  out: np.ndarray | None = None) -> np.ndarray:
    """'same' convolution: (N, H, W, C_in) * (k, k, C_in, C_out) + b -> (N, H, W, C_out).

    Args:
        out: optional preallocated (N, H, W, C_out) output (reused between calls
            to avoid fresh pages).
    """
    x = np.ascontiguousarray(x)
    n, h, wd, c_in = x.shape
    k, _, _, c_out = w.shape
    w = w.astype(x.dtype, copy=False)
    if out is None:
        out = np.empty((n, h, wd, c_out), dtype=x.dtype)
    if k == 1 and c_out < LANES and c_in >= CB:
        bias = np.zeros(c_out, x.dtype) if b is None else b.astype(x.dtype, copy=False)
        pointwise_forward_kernel(x.reshape(-1, c_in), np.ascontiguousarray(w.reshape(c_in, c_out)),
                                 bias, out.reshape(-1, c_out))
        return out
    with with_slp():
        if _use_planar(c_in, c_out):
            bias = np.zeros(c_out, x.dtype) if b is None else b.astype(x.dtype, copy=False)
            planar = np.empty((n, c_out, h, wd), dtype=x.dtype)
            conv_forward_planar_kernel(_planar(x), np.ascontiguousarray(w), bias, planar)
            out[...] = planar.transpose(0, 2, 3, 1)
        else:
            wp = pack_weights(w)
            conv_forward_kernel(x.reshape(n, h, wd * c_in), wp.reshape(wp.shape[0], k, k * c_in, LANES),
                                pack_bias(b, c_out, x.dtype), out)
    return out


def conv2d_input_grad_direct(dout: np.ndarray, w: np.ndarray) -> np.ndarray:
    """dx of a 'same' convolution: a 'same' convolution of dout with the flipped kernel.

        dx[n, i, j, c] = sum_{di, dj, o} dout[n, i - di + p, j - dj + p, o] * w[di, dj, c, o]
                       = conv(dout, w')[n, i, j, c],   w'[a, b, o, c] = w[k-1-a, k-1-b, c, o]
    """
    w_flipped = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))
    return conv2d_direct(dout, w_flipped, None)


def conv2d_bias_grad_direct(dout: np.ndarray) -> np.ndarray:
    """db[o] = sum_{n,i,j} dout[n, i, j, o], summed in float64 per task."""
    d2 = np.ascontiguousarray(dout).reshape(-1, dout.shape[-1])
    tasks = max(1, min(numba.get_num_threads(), d2.shape[0]))
    partial = np.empty((tasks, d2.shape[1]), dtype=np.float64)
    bias_grad_kernel(d2, partial)
    return partial.sum(axis=0).astype(dout.dtype)


def conv2d_weight_grad_direct(x: np.ndarray, dout: np.ndarray, k: int) -> np.ndarray:
    """dW (k, k, C_in, C_out) of a 'same' convolution, summed over the batch and pixels."""
    x = np.ascontiguousarray(x)
    dout = np.ascontiguousarray(dout.astype(x.dtype, copy=False))
    n, h, wd, c_in = x.shape
    c_out = dout.shape[3]
    tasks = max(1, min(numba.get_num_threads(), n * h))
    if k == 1 and c_out % LANES:
        # a 1x1 convolution is a matrix product, dW = X^T D; few output channels (the head)
        partial = np.empty((tasks, c_in, c_out), dtype=np.float64)
        pointwise_weight_grad_kernel(x.reshape(-1, c_in), dout.reshape(-1, c_out), partial)
        return partial.sum(axis=0).astype(x.dtype).reshape(1, 1, c_in, c_out)
    if c_out % LANES:
        partial = np.empty((tasks, k, k, c_in, c_out), dtype=x.dtype)
        with with_slp():
            conv_weight_grad_planar_kernel(_planar(x), _planar(dout), partial)
        return partial.sum(axis=0)
    if c_in % CB:
        # zero channels contribute nothing: pad C_in up to the tile (the 3-channel image)
        padded = np.zeros((n, h, wd, -(-c_in // CB) * CB), dtype=x.dtype)
        padded[..., :c_in] = x
        return conv2d_weight_grad_direct(padded, dout, k)[:, :, :c_in]
    partial = np.empty((tasks, k, k, c_in, c_out), dtype=x.dtype)
    with with_slp():
        conv_weight_grad_kernel(x.reshape(n, h, wd * c_in),
                                dout.reshape(n, h, wd, c_out // LANES, LANES), partial)
    return partial.sum(axis=0)
