"""DropBlock helpers: expand seed points into blocks, apply the scaled mask.  NHWC.

Expanding seeds.  keras_cv turns a map of seed points into dropped blocks with a
stride-1 max-pool of window (bh, bw) and 'SAME' padding: an entry is dropped if
any seed lies in the window around it.  TensorFlow's 'SAME' padding puts
(b - 1) // 2 of the b - 1 padding entries before and b // 2 after, so

    dropped[n, i, j, c] = max { seeds[n, i + di, j + dj, c] :
                                -(bh - 1) // 2 <= di <= bh // 2,
                                -(bw - 1) // 2 <= dj <= bw // 2 }     (seeds 0 outside)

Read the other way round, a seed at (si, sj) drops rows si - bh // 2 .. si + (bh - 1) // 2
and columns sj - bw // 2 .. sj + (bw - 1) // 2: a bh x bw block centred on the seed
when the size is odd (one row/column more above/left of it when even).

The max filter is separable: a 1-D max along W, then a 1-D max along H.  Both
the NumPy reference and the numba kernel compute it that way, as maxima of
shifted slices; the kernel runs one parallel task per image row.

Applying the mask: out = 0 where dropped, x * scale elsewhere (x's dtype).
"""

from __future__ import annotations

import numba
import numpy as np


# ----------------------------------------------------------------- references
def _max_shifted(a: np.ndarray, axis: int, before: int, after: int) -> np.ndarray:
    """out[t] = max(a[t - before .. t + after]) along `axis`, entries outside ignored."""
    out = a.copy()
    size = a.shape[axis]

    def take(lo, hi):
        index = [slice(None)] * a.ndim
        index[axis] = slice(lo, hi)
        return tuple(index)

    for d in range(-before, after + 1):
        if d == 0 or abs(d) >= size:
            continue
        if d > 0:  # out[t] sees a[t + d] for t < size - d
            np.maximum(out[take(0, size - d)], a[take(d, size)], out=out[take(0, size - d)])
        else:      # out[t] sees a[t + d] for t >= -d
            np.maximum(out[take(-d, size)], a[take(0, size + d)], out=out[take(-d, size)])
    return out


def expand_seeds_reference(seeds: np.ndarray, block_h: int, block_w: int) -> np.ndarray:
    """(N, H, W, C) 0/1 seed map -> (N, H, W, C) 0/1 dropped map (uint8), in NumPy."""
    seeds = np.asarray(seeds, dtype=np.uint8)
    rows = _max_shifted(seeds, 2, (block_w - 1) // 2, block_w // 2)
    return _max_shifted(rows, 1, (block_h - 1) // 2, block_h // 2)


def apply_mask_reference(x: np.ndarray, dropped: np.ndarray, scale: float) -> np.ndarray:
    """0 where dropped, x * scale elsewhere; x's dtype."""
    return np.where(dropped != 0, np.zeros((), x.dtype), x * x.dtype.type(scale))


# -------------------------------------------------------------- numba kernels
@numba.njit(parallel=True, cache=True)
def _expand_seeds_kernel(seeds, block_h, block_w, rows, dropped):
    n, h, w, c = seeds.shape
    left, right = (block_w - 1) // 2, block_w // 2
    up, down = (block_h - 1) // 2, block_h // 2
    # pass 1, along W: rows[.., j, :] = max of seeds[.., j - left .. j + right, :]
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        for j in range(w):
            j0 = max(j - left, 0)
            j1 = min(j + right + 1, w)
            for ch in range(c):
                rows[b, i, j, ch] = seeds[b, i, j0, ch]
            for jj in range(j0 + 1, j1):
                for ch in range(c):  # innermost loop over contiguous channels
                    rows[b, i, j, ch] = max(rows[b, i, j, ch], seeds[b, i, jj, ch])
    # pass 2, along H: dropped[.., i, ..] = max of rows[.., i - up .. i + down, ..]
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        i0 = max(i - up, 0)
        i1 = min(i + down + 1, h)
        for j in range(w):
            for ch in range(c):
                dropped[b, i, j, ch] = rows[b, i0, j, ch]
        for ii in range(i0 + 1, i1):
            for j in range(w):
                for ch in range(c):
                    dropped[b, i, j, ch] = max(dropped[b, i, j, ch], rows[b, ii, j, ch])


@numba.njit(parallel=True, cache=True)
def _apply_mask_kernel(x, dropped, scale, out):
    # flat views: the mask is element-wise, layout does not matter
    zero = scale - scale  # a zero of x's dtype, so both branches have one type
    for t in numba.prange(x.size):
        out[t] = x[t] * scale if dropped[t] == 0 else zero


def expand_seeds(seeds: np.ndarray, block_h: int, block_w: int) -> np.ndarray:
    """Numba version of `expand_seeds_reference`: (N, H, W, C) uint8 -> (N, H, W, C) uint8."""
    seeds = np.ascontiguousarray(seeds, dtype=np.uint8)
    rows = np.empty_like(seeds)
    dropped = np.empty_like(seeds)
    _expand_seeds_kernel(seeds, block_h, block_w, rows, dropped)
    return dropped


def apply_mask(x: np.ndarray, dropped: np.ndarray, scale: float) -> np.ndarray:
    """Numba version of `apply_mask_reference`."""
    x = np.ascontiguousarray(x)
    dropped = np.ascontiguousarray(dropped, dtype=np.uint8)
    out = np.empty_like(x)
    _apply_mask_kernel(x.reshape(-1), dropped.reshape(-1), x.dtype.type(scale), out.reshape(-1))
    return out
