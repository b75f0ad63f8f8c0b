"""Direct k x k 'same' convolution to ONE output channel (the spatial-attention gate).

The attention layers convolve a 2-channel map a (N, H, W, C) with a kernel w
(k, k, C, 1), p = k // 2, zeros outside the image:

    z[n, i, j] = sum_{di, dj, c} a[n, i + di - p, j + dj - p, c] * w[di, dj, c]

im2col would copy a k*k = 49 times (98 values per pixel, 137 MB for one 592 x 592 image
in float32) only to multiply it by a single column; here each output pixel is summed
in place.  Backward, for dz = dL/dz (N, H, W):

    da[n, y, x, c]  = sum_{di, dj} dz[n, y - di + p, x - dj + p] * w[di, dj, c]
                      (each input pixel collects from the outputs whose window covers it)
    dw[di, dj, c]   = sum_{n, i, j} a[n, i + di - p, j + dj - p, c] * dz[n, i, j]

These are the Conv2d formulas (numpyseg/layers/conv.py) for C_out = 1.  Each kernel has
a plain-NumPy reference (`*_reference`) that slices a padded copy at each kernel offset;
tests check they agree.  Set NUMBA_DISABLE_JIT=1 to step through the kernels.
"""

from __future__ import annotations

import numba
import numpy as np


# ----------------------------------------------------------------- references
def gate_conv_forward_reference(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N, H, W, C), (k, k, C, 1) -> z (N, H, W, 1)."""
    n, h, wd, _ = a.shape
    k = w.shape[0]
    p = k // 2
    ap = np.pad(a, ((0, 0), (p, p), (p, p), (0, 0)))
    z = np.zeros((n, h, wd, 1), dtype=np.result_type(a, w))
    for di in range(k):
        for dj in range(k):
            z += ap[:, di : di + h, dj : dj + wd, :] @ w[di, dj]
    return z


def gate_conv_backward_reference(dz: np.ndarray, a: np.ndarray, w: np.ndarray):
    """dz (N, H, W, 1) -> da (N, H, W, C), dw (k, k, C, 1)."""
    n, h, wd, c = a.shape
    k = w.shape[0]
    p = k // 2
    ap = np.pad(a, ((0, 0), (p, p), (p, p), (0, 0)))
    dap = np.zeros_like(ap, dtype=np.result_type(dz, w))
    dw = np.zeros(w.shape, dtype=np.result_type(dz, a))
    for di in range(k):
        for dj in range(k):
            window = (slice(None), slice(di, di + h), slice(dj, dj + wd), slice(None))
            dap[window] += dz * w[di, dj, :, 0]
            dw[di, dj, :, 0] = np.sum(ap[window] * dz, axis=(0, 1, 2))
    return dap[:, p : p + h, p : p + wd, :], dw


# -------------------------------------------------------------- numba kernels
@numba.njit(parallel=True, cache=True)
def _gate_conv_forward_kernel(a, w, z):
    n, h, wd, c = a.shape
    k = w.shape[0]
    p = k // 2
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        for j in range(wd):
            acc = 0.0
            for di in range(k):
                ii = i + di - p
                if ii < 0 or ii >= h:
                    continue
                for dj in range(k):
                    jj = j + dj - p
                    if jj < 0 or jj >= wd:
                        continue
                    for ch in range(c):
                        acc += a[b, ii, jj, ch] * w[di, dj, ch, 0]
            z[b, i, j, 0] = acc


@numba.njit(parallel=True, cache=True)
def _gate_conv_backward_kernel(dz, a, w, da, dw_rows):
    n, h, wd, c = a.shape
    k = w.shape[0]
    p = k // 2
    # Task (image, row i) owns input row i of da (a gather over the outputs that read
    # it) and row `task` of dw_rows (its share of dw); tasks never write the same place.
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        for x in range(wd):
            for ch in range(c):
                acc = 0.0
                for di in range(k):
                    oi = i - di + p
                    if oi < 0 or oi >= h:
                        continue
                    for dj in range(k):
                        oj = x - dj + p
                        if oj < 0 or oj >= wd:
                            continue
                        acc += dz[b, oi, oj, 0] * w[di, dj, ch, 0]
                da[b, i, x, ch] = acc
        for di in range(k):
            ii = i + di - p
            if ii < 0 or ii >= h:
                continue
            for dj in range(k):
                # output columns j whose tap dj reads inside the image: 0 <= j + dj - p < W
                j_lo, j_hi = max(0, p - dj), min(wd, wd + p - dj)
                for ch in range(c):
                    acc = 0.0
                    for j in range(j_lo, j_hi):
                        acc += a[b, ii, j + dj - p, ch] * dz[b, i, j, 0]
                    dw_rows[task, di, dj, ch] += acc


def gate_conv_forward(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N, H, W, C), (k, k, C, 1) -> z (N, H, W, 1); numba version of the reference."""
    a = np.ascontiguousarray(a)
    z = np.empty(a.shape[:3] + (1,), dtype=np.result_type(a, w))
    _gate_conv_forward_kernel(a, np.ascontiguousarray(w), z)
    return z


def gate_conv_backward(dz: np.ndarray, a: np.ndarray, w: np.ndarray):
    """dz (N, H, W, 1) -> da (N, H, W, C), dw (k, k, C, 1); numba version of the reference."""
    a = np.ascontiguousarray(a)
    n, h, _, c = a.shape
    k = w.shape[0]
    da = np.empty(a.shape, dtype=np.result_type(dz, w))
    # per-row partial sums of dw in float64: a float32 sum over a 592 x 592 image would
    # lose digits, and the rows are then added once
    dw_rows = np.zeros((n * h, k, k, c), dtype=np.float64)
    _gate_conv_backward_kernel(np.ascontiguousarray(dz), a, np.ascontiguousarray(w), da, dw_rows)
    dw = dw_rows.sum(axis=0).reshape(w.shape).astype(np.result_type(dz, a))
    return da, dw
