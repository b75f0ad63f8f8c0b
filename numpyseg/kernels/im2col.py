"""im2col / col2im for a k x k, stride-1, 'same' convolution in NHWC.

im2col turns convolution into one matrix product.  For an input x of shape
(N, H, W, C) and an odd kernel size k (padding p = k // 2, zeros outside):

    cols[n, i, j, di, dj, c] = x[n, i + di - p, j + dj - p, c]      (0 outside)

so that, with the HWIO kernel reshaped to (k*k*C, C_out),

    out[n, i, j, :] = cols[n, i, j].reshape(k*k*C) @ w.reshape(k*k*C, C_out).

col2im is the adjoint (transpose) of im2col: every entry of `cols` was copied
from one entry of x, so its gradient is *added* back there.  Patches overlap,
so an input pixel receives up to k*k contributions: col2im must accumulate
(``+=``), never assign.

Each operation has a plain-NumPy reference (`*_reference`), written by slicing
at each kernel offset, and a numba kernel that the layers use.  Tests check the
two agree.  Set NUMBA_DISABLE_JIT=1 to step through the kernels in a debugger.
"""

from __future__ import annotations

import numba
import numpy as np


# ----------------------------------------------------------------- references
def im2col_reference(x: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W, C) -> (N, H, W, k, k, C) by slicing the padded input k*k times."""
    n, h, w, c = x.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    cols = np.empty((n, h, w, k, k, c), dtype=x.dtype)
    for di in range(k):
        for dj in range(k):
            cols[:, :, :, di, dj, :] = xp[:, di : di + h, dj : dj + w, :]
    return cols


def col2im_reference(cols: np.ndarray, k: int) -> np.ndarray:
    """Adjoint of im2col: (N, H, W, k, k, C) -> (N, H, W, C), accumulating overlaps."""
    n, h, w, _, _, c = cols.shape
    p = k // 2
    xp = np.zeros((n, h + 2 * p, w + 2 * p, c), dtype=cols.dtype)
    for di in range(k):
        for dj in range(k):
            xp[:, di : di + h, dj : dj + w, :] += cols[:, :, :, di, dj, :]
    return xp[:, p : p + h, p : p + w, :]


# -------------------------------------------------------------- numba kernels
@numba.njit(parallel=True, cache=True)
def _im2col_kernel(x, k, cols):
    n, h, w, c = x.shape
    p = k // 2
    # one parallel task per (image, output row): rows are independent
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        for di in range(k):
            ii = i + di - p
            for j in range(w):
                for dj in range(k):
                    jj = j + dj - p
                    if 0 <= ii < h and 0 <= jj < w:
                        for ch in range(c):
                            cols[b, i, j, di, dj, ch] = x[b, ii, jj, ch]
                    else:
                        for ch in range(c):
                            cols[b, i, j, di, dj, ch] = 0


@numba.njit(parallel=True, cache=True)
def _col2im_kernel(cols, k, x):
    n, h, w, _, _, c = cols.shape
    p = k // 2
    # Gather form: each input pixel sums the k*k column entries copied from it,
    # so parallel tasks (image, input row) never write to the same place.
    for task in numba.prange(n * h):
        b = task // h
        ii = task % h
        for jj in range(w):
            for ch in range(c):
                x[b, ii, jj, ch] = 0
            for di in range(k):
                i = ii - di + p
                if i < 0 or i >= h:
                    continue
                for dj in range(k):
                    j = jj - dj + p
                    if j < 0 or j >= w:
                        continue
                    for ch in range(c):
                        x[b, ii, jj, ch] += cols[b, i, j, di, dj, ch]


def im2col(x: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W, C) -> (N, H, W, k, k, C); numba version of `im2col_reference`."""
    x = np.ascontiguousarray(x)
    n, h, w, c = x.shape
    cols = np.empty((n, h, w, k, k, c), dtype=x.dtype)
    _im2col_kernel(x, k, cols)
    return cols


def col2im(cols: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W, k, k, C) -> (N, H, W, C); numba version of `col2im_reference`."""
    cols = np.ascontiguousarray(cols)
    n, h, w, _, _, c = cols.shape
    x = np.empty((n, h, w, c), dtype=cols.dtype)
    _col2im_kernel(cols, k, x)
    return x
