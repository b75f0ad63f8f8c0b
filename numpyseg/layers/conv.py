"""Conv2d: k x k, stride 1, 'same' padding, NHWC input, HWIO kernel.

Forward (p = k // 2, x zero outside the image):

    out[n, i, j, o] = b[o] + sum_{di, dj, c} x[n, i + di - p, j + dj - p, c] * w[di, dj, c, o]

With im2col, X = cols(x) of shape (N*H*W, k*k*C) and W2 = w.reshape(k*k*C, C_out):

    out = X @ W2 + b

Backward, for an upstream gradient dout of shape (N, H, W, C_out), D = dout as (N*H*W, C_out):

    dW2 = X^T @ D          (reshape to (k, k, C, C_out))
    db  = sum of D over rows
    dX  = D @ W2^T,  dx = col2im(dX)   (the adjoint of im2col: overlaps add up)

Equivalently, without matrices, dx is itself a 'same' convolution of dout with
the kernel flipped in space and with in/out channels swapped:

    dx[n, i, j, c] = sum_{di, dj, o} dout[n, i - di + p, j - dj + p, o] * w[di, dj, c, o]

Two implementations sit side by side:

- `conv2d_forward_simple` / `conv2d_backward_simple`: the im2col + GEMM formulas
  above, literally.  Easy to follow, but at 592 x 592 the column matrix is nine
  times the input (200 MB for 16 channels), so memory traffic dominates.
- `conv2d_forward` / `conv2d_backward` (used by `Conv2d`): direct numba kernels
  from `numpyseg.kernels.conv_direct` that compute the same sums tile by tile
  in CPU registers and never build the column matrix; the cache is just (x, w),
  and the backward recomputes what it needs.  See that module for how and why.

Tests check both against `conv2d_naive` and against each other.
"""

from __future__ import annotations

import numpy as np

from numpyseg.kernels.conv_direct import (conv2d_bias_grad_direct, conv2d_direct,
                                          conv2d_input_grad_direct, conv2d_weight_grad_direct)
from numpyseg.kernels.im2col import col2im, im2col
from numpyseg.layers.init import as_rng, he_normal
from numpyseg.layers.module import Module, Parameter, check_input


def conv2d_naive(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Reference 'same' convolution with explicit loops over kernel offsets.

    Args:
        x: (N, H, W, C_in).  w: (k, k, C_in, C_out).  b: (C_out,) or None.
    Returns:
        (N, H, W, C_out).
    """
    k = w.shape[0]
    p = k // 2
    n, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[3]), dtype=np.result_type(x, w))
    for di in range(k):
        for dj in range(k):
            # every output pixel sees the input shifted by (di - p, dj - p)
            out += np.einsum("nhwc,co->nhwo", xp[:, di : di + h, dj : dj + wd, :], w[di, dj])
    if b is not None:
        out += b
    return out


def conv2d_forward_simple(x: np.ndarray, w: np.ndarray, b: np.ndarray | None):
    """'same' convolution via im2col + one GEMM (the readable version).

    Returns:
        out (N, H, W, C_out) and the cache (x shape, cols, w) for the backward.
    """
    n, h, wd, c = x.shape
    k, _, _, c_out = w.shape
    cols = im2col(x, k).reshape(n * h * wd, k * k * c)
    out = cols @ w.reshape(k * k * c, c_out)
    if b is not None:
        out += b
    return out.reshape(n, h, wd, c_out), (x.shape, cols, w)


def conv2d_backward_simple(dout: np.ndarray, cache):
    """Gradients of conv2d_forward_simple.

    Returns:
        dx (N, H, W, C_in), dw (k, k, C_in, C_out), db (C_out,).
    """
    (n, h, wd, c), cols, w = cache
    k, _, _, c_out = w.shape
    d2 = dout.reshape(n * h * wd, c_out)
    dw = (cols.T @ d2).reshape(w.shape)
    db = d2.sum(axis=0)
    dcols = d2 @ w.reshape(k * k * c, c_out).T
    dx = col2im(dcols.reshape(n, h, wd, k, k, c), k)
    return dx, dw, db


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None):
    """Fast 'same' convolution (direct numba kernels, no column matrix).

    Returns:
        out (N, H, W, C_out) and the cache (x, w) for the backward.
    """
    return conv2d_direct(x, w, b), (x, w)


def conv2d_backward(dout: np.ndarray, cache, input_grad: bool = True):
    """Gradients of conv2d_forward.

        dx = conv(dout, w flipped, channels swapped)
        dw[di, dj, c, o] = sum_{n,i,j} x[n, i+di-p, j+dj-p, c] * dout[n, i, j, o]
        db[o] = sum_{n,i,j} dout[n, i, j, o]

    Args:
        input_grad: compute dx; False skips it (dx is returned as None).
    Returns:
        dx (N, H, W, C_in) or None, dw (k, k, C_in, C_out), db (C_out,).
    """
    x, w = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dx = conv2d_input_grad_direct(dout, w) if input_grad else None
    dw = conv2d_weight_grad_direct(x, dout, w.shape[0])
    db = conv2d_bias_grad_direct(dout)
    return dx, dw, db


class Conv2d(Module):
    """k x k stride-1 'same' convolution (Keras Conv2D(padding='same')).

    Parameters: weight (k, k, C_in, C_out), he_normal; bias (C_out,), zeros.
    Shapes: (N, H, W, C_in) -> (N, H, W, C_out).

    Args:
        input_grad: whether backward computes dL/dx (attribute `needs_input_grad`,
            which can be changed at any time).  The first convolution of a network
            sees the image, whose gradient no training step uses; computing it there
            is a whole extra convolution (C_out -> C_in at full resolution), so the
            models switch it off and that layer's backward returns None.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 bias: bool = True, rng=None, input_grad: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"Conv2d 'same' padding needs an odd kernel size, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.needs_input_grad = input_grad
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        self.weight = Parameter(he_normal(as_rng(rng), shape))
        self.bias = Parameter(np.zeros(out_channels, dtype=np.float32)) if bias else None

    def forward(self, x):
        check_input("Conv2d", x, self.in_channels)
        b = self.bias.data if self.bias is not None else None
        out, cache = conv2d_forward(x, self.weight.data, b)
        self._keep(cache)
        return out

    def backward(self, dout):
        """Adds dL/dweight and dL/dbias; returns dL/dx, or None when needs_input_grad is False."""
        dx, dw, db = conv2d_backward(dout, self._take_cache(), input_grad=self.needs_input_grad)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def __repr__(self):
        extra = "" if self.needs_input_grad else ", input_grad=False"
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"bias={self.bias is not None}{extra})")
