r"""ConvTranspose2d: k x k, stride s, Keras/TensorFlow 'same' padding, NHWC input.

Keras stores the kernel as (kh, kw, C_out, C_in) and so do we.  For an input x of
shape (N, H, W, C_in) the output has shape (N, s*H, s*W, C_out) and, in 1-D
(p0 = max(k - s, 0) // 2 is the 'same' offset; p0 = 0 for the SA-UNetv2 case k = 3, s = 2),

    out[j, o] = b[o] + sum over (i, d) with s*i + d - p0 = j of sum_c x[i, c] * w[d, o, c],

for j = 0 .. s*H - 1; in 2-D the same holds independently for rows and columns.

Alignment for k = 3, s = 2, H = 3 (each input pixel paints w[0], w[1], w[2] onto three
consecutive output pixels starting at 2*i; neighbours overlap on one pixel):

    input  i        0               1               2
                  / | \           / | \           / | \
                w0 w1  w2       w0 w1  w2       w0 w1  w2
    output j    0   1   2       2   3   4       4   5   (6: dropped)

    out[0] = x0 w0          out[3] = x1 w1
    out[1] = x0 w1          out[4] = x1 w2 + x2 w0
    out[2] = x0 w2 + x1 w0  out[5] = x2 w1

Why this and not PyTorch's usual "padding=1, output_padding=1": a transposed
convolution is the adjoint (backward) of a strided convolution.  TensorFlow's 'same'
padding for that strided convolution, on an input of size 2H, needs k - s = 1 zero in
total and puts it *after* the image (pad_before = (k - s) // 2 = 0).  Its adjoint
therefore keeps the start of the full output and drops the last pixel: it equals
PyTorch ConvTranspose2d(k=3, s=2, padding=0) keeping the first 2H rows and columns.
PyTorch's padding=1 crops one pixel at *both* ends and output_padding=1 adds one back at
the end, so its pixel j is our pixel j + 1: the same numbers, shifted by one pixel
(it drops x0 w0 and keeps x_{H-1} w2).  Weights trained in one convention give a
one-pixel misregistration in the other.

Backward, for an upstream gradient dout of shape (N, s*H, s*W, C_out) (in 2-D, with
r = s*i + di - p0 and q = s*j + dj - p0 the output pixel that tap (di, dj) of input
pixel (i, j) paints, and terms outside the output dropped):

    dx[n, i, j, c]    = sum_{di, dj, o} dout[n, r, q, o] * w[di, dj, o, c]   (a stride-s convolution of dout)
    dw[di, dj, o, c]  = sum_{n, i, j} x[n, i, j, c] * dout[n, r, q, o]
    db[o]             = sum_{n, r, q} dout[n, r, q, o]

Two implementations sit side by side:

- `conv_transpose2d_forward_im2col` / `conv_transpose2d_backward_im2col`: the adjoint of
  a strided convolution as matrices (DeZero style).  With X = x as (N*H*W, C_in) and
  W2 = w.reshape(k*k*C_out, C_in):

    forward:   cols = X @ W2^T   (N*H*W, k*k*C_out): what each input pixel paints
               out  = col2im_strided(cols) + b       (overlaps add up)

    backward:  D    = im2col_strided(dout)   (N*H*W, k*k*C_out): a stride-s gather,
                                              i.e. a strided convolution of dout
               dX   = D @ W2                 (N*H*W, C_in) -> dx
               dW2  = D^T @ X                (k*k*C_out, C_in) -> dw (k, k, C_out, C_in)
               db   = sum of dout over N, H, W

  Easy to follow, but the column matrix holds 9*C_out floats per input pixel, and
  the BLAS threads that spin on after each GEMM slow down the numba kernels that
  follow (both pools want the same cores).
- `conv_transpose2d_forward` / `conv_transpose2d_backward` (used by `ConvTranspose2d`):
  direct numba kernels that compute the sums above tile by tile in registers, with
  no column matrix and no BLAS call; the cache is just (x, w, stride).

Both kinds of kernel live in numpyseg/kernels/transpose.py; tests check them against
`conv_transpose2d_naive` and against each other.
"""

from __future__ import annotations

import numpy as np

from numpyseg.kernels.conv_direct import conv2d_bias_grad_direct
from numpyseg.kernels.transpose import (col2im_strided, conv_transpose2d_direct,
                                        conv_transpose2d_input_grad_direct,
                                        conv_transpose2d_weight_grad_direct, im2col_strided)
from numpyseg.layers.init import as_rng, glorot_uniform
from numpyseg.layers.module import Module, Parameter, check_input


def same_offset(k: int, stride: int) -> int:
    """Zeros TensorFlow puts before the image in the 'same' strided conv: max(k - s, 0) // 2."""
    return max(k - stride, 0) // 2


def conv_transpose2d_naive(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                           stride: int = 2) -> np.ndarray:
    """Reference transposed convolution: the definition, one input pixel at a time.

    Every input pixel (i, j) adds w[di, dj] @ x[i, j] onto output pixel
    (s*i + di - p0, s*j + dj - p0) when that pixel lies inside the (s*H, s*W) output.

    Args:
        x: (N, H, W, C_in).  w: (k, k, C_out, C_in).  b: (C_out,) or None.
    Returns:
        (N, s*H, s*W, C_out).
    """
    n, h, wd, _ = x.shape
    k, _, c_out, _ = w.shape
    p0 = same_offset(k, stride)
    ho, wo = stride * h, stride * wd
    out = np.zeros((n, ho, wo, c_out), dtype=np.result_type(x, w))
    for i in range(h):
        for j in range(wd):
            for di in range(k):
                for dj in range(k):
                    r, c = stride * i + di - p0, stride * j + dj - p0
                    if 0 <= r < ho and 0 <= c < wo:
                        out[:, r, c, :] += x[:, i, j, :] @ w[di, dj].T
    if b is not None:
        out += b
    return out


def conv_transpose2d_forward_im2col(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 2):
    """Transposed convolution as one GEMM, then the numba col2im_strided (the matrix version).

    Args:
        x: (N, H, W, C_in).  w: (k, k, C_out, C_in).  b: (C_out,) or None.
    Returns:
        out (N, s*H, s*W, C_out) and the cache (x, w, stride) for the backward.
    """
    n, h, wd, c_in = x.shape
    k, _, c_out, _ = w.shape
    cols = x.reshape(n * h * wd, c_in) @ w.reshape(k * k * c_out, c_in).T
    out = col2im_strided(cols.reshape(n, h, wd, k, k, c_out), stride, same_offset(k, stride),
                         stride * h, stride * wd)
    if b is not None:
        out += b
    return out, (x, w, stride)


def conv_transpose2d_backward_im2col(dout: np.ndarray, cache):
    """Gradients of conv_transpose2d_forward_im2col: im2col_strided of dout, then two GEMMs.

    Args:
        dout: (N, s*H, s*W, C_out).
    Returns:
        dx (N, H, W, C_in), dw (k, k, C_out, C_in), db (C_out,).
    """
    x, w, stride = cache
    n, h, wd, c_in = x.shape
    k, _, c_out, _ = w.shape
    d2 = im2col_strided(dout, k, stride, same_offset(k, stride), h, wd).reshape(n * h * wd, k * k * c_out)
    w2 = w.reshape(k * k * c_out, c_in)
    dx = (d2 @ w2).reshape(x.shape)
    dw = (d2.T @ x.reshape(n * h * wd, c_in)).reshape(w.shape)
    db = dout.reshape(-1, c_out).sum(axis=0)
    return dx, dw, db


def conv_transpose2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 2):
    """Fast transposed convolution (direct numba kernel, no column matrix).

    Args:
        x: (N, H, W, C_in).  w: (k, k, C_out, C_in).  b: (C_out,) or None.
    Returns:
        out (N, s*H, s*W, C_out) and the cache (x, w, stride) for the backward.
    """
    out = conv_transpose2d_direct(x, w, b, stride, same_offset(w.shape[0], stride))
    return out, (x, w, stride)


def conv_transpose2d_backward(dout: np.ndarray, cache):
    """Gradients of conv_transpose2d_forward (direct numba kernels); formulas in the module docstring.

    Args:
        dout: (N, s*H, s*W, C_out).
    Returns:
        dx (N, H, W, C_in), dw (k, k, C_out, C_in), db (C_out,).
    """
    x, w, stride = cache
    k = w.shape[0]
    p0 = same_offset(k, stride)
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dx = conv_transpose2d_input_grad_direct(dout, w, x.shape[1], x.shape[2], stride, p0)
    dw = conv_transpose2d_weight_grad_direct(x, dout, k, stride, p0)
    db = conv2d_bias_grad_direct(dout)
    return dx, dw, db


class ConvTranspose2d(Module):
    """Keras Conv2DTranspose(kernel_size, strides=stride, padding='same').

    Parameters: weight (k, k, C_out, C_in) (Keras layout), glorot_uniform; bias (C_out,), zeros.
    Shapes: (N, H, W, C_in) -> (N, stride*H, stride*W, C_out).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 2, bias: bool = True, rng=None):
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError(
                f"ConvTranspose2d needs kernel_size >= 1 and stride >= 1, got {kernel_size} and {stride}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        shape = (kernel_size, kernel_size, out_channels, in_channels)
        self.weight = Parameter(glorot_uniform(as_rng(rng), shape))
        self.bias = Parameter(np.zeros(out_channels, dtype=np.float32)) if bias else None

    def forward(self, x):
        check_input("ConvTranspose2d", x, self.in_channels)
        b = self.bias.data if self.bias is not None else None
        out, cache = conv_transpose2d_forward(x, self.weight.data, b, self.stride)
        self._keep(cache)
        return out

    def backward(self, dout):
        dx, dw, db = conv_transpose2d_backward(dout, self._take_cache())
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def __repr__(self):
        return (f"ConvTranspose2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, bias={self.bias is not None})")
