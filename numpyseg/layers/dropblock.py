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
   max filter of the seed map (numpyseg.kernels.dropblock.expand_seeds).
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
"""

from __future__ import annotations

import numpy as np

from numpyseg.kernels.dropblock import apply_mask, expand_seeds
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
    dropped = expand_seeds(seeds, bh, bw)
    size = dropped.size
    kept = size - np.count_nonzero(dropped)
    return dropped, size / max(kept, 1)


def dropblock_forward(x: np.ndarray, dropped: np.ndarray | None, scale: float):
    """out = x * (1 - dropped) * scale, or x itself when dropped is None (identity).

    Returns:
        out (same shape and dtype as x) and the cache (dropped, scale).
    """
    if dropped is None:
        return x, (None, 1.0)
    return apply_mask(x, dropped, scale), (dropped, scale)


def dropblock_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * (1 - dropped) * scale (dout itself for the identity)."""
    dropped, scale = cache
    if dropped is None:
        return dout
    return apply_mask(dout, dropped, scale)


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
        out, cache = dropblock_forward(x, dropped, scale)
        self._keep(cache)
        return out

    def backward(self, dout):
        return dropblock_backward(dout, self._take_cache())

    def __repr__(self):
        return f"DropBlock2d(rate={self.rate}, block_size={self.block_size})"
