"""DropBlock2d: structured dropout of square blocks (Ghiasi et al. 2018), as keras_cv.

Training mode, input x of shape (N, H, W, C), block size b (bh x bw after clamping):

1. Seeds.  Every (n, i, j, c) whose block fits inside the map, i.e. the seed
   centres  b // 2 <= i < H - (b - 1) // 2  (the same for j with W), becomes a seed
   independently with probability

       gamma = rate / (bh * bw) * (H * W) / ((H - bh + 1) * (W - bw + 1)).

   (H - bh + 1)(W - bw + 1) counts the valid centres, so the expected number of
   seeds times the block area is rate * H * W: about `rate` of the map is dropped
   (a little less, because blocks overlap).
2. Blocks.  Each seed drops the bh x bw square around it: rows i - bh // 2 ..
   i + (bh - 1) // 2 (centred on the seed for odd sizes).  Computed as a stride-1
   max filter of the seed map (`expand_seeds_reference` / `expand_seeds_fast` below).
3. Rescale.  With `dropped` the resulting 0/1 map,

       out   = x * (1 - dropped) * scale,   scale = (N*H*W*C) / (number of kept entries),

   counted over the whole tensor as keras_cv does (size(mask) / sum(mask)); when
   everything is dropped the output is 0 (the count is guarded, no division by 0).

Eval mode, or rate == 0: out = x.

Backward: the mask and scale are constants of the forward pass, so

    dx = dout * (1 - dropped) * scale.

Drawing seeds.  Independent Bernoulli(gamma) trials on M positions are drawn
exactly as: K ~ Binomial(M, gamma), then K distinct positions uniformly at
random.  For the small gamma of DropBlock (about 0.003 for rate 0.15, block 7)
this costs O(K) instead of one uniform number per entry; for gamma > 2% one
uniform per entry is used instead.

Block size larger than the map.  keras_cv clamps the block to the map per
dimension (bh = min(b, H), bw = min(b, W)) for the block area, but still uses the
unclamped size in the (H - b + 1)(W - b + 1) factor and the pooling window,
which gives gamma = inf (all NaN output) or gamma < 0 (nothing dropped).  Here
the clamped size is used everywhere, so a block that covers a whole dimension
has exactly one valid centre along it.  keras_cv also tests seed rows against the
*width* (a typo without effect on square maps); rows are tested against H here.

Frozen mask (for gradient checks): with `freeze_mask = True` the first training
forward draws a mask and later forwards reuse it until `reset_mask()`, so the
layer is a fixed, differentiable function of x.

Expanding seeds.  keras_cv turns the seed map into blocks with a stride-1 max-pool of
window (bh, bw) and 'SAME' padding ((b - 1) // 2 before, b // 2 after):

    dropped[n, i, j, c] = max { seeds[n, i + di, j + dj, c] :
                                -(bh - 1) // 2 <= di <= bh // 2,
                                -(bw - 1) // 2 <= dj <= bw // 2 }     (seeds 0 outside)

The max filter is separable: a 1-D max along W, then one along H.

Two implementations (numpyseg.backends chooses; `DropBlock2d` runs the active one):
`expand_seeds_reference` and `dropblock_forward_reference` / `dropblock_backward_reference`
in NumPy (maxima of shifted slices; one np.where), and `expand_seeds_fast`,
`dropblock_forward_fast` / `dropblock_backward_fast`, numba kernels
(numpyseg/kernels/dropblock.py) that do each in one pass.  Both draw the same seeds
from the same generator, so they drop the same blocks.

References:
    G. Ghiasi, T.-Y. Lin, Q. V. Le, "DropBlock: a regularization method for
    convolutional networks", NeurIPS 2018, arXiv:1810.12890.
    C. Guo, M. Szemenyei, Y. Yi, W. Wang, B. Chen, C. Fan, "SA-UNet: spatial attention
    U-Net for retinal vessel segmentation", ICPR 2020, arXiv:2004.03696 (DropBlock in
    every convolution block of a U-Net).
"""

from __future__ import annotations

import numpy as np

from numpyseg.backends import pick
from numpyseg.kernels.dropblock import apply_mask_kernel, expand_seeds_kernel
from numpyseg.layers.init import as_rng
from numpyseg.layers.module import Module, check_input

# above this seed probability one uniform per entry is cheaper than sampling positions
_SPARSE_GAMMA = 0.02


def clamp_block_size(block_size, height: int, width: int) -> tuple[int, int]:
    """(bh, bw) = (min(b_h, H), min(b_w, W)) for an int or (b_h, b_w) block size."""
    bh, bw = (block_size, block_size) if np.isscalar(block_size) else block_size
    return min(int(bh), height), min(int(bw), width)


def dropblock_gamma(rate: float, height: int, width: int, block_h: int, block_w: int) -> float:
    """Seed probability rate / (bh*bw) * (H*W) / ((H-bh+1)(W-bw+1)), for a clamped block."""
    valid = (height - block_h + 1) * (width - block_w + 1)
    return rate / (block_h * block_w) * (height * width) / valid


# -------------------------------------------------------------- seeds -> blocks
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


def expand_seeds_fast(seeds: np.ndarray, block_h: int, block_w: int) -> np.ndarray:
    """Numba version of `expand_seeds_reference`: (N, H, W, C) uint8 -> (N, H, W, C) uint8."""
    seeds = np.ascontiguousarray(seeds, dtype=np.uint8)
    rows = np.empty_like(seeds)
    dropped = np.empty_like(seeds)
    expand_seeds_kernel(seeds, block_h, block_w, rows, dropped)
    return dropped


def dropblock_mask(shape, rate: float, block_size, rng: np.random.Generator):
    """Draw a DropBlock mask for an input of shape (N, H, W, C).

    Returns:
        dropped: (N, H, W, C) uint8, 1 where the entry is zeroed.
        scale: float, (N*H*W*C) / (number of kept entries), or N*H*W*C if none is kept.
    """
    n, h, w, c = shape
    bh, bw = clamp_block_size(block_size, h, w)
    gamma = min(dropblock_gamma(rate, h, w, bh, bw), 1.0)
    # the valid seed centres form an (H - bh + 1) x (W - bw + 1) grid starting at (bh//2, bw//2)
    grid = (n, h - bh + 1, w - bw + 1, c)
    m = int(np.prod(grid))
    if gamma <= _SPARSE_GAMMA:
        flat = rng.choice(m, size=rng.binomial(m, gamma), replace=False, shuffle=False)
    else:
        flat = np.flatnonzero(rng.random(m) < gamma)
    sn, si, sj, sc = np.unravel_index(flat, grid)
    seeds = np.zeros(shape, dtype=np.uint8)
    seeds[sn, si + bh // 2, sj + bw // 2, sc] = 1
    dropped = pick(expand_seeds_reference, expand_seeds_fast)(seeds, bh, bw)
    size = dropped.size
    kept = size - np.count_nonzero(dropped)
    return dropped, size / max(kept, 1)


# ------------------------------------------------------------ forward / backward
def dropblock_forward_reference(x: np.ndarray, dropped: np.ndarray | None, scale: float):
    """out = x * (1 - dropped) * scale in NumPy, or x itself when dropped is None (identity).

    Returns:
        out (same shape and dtype as x) and the cache (dropped, scale).
    """
    if dropped is None:
        return x, (None, 1.0)
    return np.where(dropped != 0, np.zeros((), x.dtype), x * x.dtype.type(scale)), (dropped, scale)


def dropblock_backward_reference(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * (1 - dropped) * scale (dout itself for the identity)."""
    dropped, scale = cache
    if dropped is None:
        return dout
    return np.where(dropped != 0, np.zeros((), dout.dtype), dout * dout.dtype.type(scale))


def _apply_mask_fast(x: np.ndarray, dropped: np.ndarray, scale: float) -> np.ndarray:
    """0 where dropped, x * scale elsewhere, in one pass (numba kernel); x's dtype."""
    x = np.ascontiguousarray(x)
    dropped = np.ascontiguousarray(dropped, dtype=np.uint8)
    out = np.empty_like(x)
    apply_mask_kernel(x.reshape(-1), dropped.reshape(-1), x.dtype.type(scale), out.reshape(-1))
    return out


def dropblock_forward_fast(x: np.ndarray, dropped: np.ndarray | None, scale: float):
    """Numba version of dropblock_forward_reference (same arguments and results)."""
    if dropped is None:
        return x, (None, 1.0)
    return _apply_mask_fast(x, dropped, scale), (dropped, scale)


def dropblock_backward_fast(dout: np.ndarray, cache) -> np.ndarray:
    """Numba version of dropblock_backward_reference."""
    dropped, scale = cache
    if dropped is None:
        return dout
    return _apply_mask_fast(dout, dropped, scale)


REFERENCE = (dropblock_forward_reference, dropblock_backward_reference)
FAST = (dropblock_forward_fast, dropblock_backward_fast)


class DropBlock2d(Module):
    """DropBlock with keras_cv DropBlock2D semantics (see the module docstring).

    Args:
        rate: fraction of the map to drop, in [0, 1].
        block_size: side of the square block (or (height, width)), clamped to the map.
        rng: seed or np.random.Generator for the masks.
    Attributes:
        freeze_mask: when True, reuse the first training mask until reset_mask().
    Shapes: (N, H, W, C) -> (N, H, W, C).  No parameters.
    """

    def __init__(self, rate: float = 0.15, block_size=7, rng=None):
        super().__init__()
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"DropBlock2d rate must be in [0, 1], got {rate}")
        sizes = (block_size, block_size) if np.isscalar(block_size) else tuple(np.ravel(block_size))
        if len(sizes) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in sizes):
            raise ValueError(f"DropBlock2d block_size must be a positive int or a pair of them, "
                             f"got {block_size!r}")
        self.rate = float(rate)
        self.block_size = block_size
        self.rng = as_rng(rng)
        self.freeze_mask = False
        self._frozen = None

    def reset_mask(self) -> None:
        """Forget the frozen mask: the next training forward draws a new one."""
        self._frozen = None

    def forward(self, x):
        check_input("DropBlock2d", x)
        if not self.training or self.rate == 0.0:
            dropped, scale = None, 1.0
        elif self.freeze_mask and self._frozen is not None:
            dropped, scale = self._frozen
            if dropped.shape != x.shape:
                raise ValueError(f"DropBlock2d frozen mask has shape {dropped.shape}, the input has "
                                 f"shape {x.shape} (call reset_mask())")
        else:
            dropped, scale = dropblock_mask(x.shape, self.rate, self.block_size, self.rng)
            if self.freeze_mask:
                self._frozen = (dropped, scale)
        forward, backward = pick(REFERENCE, FAST)
        out, cache = forward(x, dropped, scale)
        self._keep(cache, backward)
        return out

    def backward(self, dout):
        backward, cache = self._take()
        return backward(dout, cache)

    def __repr__(self):
        return f"DropBlock2d(rate={self.rate}, block_size={self.block_size})"
