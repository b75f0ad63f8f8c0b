"""Strided im2col / col2im: the two halves of a stride-s transposed convolution (NHWC).

Take a stride-s convolution whose input y has size (Ho, Wo) = (s*H, s*W) and whose
output has size (H, W), with `offset` = p0 zeros before the image (Keras/TensorFlow
'same': p0 = max(k - s, 0) // 2, which is 0 for k = 3, s = 2).  Its patches are

    cols[n, i, j, di, dj, c] = y[n, s*i + di - p0, s*j + dj - p0, c]      (0 outside y)

for i < H, j < W and kernel offsets di, dj < k.  `im2col_strided` extracts them.

`col2im_strided` is the adjoint (transpose) of that map: every entry of `cols` is
*added* back onto the pixel of y it was copied from,

    y[n, J, I, c] = sum of cols[n, i, j, di, dj, c]
                    over (i, di) with s*i + di - p0 = J and (j, dj) with s*j + dj - p0 = I,

so overlapping patches accumulate.  A transposed convolution is exactly "GEMM, then
col2im_strided" (the forward of `ConvTranspose2d`), and its backward is
"im2col_strided, then GEMMs" (a strided convolution of the upstream gradient).

Each operation has a plain-NumPy reference (`*_reference`), written by slicing at each
kernel offset, and a numba kernel that the layers use; tests check the two agree.
Set NUMBA_DISABLE_JIT=1 to step through the kernels in a debugger.
"""

from __future__ import annotations

import numba
import numpy as np


def _padded_size(n_patches: int, n_image: int, k: int, stride: int, offset: int) -> int:
    """Length of a zero-padded buffer holding both every patch and the whole image.

    Buffer index t is image index t - offset; patch (i, d) reads t = s*i + d, at most
    s*(n_patches - 1) + k - 1; the image ends at t = offset + n_image - 1.
    """
    return max(stride * (n_patches - 1) + k, offset + n_image)


# ----------------------------------------------------------------- references
def im2col_strided_reference(y: np.ndarray, k: int, stride: int, offset: int,
                             h: int, w: int) -> np.ndarray:
    """(N, Ho, Wo, C) -> (N, h, w, k, k, C) by slicing a padded copy of y k*k times."""
    n, ho, wo, c = y.shape
    ph, pw = _padded_size(h, ho, k, stride, offset), _padded_size(w, wo, k, stride, offset)
    yp = np.zeros((n, ph, pw, c), dtype=y.dtype)
    yp[:, offset : offset + ho, offset : offset + wo, :] = y
    cols = np.empty((n, h, w, k, k, c), dtype=y.dtype)
    for di in range(k):
        for dj in range(k):
            # patch row i reads padded row s*i + di: a stride-s slice starting at di
            cols[:, :, :, di, dj, :] = yp[:, di : di + stride * h : stride,
                                          dj : dj + stride * w : stride, :]
    return cols


def col2im_strided_reference(cols: np.ndarray, stride: int, offset: int,
                             ho: int, wo: int) -> np.ndarray:
    """Adjoint of im2col_strided: (N, h, w, k, k, C) -> (N, Ho, Wo, C), accumulating."""
    n, h, w, k, _, c = cols.shape
    ph, pw = _padded_size(h, ho, k, stride, offset), _padded_size(w, wo, k, stride, offset)
    yp = np.zeros((n, ph, pw, c), dtype=cols.dtype)
    for di in range(k):
        for dj in range(k):
            yp[:, di : di + stride * h : stride,
               dj : dj + stride * w : stride, :] += cols[:, :, :, di, dj, :]
    return yp[:, offset : offset + ho, offset : offset + wo, :].copy()


# -------------------------------------------------------------- numba kernels
@numba.njit(parallel=True, cache=True)
def _im2col_strided_kernel(y, k, stride, offset, cols):
    n, ho, wo, c = y.shape
    h, w = cols.shape[1], cols.shape[2]
    # one parallel task per (image, patch row): tasks write disjoint rows of cols
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        for di in range(k):
            ii = stride * i + di - offset
            row_inside = 0 <= ii < ho
            for j in range(w):
                for dj in range(k):
                    jj = stride * j + dj - offset
                    if row_inside and 0 <= jj < wo:
                        for ch in range(c):
                            cols[b, i, j, di, dj, ch] = y[b, ii, jj, ch]
                    else:
                        for ch in range(c):
                            cols[b, i, j, di, dj, ch] = 0


@numba.njit(parallel=True, cache=True)
def _col2im_strided_kernel(cols, stride, offset, y):
    n, h, w, k, _, c = cols.shape
    ho, wo = y.shape[1], y.shape[2]
    # Gather form of the scatter: each output pixel (J, I) sums the entries that land
    # on it, found by solving s*i + di - offset = J for i.  Parallel tasks (image,
    # output row) then never write to the same place, so no atomics are needed.
    for task in numba.prange(n * ho):
        b = task // ho
        jr = task % ho
        for jc in range(wo):
            for ch in range(c):
                y[b, jr, jc, ch] = 0
        for di in range(k):
            t = jr + offset - di
            if t < 0 or t % stride != 0:
                continue
            i = t // stride
            if i >= h:
                continue
            for jc in range(wo):
                for dj in range(k):
                    u = jc + offset - dj
                    if u < 0 or u % stride != 0:
                        continue
                    j = u // stride
                    if j >= w:
                        continue
                    for ch in range(c):
                        y[b, jr, jc, ch] += cols[b, i, j, di, dj, ch]


def im2col_strided(y: np.ndarray, k: int, stride: int, offset: int, h: int, w: int) -> np.ndarray:
    """(N, Ho, Wo, C) -> (N, h, w, k, k, C); numba version of `im2col_strided_reference`."""
    y = np.ascontiguousarray(y)
    cols = np.empty((y.shape[0], h, w, k, k, y.shape[3]), dtype=y.dtype)
    _im2col_strided_kernel(y, k, stride, offset, cols)
    return cols


def col2im_strided(cols: np.ndarray, stride: int, offset: int, ho: int, wo: int) -> np.ndarray:
    """(N, h, w, k, k, C) -> (N, Ho, Wo, C); numba version of `col2im_strided_reference`."""
    cols = np.ascontiguousarray(cols)
    y = np.empty((cols.shape[0], ho, wo, cols.shape[5]), dtype=cols.dtype)
    _col2im_strided_kernel(cols, stride, offset, y)
    return y
