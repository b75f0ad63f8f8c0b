"""Spatial-attention kernels: channel statistics, the k x k gate convolution (2 -> 1),
the sigmoid and the scaling, fused into a few passes with no full-size temporaries.

The gate convolution.  The attention layers convolve a 2-channel map a with a kernel
w (k, k, 2, 1), p = k // 2, zeros outside the image:

    z[n, i, j] = sum_{di, dj, c} a[n, c, i + di - p, j + dj - p] * w[di, dj, c, 0]

im2col would copy a k*k = 49 times (98 values per pixel, 137 MB for one 592 x 592 image
in float32) only to multiply it by a single column; here each output row is summed in
place.  Backward, for dz = dL/dz (N, H, W):

    da[n, c, y, x]  = sum_{di, dj} dz[n, y - di + p, x - dj + p] * w[di, dj, c, 0]
                      (each input pixel collects from the outputs whose window covers it)
    dw[di, dj, c]   = sum_{n, i, j} a[n, c, i + di - p, j + dj - p] * dz[n, i, j]

These are the Conv2d formulas (numpyseg/layers/conv.py) for C_out = 1.

Planar gate maps.  With one output channel a 16-lane tile over output channels (as in
numpyseg.kernels.conv_direct) would be 15/16 padding, so the vector lanes run along the
pixels of a row instead: the two channels of a are kept as planes, (N, 2, H, W), where
consecutive pixels are consecutive floats, and z[n, i, :] is accumulated as a whole
row, acc[j] += w * a[n, c, i + di - p, j + dj - p], which LLVM vectorises (no sum is
reordered).  The dw sums are dot products along a row; those are the only sums here
that let LLVM reorder additions (fastmath 'reassoc', to vectorise them), and they
are accumulated in float64.

Fused passes (x (N, H, W, C), a row of C floats per pixel; g = dL/dout):

    forward   1. one pass over x:  a[n, 0] = mean_c x,  a[n, 1] = max_c x (SpatialAttention,
                 with the first arg-max channel) or mean_c dec (CrossScaleSpatialAttention)
              2. one pass per output row: z row (the gate conv), s = sigma(z),
                 out[n, i, j, :] = x[n, i, j, :] * s[n, i, j]
    backward  1. one pass over g and x:  dz = (sum_c g x) * s (1 - s)
              2. one pass per row: the da row (the conv's adjoint), its share of dw, and
                 dx = g s + da_0 / C (+ da_1 on the arg-max channel; CSA: d_dec = da_1 / C_d)

Only per-pixel maps are stored: a (2 floats), s and the arg-max (1 each), dz in the
backward; under no_grad() neither s nor the arg-max is kept.  The channel sums (mean,
and sum_c g x) also let LLVM reorder additions, to vectorise them along the channels,
and accumulate in float64.

These kernels are the fast path of numpyseg/layers/attention.py
(`spatial_attention_forward_fast`, `cross_scale_attention_forward_fast`, ...), whose
plain-NumPy references beside them there (`*_reference`, with the gate convolution of
`conv2d_forward_reference`) tests check them against; `_sigmoid` is the jitted twin
of numpyseg.layers.activations.sigmoid, tested equal to it.
Set NUMBA_DISABLE_JIT=1 to step through the kernels.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from numpyseg.kernels.conv_direct import _FAST, flat_get

_SUM = {"reassoc", "contract"}  # additions may be reordered: lets LLVM vectorise a sum


# ------------------------------------------------------- row helpers (numba)
@numba.njit(fastmath=_FAST, cache=True)
def _gate_conv_row(a, w, n, i, z):
    """z[j] = sum_{di, dj, c} w[di, dj, c, 0] * a[n, c, i + di - p, j + dj - p] for one row i.

    a (N, C, H, W) planar; z (W,).  Each tap adds a shifted run of an input row
    onto the output row; counting jr from 0 lets LLVM see the index is never
    negative, and vectorise.
    """
    planes, h, wd = a.shape[1], a.shape[2], a.shape[3]
    k = w.shape[0]
    p = k // 2
    for j in range(wd):
        z[j] = 0
    for di in range(k):
        ii = i + di - p
        if ii < 0 or ii >= h:
            continue  # zero padding above/below the image
        for c in range(planes):
            base = ((n * planes + c) * h + ii) * wd  # flat a[n, c, ii, 0]
            for dj in range(k):
                wv = w[di, dj, c, 0]
                j_lo = max(0, p - dj)  # output columns whose tap reads inside the image
                j_hi = min(wd, wd + p - dj)
                shift = base + j_lo + dj - p
                for jr in range(j_hi - j_lo):
                    z[j_lo + jr] += wv * flat_get(a, shift + jr)


@numba.njit(fastmath=_FAST, cache=True)
def _gate_input_grad_row(dz, w, n, i, da):
    """da[c, x] = sum_{di, dj} dz[n, i - di + p, x - dj + p] * w[di, dj, c, 0] for one row i.

    dz (N, H, W); da (C, W).  The adjoint of `_gate_conv_row`: output row i - di + p
    read input row i through tap di, so it hands its gradient back.
    """
    h, wd = dz.shape[1], dz.shape[2]
    planes = da.shape[0]
    k = w.shape[0]
    p = k // 2
    for c in range(planes):
        for x in range(wd):
            da[c, x] = 0
    for di in range(k):
        oi = i - di + p
        if oi < 0 or oi >= h:
            continue
        base = (n * h + oi) * wd  # flat dz[n, oi, 0]
        for dj in range(k):
            x_lo = max(0, dj - p)  # input columns x whose output x - dj + p lies inside
            x_hi = min(wd, wd + dj - p)
            shift = base + x_lo - dj + p
            for c in range(planes):
                wv = w[di, dj, c, 0]
                for xr in range(x_hi - x_lo):
                    da[c, x_lo + xr] += wv * flat_get(dz, shift + xr)


@numba.njit(fastmath=_SUM, cache=True)
def _gate_weight_grad_row(a, dz, n, i, acc):
    """acc[di, dj, c] += sum_j a[n, c, i + di - p, j + dj - p] * dz[n, i, j] (one output row i).

    a (N, C, H, W) planar, dz (N, H, W), acc (k, k, C) float64.  Each sum is a dot
    product of two contiguous runs; 'reassoc' lets LLVM split it into vector partial sums.
    """
    planes, h, wd = a.shape[1], a.shape[2], a.shape[3]
    k = acc.shape[0]
    p = k // 2
    g_base = (n * h + i) * wd  # flat dz[n, i, 0]
    for di in range(k):
        ii = i + di - p
        if ii < 0 or ii >= h:
            continue
        for c in range(planes):
            base = ((n * planes + c) * h + ii) * wd
            for dj in range(k):
                j_lo = max(0, p - dj)
                j_hi = min(wd, wd + p - dj)
                shift = base + j_lo + dj - p
                g0 = g_base + j_lo
                t = 0.0
                for jr in range(j_hi - j_lo):
                    t += flat_get(a, shift + jr) * flat_get(dz, g0 + jr)
                acc[di, dj, c] += t


@numba.njit(inline="always")
def _sigmoid(z):
    """sigma(z) = (1 or e) / (1 + e) with e = exp(-|z|): exp never overflows."""
    e = math.exp(-abs(z))
    return (1.0 if z >= 0 else e) / (1.0 + e)


# --------------------------------------------------------- fused layer passes
@numba.njit(parallel=True, fastmath=_SUM, cache=True)
def mean_max_kernel(x, a, arg):
    """a[n, 0, i, j] = mean_c x[n, i, j, c], a[n, 1, i, j] = max_c x, arg[n, i, j] = first arg-max.

    arg is written only when it has entries (an empty array under no_grad()).
    """
    n_img, h, wd, c = x.shape
    keep_arg = arg.size > 0
    for task in prange(n_img * h):
        n = task // h
        i = task % h
        for j in range(wd):
            total = 0.0
            for ch in range(c):
                total += x[n, i, j, ch]
            best = x[n, i, j, 0]
            first = 0
            for ch in range(1, c):
                v = x[n, i, j, ch]
                if v > best:  # strictly greater: a tie keeps the first channel
                    best = v
                    first = ch
            a[n, 0, i, j] = total / c
            a[n, 1, i, j] = best
            if keep_arg:
                arg[n, i, j] = first


@numba.njit(parallel=True, fastmath=_SUM, cache=True)
def two_means_kernel(enc, dec, a):
    """a[n, 0, i, j] = mean_c enc[n, i, j, c], a[n, 1, i, j] = mean_c dec[n, i, j, c]."""
    n_img, h, wd, c_e = enc.shape
    c_d = dec.shape[3]
    for task in prange(n_img * h):
        n = task // h
        i = task % h
        for j in range(wd):
            total = 0.0
            for ch in range(c_e):
                total += enc[n, i, j, ch]
            a[n, 0, i, j] = total / c_e
            total = 0.0
            for ch in range(c_d):
                total += dec[n, i, j, ch]
            a[n, 1, i, j] = total / c_d


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def gate_scale_kernel(x, a, w, s, out):
    """out[n, i, j, :] = x[n, i, j, :] * sigma(z[n, i, j]), z the gate convolution of a.

    s (N, H, W) receives the gate when it has entries (kept for the backward);
    under no_grad() it is empty and the gate lives only in a row buffer.
    """
    n_img, h, wd, c = x.shape
    keep_s = s.size > 0
    for task in prange(n_img * h):
        n = task // h
        i = task % h
        row = np.empty(wd, dtype=out.dtype)  # z, then s, of this row: stays in the L1 cache
        _gate_conv_row(a, w, n, i, row)
        for j in range(wd):
            row[j] = _sigmoid(row[j])
            sj = row[j]  # read back: the gate in the array's dtype
            if keep_s:
                s[n, i, j] = sj
            for ch in range(c):
                out[n, i, j, ch] = x[n, i, j, ch] * sj


@numba.njit(parallel=True, fastmath=_SUM, cache=True)
def gate_grad_kernel(g, x, s, dz):
    """dz[n, i, j] = (sum_c g[n, i, j, c] x[n, i, j, c]) * s (1 - s): dL/dz through the product and sigmoid."""
    n_img, h, wd, c = x.shape
    for task in prange(n_img * h):
        n = task // h
        i = task % h
        for j in range(wd):
            total = 0.0
            for ch in range(c):
                total += g[n, i, j, ch] * x[n, i, j, ch]
            sj = s[n, i, j]
            dz[n, i, j] = total * (sj * (1 - sj))


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def spatial_attention_backward_kernel(g, s, dz, a, arg, w, dx, partial):
    """dx = g s + da_0 / C, plus da_1 on the arg-max channel; partial[t] = task t's share of dw.

    Rows t, t+T, ... belong to task t: it owns those rows of dx and partial[t], so no two
    tasks write the same memory; the caller adds the T partial sums.
    """
    n_img, h, wd, c = g.shape
    tasks = partial.shape[0]
    for task in prange(tasks):
        acc = partial[task]
        acc[:] = 0
        da = np.empty((2, wd), dtype=dx.dtype)
        for row in range(task, n_img * h, tasks):
            n = row // h
            i = row % h
            _gate_input_grad_row(dz, w, n, i, da)
            _gate_weight_grad_row(a, dz, n, i, acc)
            for j in range(wd):
                da[0, j] = da[0, j] / c  # the mean gives each channel 1/C
                sj = s[n, i, j]
                mean_part = da[0, j]
                for ch in range(c):
                    dx[n, i, j, ch] = g[n, i, j, ch] * sj + mean_part
                dx[n, i, j, arg[n, i, j]] += da[1, j]  # the max moves with its arg-max channel only


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def cross_scale_attention_backward_kernel(g, s, dz, a, w, d_enc, d_dec, partial):
    """d_enc = g s + da_0 / C_e, d_dec = da_1 / C_d (every channel); partial[t] = task t's share of dw."""
    n_img, h, wd, c_e = g.shape
    c_d = d_dec.shape[3]
    tasks = partial.shape[0]
    for task in prange(tasks):
        acc = partial[task]
        acc[:] = 0
        da = np.empty((2, wd), dtype=d_enc.dtype)
        for row in range(task, n_img * h, tasks):
            n = row // h
            i = row % h
            _gate_input_grad_row(dz, w, n, i, da)
            _gate_weight_grad_row(a, dz, n, i, acc)
            for j in range(wd):
                da[0, j] = da[0, j] / c_e
                da[1, j] = da[1, j] / c_d
                sj = s[n, i, j]
                enc_part = da[0, j]
                dec_part = da[1, j]
                for ch in range(c_e):
                    d_enc[n, i, j, ch] = g[n, i, j, ch] * sj + enc_part
                for ch in range(c_d):
                    d_dec[n, i, j, ch] = dec_part
