"""MaxPool2d: 2 x 2 windows, stride 2, NHWC input with even H and W.

Forward (window index q = 2a + b, a, b in {0, 1}, row-major inside the window):

    out[n, i, j, c] = max_{a, b} x[n, 2i + a, 2j + b, c]

Backward: only the winning input of each window influences the output, with slope 1:

    dx[n, 2i + a, 2j + b, c] = dout[n, i, j, c]  if (a, b) is the window's arg-max, else 0.

Tie rule: when several entries of a window share the maximum, the gradient goes to the
*first* of them in row-major order (top-left, top-right, bottom-left, bottom-right).
The forward stores that index (0..3) as uint8, a quarter of the output's float32 size.

Shapes: (N, H, W, C) -> (N, H/2, W/2, C).  The kernels live in numpyseg/kernels/pool.py.
"""

from __future__ import annotations

import numpy as np

from numpyseg.kernels.pool import maxpool_backward, maxpool_forward
from numpyseg.layers.module import Module, check_input


def check_even(layer: str, x: np.ndarray) -> None:
    """One-line ValueError unless H and W of the NHWC batch x are even."""
    h, w = x.shape[1], x.shape[2]
    if h % 2 or w % 2:
        raise ValueError(f"{layer} needs even H and W (2x2 windows, stride 2), got {h}x{w}")


def maxpool2d_forward(x: np.ndarray):
    """Returns out (N, H/2, W/2, C) and the cache (argmax uint8 (N, H/2, W/2, C))."""
    out, argmax = maxpool_forward(x)
    return out, argmax


def maxpool2d_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Returns dx (N, H, W, C): dout routed to each window's (first) arg-max."""
    return maxpool_backward(dout, cache)


class MaxPool2d(Module):
    """2 x 2 max pooling with stride 2 (Keras MaxPooling2D((2, 2))); no parameters."""

    def forward(self, x):
        check_input("MaxPool2d", x)
        check_even("MaxPool2d", x)
        out, cache = maxpool2d_forward(x)
        self._keep(cache)
        return out

    def backward(self, dout):
        return maxpool2d_backward(dout, self._take_cache())
