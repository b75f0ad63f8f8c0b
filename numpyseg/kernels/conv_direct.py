"""Direct (im2col-free) numba kernels for the k x k, stride-1, 'same' convolution.

Why not im2col + one big matrix product?
-----------------------------------------
`conv2d_forward_reference` (numpyseg/layers/conv.py) turns the convolution into one GEMM, which is easy to
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
Each kernel computes a small tile of outputs in registers before storing it
(numpyseg.kernels.tiles explains why, and holds the building blocks
`tile_dot`, `tile_store` and `tile_wgrad_run` shared with the transposed
convolution).  Here:

    forward (_forward_tile): `pixels` neighbouring output pixels x `width` output channels
        a_u[t] = b[o0 + t]
        for every kernel row di, and every (dj, c) of that row (k*C_in values):
            a_u[t] += x[i + di - p, j0 + u + dj - p, c] * w[di, dj, c, o0 + t]

    weight gradient (conv_weight_grad_rows): `channels` input channels x `width` output channels of one tap
        a_q[t] += x[i + di - p, j + dj - p, c0 + q] * dout[i, j, o0 + t]     summed over pixels j

The shapes depend on the CPU's registers (tiles.TILE_SHAPES: 8 pixels x 32
channels for AVX-512, 4 x 16 for AVX2, ...).  Each kernel is written once, as an
inlined driver (`conv_forward_rows`, `conv_weight_grad_rows`) taking the shape
as arguments, plus one three-line entry point per variant that passes the
shape as constants; `CONV_FORWARD[variant]` and `CONV_WEIGHT_GRAD[variant]`
name them, and the wrappers at the end pick the variant for this CPU.
The weights are repacked once per call into blocks of `lanes` output channels,
`wp[blk, di, (dj, c), t]`, so a tile reads its weights as whole vectors
(channel counts that are not multiples of `lanes` are padded with zeros).

In NHWC the k*C_in inputs (dj, c) of one kernel row are consecutive floats,
so the tile's inner loop is a single loop over them.

Borders and odd sizes: where a tile would read outside the image sideways (the
first and last p columns) `_forward_pixel` does one pixel at a time with
bounds checks; rows outside the image are skipped tap by tap; when the row is
not a multiple of the tile's pixels, the last tile is shifted left to end at
the border and overlaps its neighbour (those pixels are computed twice,
identically).  The forward pass and dx are the same for any thread count (dW
adds one partial sum per thread, so its last bits depend on the thread count).

Few channels (the 7x7 attention convolutions, 2 -> 1): vector lanes of output
channels would be mostly padding, so those use *planar* kernels that hold
each channel as a (H, W) plane and put the vector lanes along the pixels of a
row.  A 1x1 convolution with few outputs (the head, 16 -> 1) is a dot product
per pixel (`pointwise_forward_kernel`).

The Python entry points at the end (`conv_forward`, `conv_input_grad`,
`conv_weight_grad`, `conv_bias_grad`) are what `conv2d_forward_fast` and
`conv2d_backward_fast` in numpyseg/layers/conv.py call.  Every kernel has a plain
reference there, the im2col formulas (`conv2d_forward_reference` /
`conv2d_backward_reference`); see tests/test_conv.py and tests/test_tiles.py (every variant).  Set
NUMBA_DISABLE_JIT=1 to run these kernels as ordinary (slow) Python.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from numpyseg.kernels.tiles import (_FAST, MAX_WIDTH, flat_get, pack_bias, pack_weights, tile_accumulators, tile_buffer,
                                    tile_dot, tile_fill, tile_shape, tile_store, tile_wgrad_run, with_slp)


# ------------------------------------------------------------------ forward
@numba.njit(fastmath=_FAST, cache=True)
def _forward_tile(x, wp, bp, out, n, i, j0, blk, pixels, lanes, width):
    """`pixels` pixels (n, i, j0 ..) x `width` channels from block `blk` on; all taps in range along j.

    width = lanes (one block) or 2 lanes (blocks blk and blk + 1, both full):
    with two blocks every input value loaded feeds two FMAs and the tile has
    twice the independent sums.
    """
    h = x.shape[1]
    k = wp.shape[1]
    kc = wp.shape[2]  # k * C_in: one kernel row of taps, flattened as (dj, c)
    c_in = kc // k
    p = k // 2
    a0, a1, a2, a3, a4, a5, a6, a7 = tile_accumulators(out.dtype)
    tile_fill(bp, blk, lanes, width, a0, a1, a2, a3, a4, a5, a6, a7)
    blk_b = blk + 1 if width > lanes else blk
    # In NHWC, the k taps (dj, c) of one kernel row are k*C consecutive floats
    # of the input row: pixel j0+u reads row[(j0+u-p)*C : (j0+u-p)*C + k*C].
    s0 = (j0 - p) * c_in
    for di in range(k):
        ii = i + di - p
        if ii < 0 or ii >= h:
            continue  # zero padding above/below the image
        r0 = (n * h + ii) * x.shape[2] + s0  # flat offset of pixel j0 - p in row ii
        tile_dot(x, r0, c_in, kc, wp[blk, di], wp[blk_b, di], pixels, lanes, width,
                 a0, a1, a2, a3, a4, a5, a6, a7)
    tile_store(out, n, i, j0, 1, blk * lanes, pixels, width, a0, a1, a2, a3, a4, a5, a6, a7)


@numba.njit(fastmath=_FAST, cache=True)
def _forward_pixel(x, wp, bp, out, n, i, j, blk, lanes):
    """One output pixel x `lanes` channels of block `blk`, with bounds checks in both directions (borders)."""
    h = x.shape[1]
    k = wp.shape[1]
    c_in = wp.shape[2] // k
    w = x.shape[2] // c_in
    p = k // 2
    acc = tile_buffer(MAX_WIDTH, out.dtype)
    for t in range(lanes):
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
            for t in range(lanes):
                acc[t] += xv * wp[blk, di, dj_lo * c_in + m, t]
    o0 = blk * lanes
    for t in range(min(lanes, out.shape[3] - o0)):
        out[n, i, j, o0 + t] = acc[t]


@numba.njit(fastmath=_FAST, cache=True)
def _forward_row_blocks(x, wp, bp, out, n, i, blk, pixels, lanes, width):
    """Output row (n, i), the `width // lanes` channel blocks from `blk`: tiles inside, pixels at the borders.

    Columns p .. W-p-1 are covered by `pixels`-wide tiles whose taps never
    leave the image sideways; when W - 2p is not a multiple of `pixels`, one
    more tile ends exactly at column W-p-1, overlapping its neighbour (those
    pixels are computed twice, identically).  The p border columns on each
    side, and rows narrower than a tile, are done pixel by pixel.
    """
    w = out.shape[2]
    p = wp.shape[1] // 2
    inner = w - 2 * p  # columns whose taps all lie inside the image
    tiles = inner // pixels if inner >= pixels else 0
    border = p if tiles > 0 else w
    for j in range(border):
        for b in range(blk, blk + width // lanes):
            _forward_pixel(x, wp, bp, out, n, i, j, b, lanes)
    if tiles > 0:
        for tile in range(tiles):
            _forward_tile(x, wp, bp, out, n, i, p + tile * pixels, blk, pixels, lanes, width)
        if tiles * pixels < inner:
            _forward_tile(x, wp, bp, out, n, i, w - p - pixels, blk, pixels, lanes, width)
        for j in range(w - p, w):
            for b in range(blk, blk + width // lanes):
                _forward_pixel(x, wp, bp, out, n, i, j, b, lanes)


@numba.njit(inline="always")
def conv_forward_rows(x, wp, bp, out, pixels, lanes, width):
    """out = conv(x, w) + b; x as (N, H, W*C_in), wp packed as (blocks, k, k*C_in, lanes), out (N, H, W, C_out).

    One parallel task per output row (n, i).  Lane blocks go through the tile
    `width // lanes` at a time while that many full blocks remain, the rest one by one.
    """
    n_img, h, _ = x.shape
    c_out = out.shape[3]
    n_blocks = wp.shape[0]
    for task in prange(n_img * h):
        n = task // h
        i = task % h
        blk = n_blocks - n_blocks  # an int64, not the literal 0: one compiled version of each tile function
        while blk < n_blocks:
            if width > lanes and (blk + 2) * lanes <= c_out:
                _forward_row_blocks(x, wp, bp, out, n, i, blk, pixels, lanes, width)
                blk += 2
            else:
                _forward_row_blocks(x, wp, bp, out, n, i, blk, pixels, lanes, lanes)
                blk += 1


# One entry point per tile variant, the shape written as constants (tiles.TILE_SHAPES).
@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_forward_avx512(x, wp, bp, out):
    """conv_forward_rows with the AVX-512 tile: 8 pixels x 2 blocks of 16 lanes."""
    conv_forward_rows(x, wp, bp, out, 8, 16, 32)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_forward_avx2(x, wp, bp, out):
    """conv_forward_rows with the AVX2 tile: 4 pixels x 2 blocks of 8 lanes."""
    conv_forward_rows(x, wp, bp, out, 4, 8, 16)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_forward_portable(x, wp, bp, out):
    """conv_forward_rows with the portable tile: 4 pixels x 2 blocks of 4 lanes."""
    conv_forward_rows(x, wp, bp, out, 4, 4, 8)


CONV_FORWARD = {"avx512": conv_forward_avx512, "avx2": conv_forward_avx2, "portable": conv_forward_portable}


# ---------------------------------------------------------- weight gradient
@numba.njit(inline="always")
def conv_weight_grad_rows(x, dout, partial, channels, width):
    """dW[di, dj, c, o] = sum_{n,i,j} x[n, i+di-p, j+dj-p, c] * dout[n, i, j, o].

    For C_in a multiple of `channels` and C_out a multiple of `width`; x is
    viewed as (N, H, W*C_in), dout as (N, H, W*C_out).  `partial` has shape
    (T, k, k, C_in, C_out): task t sums the rows t, t+T, t+2T, ... into
    partial[t], so no two tasks write the same memory; the caller adds the T
    partial sums.  The two rows a task reads (one of x, one of dout) stay in the
    core's cache while all k*k taps and channel blocks use them.  Each tile:
    `channels` input channels x `width` output channels of one tap, summed
    along the row's pixels j whose tap lies inside the image.
    """
    n_img, h = x.shape[0], x.shape[1]
    tasks, k, c_in, c_out = partial.shape[0], partial.shape[1], partial.shape[3], partial.shape[4]
    w = dout.shape[2] // c_out
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
                for dj in range(k):
                    j_lo = max(0, p - dj)  # output pixels whose tap dj lies inside the image
                    j_hi = min(w, w + p - dj)
                    for o0 in range(0, c_out, width):
                        ds = ((n * h + i) * w + j_lo) * c_out + o0  # flat dout[n, i, j_lo, o0]
                        for c0 in range(0, c_in, channels):
                            xs = ((n * h + ii) * w + j_lo + dj - p) * c_in + c0  # flat x[n, ii, j_lo+dj-p, c0]
                            tile_wgrad_run(x, xs, c_in, dout, ds, c_out, j_hi - j_lo, acc, di, dj, c0, o0,
                                           channels, width)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_weight_grad_avx512(x, dout, partial):
    """conv_weight_grad_rows with the AVX-512 tile: 8 input x 16 output channels."""
    conv_weight_grad_rows(x, dout, partial, 8, 16)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_weight_grad_avx2(x, dout, partial):
    """conv_weight_grad_rows with the AVX2 tile: 4 input x 16 output channels."""
    conv_weight_grad_rows(x, dout, partial, 4, 16)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_weight_grad_portable(x, dout, partial):
    """conv_weight_grad_rows with the portable tile: 4 input x 8 output channels."""
    conv_weight_grad_rows(x, dout, partial, 4, 8)


CONV_WEIGHT_GRAD = {"avx512": conv_weight_grad_avx512, "avx2": conv_weight_grad_avx2,
                    "portable": conv_weight_grad_portable}


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
    return c_out < 16 and c_in * c_out <= 8


def _planar(a: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> contiguous (N, C, H, W)."""
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def pad_channels(a: np.ndarray, multiple: int) -> np.ndarray:
    """(..., C) -> (..., C rounded up to `multiple`), the new channels zero (no copy when C fits)."""
    c = a.shape[-1]
    if c % multiple == 0:
        return a
    padded = np.zeros(a.shape[:-1] + (-(-c // multiple) * multiple,), dtype=a.dtype)
    padded[..., :c] = a
    return padded


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                  out: np.ndarray | None = None, variant: str | None = None) -> np.ndarray:
    """'same' convolution: (N, H, W, C_in) * (k, k, C_in, C_out) + b -> (N, H, W, C_out).

    Args:
        out: optional preallocated (N, H, W, C_out) output (reused between calls
            to avoid fresh pages).
        variant: register-tile variant ('avx512', 'avx2', 'portable'); None picks
            the one for this CPU (numpyseg.kernels.tiles.TILE_VARIANT).
    """
    x = np.ascontiguousarray(x)
    n, h, wd, c_in = x.shape
    k, _, _, c_out = w.shape
    w = w.astype(x.dtype, copy=False)
    if out is None:
        out = np.empty((n, h, wd, c_out), dtype=x.dtype)
    if k == 1 and c_out < 16 and c_in >= 8:
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
            name, shape = tile_shape(variant)
            wp = pack_weights(w, shape.lanes)
            CONV_FORWARD[name](x.reshape(n, h, wd * c_in), wp.reshape(wp.shape[0], k, k * c_in, shape.lanes),
                               pack_bias(b, c_out, x.dtype, shape.lanes), out)
    return out


def conv_input_grad(dout: np.ndarray, w: np.ndarray, variant: str | None = None) -> np.ndarray:
    """dx of a 'same' convolution: a 'same' convolution of dout with the flipped kernel.

        dx[n, i, j, c] = sum_{di, dj, o} dout[n, i - di + p, j - dj + p, o] * w[di, dj, c, o]
                       = conv(dout, w')[n, i, j, c],   w'[a, b, o, c] = w[k-1-a, k-1-b, c, o]
    """
    w_flipped = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))
    return conv_forward(dout, w_flipped, None, variant=variant)


def conv_bias_grad(dout: np.ndarray) -> np.ndarray:
    """db[o] = sum_{n,i,j} dout[n, i, j, o], summed in float64 per task."""
    d2 = np.ascontiguousarray(dout).reshape(-1, dout.shape[-1])
    tasks = max(1, min(numba.get_num_threads(), d2.shape[0]))
    partial = np.empty((tasks, d2.shape[1]), dtype=np.float64)
    bias_grad_kernel(d2, partial)
    return partial.sum(axis=0).astype(dout.dtype)


def conv_weight_grad(x: np.ndarray, dout: np.ndarray, k: int, variant: str | None = None) -> np.ndarray:
    """dW (k, k, C_in, C_out) of a 'same' convolution, summed over the batch and pixels."""
    x = np.ascontiguousarray(x)
    dout = np.ascontiguousarray(dout.astype(x.dtype, copy=False))
    n, h, wd, c_in = x.shape
    c_out = dout.shape[3]
    tasks = max(1, min(numba.get_num_threads(), n * h))
    if k == 1 and c_out < 16:
        # a 1x1 convolution is a matrix product, dW = X^T D; few output channels (the head)
        partial = np.empty((tasks, c_in, c_out), dtype=np.float64)
        pointwise_weight_grad_kernel(x.reshape(-1, c_in), dout.reshape(-1, c_out), partial)
        return partial.sum(axis=0).astype(x.dtype).reshape(1, 1, c_in, c_out)
    if _use_planar(c_in, c_out):
        partial = np.empty((tasks, k, k, c_in, c_out), dtype=x.dtype)
        with with_slp():
            conv_weight_grad_planar_kernel(_planar(x), _planar(dout), partial)
        return partial.sum(axis=0)
    name, shape = tile_shape(variant)
    # zero channels contribute nothing: pad C_in and C_out up to whole tiles (e.g. the 3-channel image)
    xp = pad_channels(x, shape.wgrad_channels)
    dp = pad_channels(dout, shape.wgrad_width)
    ci, co = xp.shape[3], dp.shape[3]
    partial = np.empty((tasks, k, k, ci, co), dtype=x.dtype)
    with with_slp():
        CONV_WEIGHT_GRAD[name](xp.reshape(n, h, wd * ci), dp.reshape(n, h, wd * co), partial)
    return np.ascontiguousarray(partial.sum(axis=0)[:, :, :c_in, :c_out])
