"""2 x 2, stride-2 max pooling kernels (NHWC, even H and W).

Forward, for output pixel (i, j) of channel c, the window holds the four inputs

    x[2i + a, 2j + b, c]   with window index  q = 2a + b  in {0, 1, 2, 3}
                                  (row-major: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)

    out[i, j, c]    = max_q  x[2i + a, 2j + b, c]
    argmax[i, j, c] = the first q (smallest) attaining the maximum   (stored as uint8)

Backward: the max is locally the identity on the winning input and constant in the
others, so the whole upstream gradient goes to the arg-max and the other three get 0:

    dx[2i + a, 2j + b, c] = dout[i, j, c]  if 2a + b == argmax[i, j, c]  else 0.

At a tie the max is not differentiable; routing to the first maximum is one valid
subgradient and matches what the NumPy reference (np.argmax) picks.

Each kernel has a plain-NumPy reference (`*_reference`); tests check they agree.
Set NUMBA_DISABLE_JIT=1 to step through the kernels in a debugger.
"""

from __future__ import annotations

import numba
import numpy as np


# ----------------------------------------------------------------- references
def _windows(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, H/2, W/2, C, 4), the last axis the window in row-major order."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)


def maxpool_forward_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, C) -> out (N, H/2, W/2, C) and argmax (same shape, uint8 in 0..3)."""
    win = _windows(x)
    argmax = np.argmax(win, axis=-1)  # np.argmax returns the first maximum
    out = np.take_along_axis(win, argmax[..., None], axis=-1)[..., 0]
    return out, argmax.astype(np.uint8)


def maxpool_backward_reference(dout: np.ndarray, argmax: np.ndarray) -> np.ndarray:
    """(N, H/2, W/2, C) upstream gradient + argmax -> dx (N, H, W, C)."""
    n, ho, wo, c = dout.shape
    onehot = np.arange(4) == argmax[..., None]  # (N, Ho, Wo, C, 4)
    win = np.where(onehot, dout[..., None], 0).astype(dout.dtype)
    # undo _windows: (n, i, j, c, a, b) -> (n, i, a, j, b, c)
    return win.reshape(n, ho, wo, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, 2 * ho, 2 * wo, c)


# -------------------------------------------------------------- numba kernels
@numba.njit(parallel=True, cache=True)
def _maxpool_forward_kernel(x, out, argmax):
    n, ho, wo, c = out.shape
    # one parallel task per (image, output row)
    for task in numba.prange(n * ho):
        b = task // ho
        i = task % ho
        for j in range(wo):
            for ch in range(c):
                best = x[b, 2 * i, 2 * j, ch]
                q_best = 0
                for q in range(1, 4):
                    v = x[b, 2 * i + q // 2, 2 * j + q % 2, ch]
                    if v > best:  # strict: a later equal value does not win (first maximum)
                        best = v
                        q_best = q
                out[b, i, j, ch] = best
                argmax[b, i, j, ch] = q_best


@numba.njit(parallel=True, cache=True)
def _maxpool_backward_kernel(dout, argmax, dx):
    n, ho, wo, c = dout.shape
    for task in numba.prange(n * ho):
        b = task // ho
        i = task % ho
        for j in range(wo):
            for ch in range(c):
                g = dout[b, i, j, ch]
                q_best = argmax[b, i, j, ch]
                # every one of the four window entries is written, so dx needs no zeroing
                for q in range(4):
                    dx[b, 2 * i + q // 2, 2 * j + q % 2, ch] = g if q == q_best else 0


def maxpool_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, C) -> (out, argmax uint8); numba version of `maxpool_forward_reference`."""
    x = np.ascontiguousarray(x)
    n, h, w, c = x.shape
    out = np.empty((n, h // 2, w // 2, c), dtype=x.dtype)
    argmax = np.empty((n, h // 2, w // 2, c), dtype=np.uint8)
    _maxpool_forward_kernel(x, out, argmax)
    return out, argmax


def maxpool_backward(dout: np.ndarray, argmax: np.ndarray) -> np.ndarray:
    """dout (N, H/2, W/2, C) + argmax -> dx (N, H, W, C); numba version of the reference."""
    dout = np.ascontiguousarray(dout)
    n, ho, wo, c = dout.shape
    dx = np.empty((n, 2 * ho, 2 * wo, c), dtype=dout.dtype)
    _maxpool_backward_kernel(dout, np.ascontiguousarray(argmax), dx)
    return dx
