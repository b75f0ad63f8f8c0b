"""MaxPool2d: 2 x 2 windows, stride 2, NHWC input with even H and W.

Forward (window index q = 2a + b, a, b in {0, 1}, row-major inside the window):

    out[n, i, j, c] = max_{a, b} x[n, 2i + a, 2j + b, c]

Backward: only the winning input of each window influences the output, with slope 1:

    dx[n, 2i + a, 2j + b, c] = dout[n, i, j, c]  if (a, b) is the window's arg-max, else 0.

Tie rule: when several entries of a window share the maximum, the gradient goes to the
*first* of them in row-major order (top-left, top-right, bottom-left, bottom-right).
The forward stores that index (0..3) as uint8, a quarter of the output's float32 size.

At a tie the max is not differentiable; routing to the first maximum is one valid
subgradient and is what np.argmax picks.

Shapes: (N, H, W, C) -> (N, H/2, W/2, C).  Two implementations (numpyseg.backends
chooses; `MaxPool2d` runs the active one): `maxpool2d_forward_reference` /
`maxpool2d_backward_reference` in NumPy (a reshape that puts each window on its own
axis, np.argmax, a one-hot select), and `maxpool2d_forward_fast` /
`maxpool2d_backward_fast`, numba kernels (numpyseg/kernels/pool.py) that read x once
and write out and the arg-max in the same pass.

References:
    O. Ronneberger, P. Fischer, T. Brox, "U-Net: convolutional networks for
    biomedical image segmentation", MICCAI 2015 (2x2 max pooling, stride 2, between levels).
"""

from __future__ import annotations

import numpy as np

from numpyseg.backends import pick
from numpyseg.kernels.pool import maxpool_backward_kernel, maxpool_forward_kernel
from numpyseg.layers.module import Module, check_input


def check_even(layer: str, x: np.ndarray) -> None:
    """One-line ValueError unless H and W of the NHWC batch x are even."""
    h, w = x.shape[1], x.shape[2]
    if h % 2 or w % 2:
        raise ValueError(f"{layer} needs even H and W (2x2 windows, stride 2), got {h}x{w}")


# ------------------------------------------------------------------ reference
def _windows(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, H/2, W/2, C, 4), the last axis the window in row-major order."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)


def maxpool2d_forward_reference(x: np.ndarray):
    """(N, H, W, C) -> out (N, H/2, W/2, C) and the cache argmax (same shape, uint8 in 0..3)."""
    win = _windows(x)
    argmax = np.argmax(win, axis=-1)  # np.argmax returns the first maximum
    out = np.take_along_axis(win, argmax[..., None], axis=-1)[..., 0]
    return out, argmax.astype(np.uint8)


def maxpool2d_backward_reference(dout: np.ndarray, cache) -> np.ndarray:
    """dout (N, H/2, W/2, C) and the argmax cache -> dx (N, H, W, C): dout routed to each arg-max."""
    argmax = cache
    n, ho, wo, c = dout.shape
    onehot = np.arange(4) == argmax[..., None]  # (N, Ho, Wo, C, 4)
    win = np.where(onehot, dout[..., None], 0).astype(dout.dtype)
    # undo _windows: (n, i, j, c, a, b) -> (n, i, a, j, b, c)
    return win.reshape(n, ho, wo, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, 2 * ho, 2 * wo, c)


# ----------------------------------------------------------------------- fast
def maxpool2d_forward_fast(x: np.ndarray):
    """Numba version of maxpool2d_forward_reference: out (N, H/2, W/2, C) and argmax (uint8)."""
    x = np.ascontiguousarray(x)
    n, h, w, c = x.shape
    out = np.empty((n, h // 2, w // 2, c), dtype=x.dtype)
    argmax = np.empty((n, h // 2, w // 2, c), dtype=np.uint8)
    maxpool_forward_kernel(x, out, argmax)
    return out, argmax


def maxpool2d_backward_fast(dout: np.ndarray, cache) -> np.ndarray:
    """Numba version of maxpool2d_backward_reference: dx (N, H, W, C)."""
    dout = np.ascontiguousarray(dout)
    n, ho, wo, c = dout.shape
    dx = np.empty((n, 2 * ho, 2 * wo, c), dtype=dout.dtype)
    maxpool_backward_kernel(dout, np.ascontiguousarray(cache), dx)
    return dx


REFERENCE = (maxpool2d_forward_reference, maxpool2d_backward_reference)
FAST = (maxpool2d_forward_fast, maxpool2d_backward_fast)


class MaxPool2d(Module):
    """2 x 2 max pooling with stride 2 (Keras MaxPooling2D((2, 2))); no parameters."""

    def forward(self, x):
        check_input("MaxPool2d", x)
        check_even("MaxPool2d", x)
        forward, backward = pick(REFERENCE, FAST)
        out, cache = forward(x)
        self._keep(cache, backward)
        return out

    def backward(self, dout):
        backward, cache = self._take()
        return backward(dout, cache)
