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
the NumPy reference (`expand_seeds_reference` in numpyseg/layers/dropblock.py) and
the kernel here compute it that way; the kernel runs one parallel task per image row.

Applying the mask: out = 0 where dropped, x * scale elsewhere (x's dtype).

These kernels are the fast path of numpyseg/layers/dropblock.py (`expand_seeds_fast`,
`dropblock_forward_fast`, `dropblock_backward_fast`); tests check them against the
plain-NumPy references beside them there.
"""

from __future__ import annotations

import numba


# -------------------------------------------------------------- numba kernels
@numba.njit(parallel=True, cache=True)
def expand_seeds_kernel(seeds, block_h, block_w, rows, dropped):
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
def apply_mask_kernel(x, dropped, scale, out):
    # flat views: the mask is element-wise, layout does not matter
    zero = scale - scale  # a zero of x's dtype, so both branches have one type
    for t in numba.prange(x.size):
        out[t] = x[t] * scale if dropped[t] == 0 else zero
