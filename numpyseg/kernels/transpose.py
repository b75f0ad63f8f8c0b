"""Stride-s transposed convolution kernels (NHWC), direct: no column matrix.

The matrix version of the transposed convolution, "GEMM, then col2im_strided" forward
and "im2col_strided, then GEMMs" backward, is the plain-NumPy reference in
numpyseg/layers/conv_transpose.py (`conv_transpose2d_forward_reference`, with the
strided im2col / col2im formulas).  The kernels here are its fast path
(`conv_transpose2d_forward_fast` / `conv_transpose2d_backward_fast` there call
`conv_transpose_forward`, `conv_transpose_input_grad` and `conv_transpose_weight_grad`
at the end of this file).

Direct kernels: what `ConvTranspose2d` uses
-------------------------------------------
The column matrix of the GEMM version holds k*k*C_out floats per input pixel (up1 at
592 x 592: 296 * 296 * 144 floats, 50 MB), written and read back, and every GEMM hands
the cores to OpenBLAS and back.  The direct kernels compute the same sums tile by tile
in registers, exactly like numpyseg.kernels.conv_direct does for the ordinary
convolution, with the same building blocks and the same tile shape per CPU
(numpyseg.kernels.tiles: `tile_dot`, `tile_wgrad_run`, one entry point per
variant), one `prange` over rows, no temporaries, numba's thread pool only.  With x (N, H, W, C_in) and w (k, k, C_out, C_in):

Forward, gathered per output pixel.  Output column q = s*m + phase (m = 0..W-1,
phase = 0..s-1) receives tap dj from input column (q + p0 - dj) / s when that is a
whole number, i.e. when dj = phase + p0 - s*e for an integer e, and then it reads
input column m + e.  So the 8 output pixels q = s*(m0 + u) + phase, u = 0..7, of one
phase read 8 *consecutive* input pixels m0 + u + e for each of their taps, like the
stride-1 tile; only the stores are s pixels apart.  Rows likewise (tap di reads input
row (r + p0 - di) / s).  For k = 3, s = 2, p0 = 0:

    even row r = 2i:  di = 0 (input row i), di = 2 (row i - 1);   odd row 2i+1: di = 1 (row i)
    even col q = 2m:  dj = 0 (column m),    dj = 2 (column m - 1); odd col 2m+1: dj = 1 (column m)

    out[n, r, q, o] = b[o] + sum over those (di, dj) of sum_c x[n, i, j, c] * w[di, dj, o, c]

so an output pixel sums 4, 2, 2 or 1 taps of C_in values: 9 C_in C_out multiply-adds
per input pixel, as in the GEMM, none spent on zeros, and every output pixel is
written by the task of its own row only (a gather: no scatter, no atomics).

Input gradient, a stride-s convolution of dout:

    dx[n, i, j, c] = sum_{di, dj, o} dout[n, s*i + di - p0, s*j + dj - p0, o] * w[di, dj, o, c]

For one input pixel the k taps (dj, o) of kernel row di are k*C_out consecutive floats
of dout's row (columns s*j - p0 .. s*j - p0 + k - 1), so the tile's inner loop is a
single loop over them, as in conv_direct; the pixels of a tile start s*C_out floats
apart.

Weight gradient, a tile of input channels x output channels of one tap,
summed along an input row, one partial sum per task:

    dw[di, dj, o, c] = sum_{n, i, j} x[n, i, j, c] * dout[n, s*i + di - p0, s*j + dj - p0, o]

Pixels whose taps would leave the image sideways (for k = 3, s = 2: the first even
output column, the last input column in dx) are done one at a time with bounds checks.
As in conv_direct, the kernels only let mul + add fuse into FMAs (`_FAST`) and never
reorder sums, so the forward pass and dx are the same for any thread count (dw adds
one partial sum per task).

Each operation has a plain-NumPy reference in the layer module
(`conv_transpose2d_forward_reference` / `conv_transpose2d_backward_reference`); tests
check they agree.  Set NUMBA_DISABLE_JIT=1 to step through the kernels in a debugger.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from numpyseg.kernels.conv_direct import pad_channels
from numpyseg.kernels.tiles import (_FAST, MAX_WIDTH, flat_get, pack_bias, pack_weights, tile_accumulators, tile_buffer,
                                    tile_dot, tile_fill, tile_shape, tile_store, tile_wgrad_run, tile_zero,
                                    with_slp)


# ------------------------------------------ direct kernels (no column matrix)
@numba.njit(fastmath=_FAST, cache=True)
def _transpose_forward_tile(x, wp, bp, out, n, r, phase, m0, blk, stride, offset, pixels, lanes, width):
    """`pixels` output pixels (n, r, s*(m0+u) + phase) x `width` channels from block `blk` on.

    x (N, H, W, C_in); wp (blocks, k, k, C_in, lanes): wp[blk, di, dj, c, t] = w[di, dj, lanes blk + t, c].
    Every tap of this phase must read inside the image sideways (the caller checks).
    """
    h, w, c_in = x.shape[1], x.shape[2], x.shape[3]
    k = wp.shape[1]
    a0, a1, a2, a3, a4, a5, a6, a7 = tile_accumulators(out.dtype)
    tile_fill(bp, blk, lanes, width, a0, a1, a2, a3, a4, a5, a6, a7)
    blk_b = blk + 1 if width > lanes else blk
    for di in range(k):
        rr = r + offset - di
        if rr < 0 or rr % stride != 0 or rr // stride >= h:
            continue  # this tap lands on no input row
        i = rr // stride
        for dj in range(k):
            cc = phase + offset - dj
            if cc % stride != 0:
                continue  # tap of another column phase
            r0 = ((n * h + i) * w + m0 + cc // stride) * c_in  # flat x[n, i, m0 + e, 0]
            tile_dot(x, r0, c_in, c_in, wp[blk, di, dj], wp[blk_b, di, dj], pixels, lanes, width,
                     a0, a1, a2, a3, a4, a5, a6, a7)
    tile_store(out, n, r, stride * m0 + phase, stride, blk * lanes, pixels, width, a0, a1, a2, a3, a4, a5, a6, a7)


@numba.njit(fastmath=_FAST, cache=True)
def _transpose_forward_pixel(x, wp, bp, out, n, r, col, blk, stride, offset, lanes):
    """One output pixel (n, r, col) x `lanes` channels, with bounds checks (image borders)."""
    h, w, c_in = x.shape[1], x.shape[2], x.shape[3]
    k = wp.shape[1]
    acc = tile_buffer(MAX_WIDTH, out.dtype)
    for t in range(lanes):
        acc[t] = bp[blk, t]
    for di in range(k):
        rr = r + offset - di
        if rr < 0 or rr % stride != 0 or rr // stride >= h:
            continue
        i = rr // stride
        for dj in range(k):
            cc = col + offset - dj
            if cc < 0 or cc % stride != 0 or cc // stride >= w:
                continue
            row = ((n * h + i) * w + cc // stride) * c_in
            for c in range(c_in):
                xv = flat_get(x, row + c)
                for t in range(lanes):
                    acc[t] += xv * wp[blk, di, dj, c, t]
    o0 = blk * lanes
    for t in range(min(lanes, out.shape[3] - o0)):
        out[n, r, col, o0 + t] = acc[t]


@numba.njit(fastmath=_FAST, cache=True)
def _transpose_forward_phase(x, wp, bp, out, n, r, phase, blk, stride, offset, pixels, lanes, width):
    """Output row r, the columns of one phase (c mod s), the `width // lanes` blocks from `blk`.

    The pixels m whose taps all read inside the image (input columns m + e for
    every e of the phase) go through `pixels`-wide tiles, the last one shifted
    left to end at the border (overlapping pixels are computed twice,
    identically); the few others pixel by pixel with bounds checks.
    """
    w = x.shape[2]
    k = wp.shape[1]
    # input column offsets e = (phase + p0 - dj) / s of this phase's taps
    e_lo = 0
    e_hi = 0
    for dj in range(k):
        cc = phase + offset - dj
        if cc % stride == 0:
            e_lo = min(e_lo, cc // stride)
            e_hi = max(e_hi, cc // stride)
    m_lo, m_hi = -e_lo, w - e_hi  # pixels m in [m_lo, m_hi) read only inside the image
    inner = m_hi - m_lo
    if inner < pixels:
        m_lo, m_hi = w, w  # no tile fits: every pixel with bounds checks
    for m in range(min(m_lo, w)):
        for b in range(blk, blk + width // lanes):
            _transpose_forward_pixel(x, wp, bp, out, n, r, stride * m + phase, b, stride, offset, lanes)
    if inner >= pixels:
        tiles = inner // pixels
        for tile in range(tiles):
            _transpose_forward_tile(x, wp, bp, out, n, r, phase, m_lo + tile * pixels, blk, stride, offset,
                                    pixels, lanes, width)
        if tiles * pixels < inner:
            _transpose_forward_tile(x, wp, bp, out, n, r, phase, m_hi - pixels, blk, stride, offset,
                                    pixels, lanes, width)
        for m in range(m_hi, w):
            for b in range(blk, blk + width // lanes):
                _transpose_forward_pixel(x, wp, bp, out, n, r, stride * m + phase, b, stride, offset, lanes)


@numba.njit(inline="always")
def conv_transpose_forward_rows(x, wp, bp, stride, offset, out, pixels, lanes):
    """out = conv_transpose(x, w) + b; x (N, H, W, C_in), wp (blocks, k, k, C_in, lanes), out (N, sH, sW, C_out).

    One parallel task per output row; within a row, each column phase and
    each block of `lanes` output channels separately.
    """
    n_img = x.shape[0]
    ho = out.shape[1]
    n_blocks = wp.shape[0]
    for task in prange(n_img * ho):
        n = task // ho
        r = task % ho
        for phase in range(stride):
            for blk in range(n_blocks):
                _transpose_forward_phase(x, wp, bp, out, n, r, phase, blk, stride, offset, pixels, lanes, lanes)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_transpose_forward_avx512(x, wp, bp, stride, offset, out):
    """conv_transpose_forward_rows with the AVX-512 tile: 8 pixels x 16 lanes."""
    conv_transpose_forward_rows(x, wp, bp, stride, offset, out, 8, 16)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_transpose_forward_avx2(x, wp, bp, stride, offset, out):
    """conv_transpose_forward_rows with the AVX2 tile: 6 pixels x 8 lanes."""
    conv_transpose_forward_rows(x, wp, bp, stride, offset, out, 6, 8)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_transpose_forward_portable(x, wp, bp, stride, offset, out):
    """conv_transpose_forward_rows with the portable tile: 6 pixels x 4 lanes."""
    conv_transpose_forward_rows(x, wp, bp, stride, offset, out, 6, 4)


@numba.njit(fastmath=_FAST, cache=True)
def _transpose_input_grad_tile(dout, wq, dx, n, i, j0, blk, stride, offset, pixels, lanes, width):
    """dx for `pixels` input pixels (n, i, j0 ..) x `width` input channels from block `blk` on.

    dout (N, sH, sW, C_out); wq (blocks, k, k*C_out, lanes): wq[blk, di, dj*C_out + o, t] =
    w[di, dj, o, lanes blk + t].  All k taps dj must read inside dout sideways.
    """
    ho, wo, c_out = dout.shape[1], dout.shape[2], dout.shape[3]
    k, kc = wq.shape[1], wq.shape[2]
    a0, a1, a2, a3, a4, a5, a6, a7 = tile_accumulators(dx.dtype)
    tile_zero(width, a0, a1, a2, a3, a4, a5, a6, a7)
    blk_b = blk + 1 if width > lanes else blk
    for di in range(k):
        r = stride * i + di - offset
        if r < 0 or r >= ho:
            continue
        # the k taps (dj, o) of pixel j0 + u are the k*C_out floats from column s (j0+u) - p0 on;
        # neighbouring input pixels read dout s pixels apart
        r0 = ((n * ho + r) * wo + stride * j0 - offset) * c_out
        tile_dot(dout, r0, stride * c_out, kc, wq[blk, di], wq[blk_b, di], pixels, lanes, width,
                 a0, a1, a2, a3, a4, a5, a6, a7)
    tile_store(dx, n, i, j0, 1, blk * lanes, pixels, width, a0, a1, a2, a3, a4, a5, a6, a7)


@numba.njit(fastmath=_FAST, cache=True)
def _transpose_input_grad_pixel(dout, wq, dx, n, i, j, blk, stride, offset, lanes):
    """dx for one input pixel x `lanes` channels, with bounds checks (image borders)."""
    ho, wo, c_out = dout.shape[1], dout.shape[2], dout.shape[3]
    k = wq.shape[1]
    acc = tile_buffer(MAX_WIDTH, dx.dtype)
    for t in range(lanes):
        acc[t] = 0
    # taps dj whose dout column s j + dj - p0 lies inside, as one run of (dj, o)
    dj_lo = max(0, offset - stride * j)
    dj_hi = min(k, wo + offset - stride * j)
    for di in range(k):
        r = stride * i + di - offset
        if r < 0 or r >= ho:
            continue
        row = ((n * ho + r) * wo + stride * j + dj_lo - offset) * c_out
        for m in range((dj_hi - dj_lo) * c_out):
            dv = flat_get(dout, row + m)
            for t in range(lanes):
                acc[t] += dv * wq[blk, di, dj_lo * c_out + m, t]
    c0 = blk * lanes
    for t in range(min(lanes, dx.shape[3] - c0)):
        dx[n, i, j, c0 + t] = acc[t]


@numba.njit(fastmath=_FAST, cache=True)
def _transpose_input_grad_row_blocks(dout, wq, dx, n, i, blk, stride, offset, pixels, lanes, width):
    """dx row (n, i), the `width // lanes` channel blocks from `blk`.

    Input pixels j whose k taps all read inside dout (0 <= s j - p0 and
    s j - p0 + k - 1 < sW) go through tiles, the rest pixel by pixel.
    """
    w = dx.shape[2]
    wo = dout.shape[2]
    k = wq.shape[1]
    j_lo = -(-offset // stride)  # ceil(p0 / s)
    j_hi = max(j_lo, min(w, (wo - k + offset) // stride + 1))
    inner = j_hi - j_lo
    if inner < pixels:
        j_lo, j_hi = w, w  # no tile fits: every pixel with bounds checks
    for j in range(min(j_lo, w)):
        for b in range(blk, blk + width // lanes):
            _transpose_input_grad_pixel(dout, wq, dx, n, i, j, b, stride, offset, lanes)
    if inner >= pixels:
        tiles = inner // pixels
        for tile in range(tiles):
            _transpose_input_grad_tile(dout, wq, dx, n, i, j_lo + tile * pixels, blk, stride, offset,
                                       pixels, lanes, width)
        if tiles * pixels < inner:
            _transpose_input_grad_tile(dout, wq, dx, n, i, j_hi - pixels, blk, stride, offset,
                                       pixels, lanes, width)
        for j in range(j_hi, w):
            for b in range(blk, blk + width // lanes):
                _transpose_input_grad_pixel(dout, wq, dx, n, i, j, b, stride, offset, lanes)


@numba.njit(inline="always")
def conv_transpose_input_grad_rows(dout, wq, stride, offset, dx, pixels, lanes):
    """dx of the transposed convolution: a stride-s convolution of dout (one task per input row)."""
    n_img, h = dx.shape[0], dx.shape[1]
    n_blocks = wq.shape[0]
    for task in prange(n_img * h):
        n = task // h
        i = task % h
        for blk in range(n_blocks):
            _transpose_input_grad_row_blocks(dout, wq, dx, n, i, blk, stride, offset, pixels, lanes, lanes)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_transpose_input_grad_avx512(dout, wq, stride, offset, dx):
    """conv_transpose_input_grad_rows with the AVX-512 tile (tiles.TILE_SHAPES)."""
    conv_transpose_input_grad_rows(dout, wq, stride, offset, dx, 8, 16)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_transpose_input_grad_avx2(dout, wq, stride, offset, dx):
    """conv_transpose_input_grad_rows with the AVX2 tile (tiles.TILE_SHAPES)."""
    conv_transpose_input_grad_rows(dout, wq, stride, offset, dx, 6, 8)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_transpose_input_grad_portable(dout, wq, stride, offset, dx):
    """conv_transpose_input_grad_rows with the portable tile (tiles.TILE_SHAPES)."""
    conv_transpose_input_grad_rows(dout, wq, stride, offset, dx, 6, 4)


@numba.njit(inline="always")
def conv_transpose_weight_grad_rows(x, dout, stride, offset, partial, channels, width):
    """partial[t, di, dj, c, o] = the share of task t (input rows t, t+T, ...) of dw[di, dj, o, c].

        dw[di, dj, o, c] = sum_{n, i, j} x[n, i, j, c] * dout[n, s*i + di - p0, s*j + dj - p0, o]

    For C_in a multiple of `channels` and C_out of `width`.  Each tile:
    `channels` input channels x `width` output channels of one tap, summed over
    the input pixels j of row i whose tap (di, dj) lands inside dout's row
    r = s i + di - p0.  No two tasks write the same memory; the caller adds the
    T partial sums.
    """
    n_img, h, w, c_in = x.shape
    ho, wo, c_out = dout.shape[1], dout.shape[2], dout.shape[3]
    tasks, k = partial.shape[0], partial.shape[1]
    for task in prange(tasks):
        acc = partial[task]
        acc[:] = 0
        for row in range(task, n_img * h, tasks):
            n = row // h
            i = row % h
            for di in range(k):
                r = stride * i + di - offset
                if r < 0 or r >= ho:
                    continue
                for dj in range(k):
                    j_lo = max(0, -((dj - offset) // stride))  # ceil((p0 - dj) / s): column s j + dj - p0 >= 0
                    j_hi = min(w, (wo - 1 + offset - dj) // stride + 1)  # and <= sW - 1
                    for o0 in range(0, c_out, width):
                        ds = ((n * ho + r) * wo + stride * j_lo + dj - offset) * c_out + o0
                        for c0 in range(0, c_in, channels):
                            xs = ((n * h + i) * w + j_lo) * c_in + c0  # flat x[n, i, j_lo, c0]
                            tile_wgrad_run(x, xs, c_in, dout, ds, stride * c_out, max(0, j_hi - j_lo), acc,
                                           di, dj, c0, o0, channels, width)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_transpose_weight_grad_avx512(x, dout, stride, offset, partial):
    """conv_transpose_weight_grad_rows with the AVX-512 tile (tiles.TILE_SHAPES)."""
    conv_transpose_weight_grad_rows(x, dout, stride, offset, partial, 8, 16)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_transpose_weight_grad_avx2(x, dout, stride, offset, partial):
    """conv_transpose_weight_grad_rows with the AVX2 tile (tiles.TILE_SHAPES)."""
    conv_transpose_weight_grad_rows(x, dout, stride, offset, partial, 4, 16)


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def conv_transpose_weight_grad_portable(x, dout, stride, offset, partial):
    """conv_transpose_weight_grad_rows with the portable tile (tiles.TILE_SHAPES)."""
    conv_transpose_weight_grad_rows(x, dout, stride, offset, partial, 4, 8)


TRANSPOSE_FORWARD = {"avx512": conv_transpose_forward_avx512, "avx2": conv_transpose_forward_avx2,
                     "portable": conv_transpose_forward_portable}
TRANSPOSE_INPUT_GRAD = {"avx512": conv_transpose_input_grad_avx512, "avx2": conv_transpose_input_grad_avx2,
                        "portable": conv_transpose_input_grad_portable}
TRANSPOSE_WEIGHT_GRAD = {"avx512": conv_transpose_weight_grad_avx512, "avx2": conv_transpose_weight_grad_avx2,
                         "portable": conv_transpose_weight_grad_portable}


# ----------------------------------------------------------- Python wrappers
def conv_transpose_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                            stride: int, offset: int, variant: str | None = None) -> np.ndarray:
    """(N, H, W, C_in), w (k, k, C_out, C_in) -> (N, s*H, s*W, C_out), no column matrix.

    `variant` names the register tile ('avx512', 'avx2', 'portable'; None: this CPU's).
    """
    x = np.ascontiguousarray(x)
    n, h, wd, _ = x.shape
    c_out = w.shape[2]
    name, shape = tile_shape(variant)
    wp = pack_weights(w.astype(x.dtype, copy=False).transpose(0, 1, 3, 2), shape.lanes)  # lanes over C_out
    out = np.empty((n, stride * h, stride * wd, c_out), dtype=x.dtype)
    with with_slp():
        TRANSPOSE_FORWARD[name](x, wp, pack_bias(b, c_out, x.dtype, shape.lanes), stride, offset, out)
    return out


def conv_transpose_input_grad(dout: np.ndarray, w: np.ndarray, h: int, wd: int,
                                       stride: int, offset: int, variant: str | None = None) -> np.ndarray:
    """dx (N, h, wd, C_in) of the transposed convolution, from dout (N, s*h, s*wd, C_out)."""
    dout = np.ascontiguousarray(dout)
    k, _, c_out, c_in = w.shape
    name, shape = tile_shape(variant)
    wq = pack_weights(w.astype(dout.dtype, copy=False), shape.lanes)  # (blocks, k, k, C_out, lanes), lanes over C_in
    dx = np.empty((dout.shape[0], h, wd, c_in), dtype=dout.dtype)
    with with_slp():
        TRANSPOSE_INPUT_GRAD[name](dout, wq.reshape(wq.shape[0], k, k * c_out, shape.lanes), stride, offset, dx)
    return dx


def conv_transpose_weight_grad(x: np.ndarray, dout: np.ndarray, k: int,
                                        stride: int, offset: int, variant: str | None = None) -> np.ndarray:
    """dw (k, k, C_out, C_in) of the transposed convolution, summed over the batch and pixels."""
    x = np.ascontiguousarray(x)
    dout = np.ascontiguousarray(dout.astype(x.dtype, copy=False))
    n, h, wd, c_in = x.shape
    c_out = dout.shape[3]
    name, shape = tile_shape(variant)
    # zero channels add nothing: pad up to whole tiles (small layers and tests only)
    xp = pad_channels(x, shape.wgrad_channels)
    dp = pad_channels(dout, shape.wgrad_width)
    tasks = max(1, min(numba.get_num_threads(), n * h))
    partial = np.empty((tasks, k, k, xp.shape[3], dp.shape[3]), dtype=x.dtype)
    with with_slp():
        TRANSPOSE_WEIGHT_GRAD[name](xp, dp, stride, offset, partial)
    return np.ascontiguousarray(partial.sum(axis=0)[:, :, :c_in, :c_out].transpose(0, 1, 3, 2))
