"""Conv2d: k x k, stride 1, 'same' padding, NHWC input, HWIO kernel.

Forward (p = k // 2, x zero outside the image):

    out[n, i, j, o] = b[o] + sum_{di, dj, c} x[n, i + di - p, j + dj - p, c] * w[di, dj, c, o]

With im2col, X = cols(x) of shape (N*H*W, k*k*C) and W2 = w.reshape(k*k*C, C_out):

    cols[n, i, j, di, dj, c] = x[n, i + di - p, j + dj - p, c]      (0 outside)
    out = X @ W2 + b

Backward, for an upstream gradient dout of shape (N, H, W, C_out), D = dout as (N*H*W, C_out):

    dW2 = X^T @ D          (reshape to (k, k, C, C_out))
    db  = sum of D over rows
    dX  = D @ W2^T,  dx = col2im(dX)   (the adjoint of im2col: overlaps add up)

col2im is the adjoint (transpose) of im2col: every entry of `cols` was copied from
one entry of x, so its gradient is *added* back there.  Patches overlap, so an input
pixel receives up to k*k contributions: col2im must accumulate (``+=``), never assign.

Equivalently, without matrices, dx is itself a 'same' convolution of dout with
the kernel flipped in space and with in/out channels swapped:

    dx[n, i, j, c] = sum_{di, dj, o} dout[n, i - di + p, j - dj + p, o] * w[di, dj, c, o]

Two implementations sit side by side (numpyseg.backends chooses; `Conv2d` runs the
active one):

- `conv2d_forward_reference` / `conv2d_backward_reference`: the im2col + GEMM
  formulas above, literally, in NumPy (`im2col` and `col2im` slice the padded input
  once per kernel offset).  Easy to follow, but at 592 x 592 the column matrix is
  nine times the input (200 MB for 16 channels), so memory traffic dominates.
- `conv2d_forward_fast` / `conv2d_backward_fast`: direct numba kernels
  (`numpyseg.kernels.conv_direct`, with the register tile chosen for this CPU) that
  compute the same sums tile by tile in CPU registers and never build the column
  matrix; the cache is just (x, w), and the backward recomputes what it needs.
  See that module for how and why.

Tests check the two against each other and against the loop definition.

References:
    K. Chellapilla, S. Puri, P. Simard, "High performance convolutional neural
    networks for document processing", 10th Int. Workshop on Frontiers in
    Handwriting Recognition, 2006 (convolution as im2col + one matrix product).
    O. Ronneberger, P. Fischer, T. Brox, "U-Net: convolutional networks for
    biomedical image segmentation", MICCAI 2015 (the 3x3 'same' convolutions of the U-Net).
"""

from __future__ import annotations

import numpy as np

from numpyseg.backends import pick
from numpyseg.kernels import conv_direct
from numpyseg.layers.init import as_rng, he_normal
from numpyseg.layers.module import Module, Parameter, check_input


# ------------------------------------------------------------------ reference
def im2col(x: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W, C) -> cols (N, H, W, k, k, C) by slicing the padded input k*k times."""
    n, h, w, c = x.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    cols = np.empty((n, h, w, k, k, c), dtype=x.dtype)
    for di in range(k):
        for dj in range(k):
            cols[:, :, :, di, dj, :] = xp[:, di : di + h, dj : dj + w, :]
    return cols


def col2im(cols: np.ndarray, k: int) -> np.ndarray:
    """Adjoint of im2col: (N, H, W, k, k, C) -> (N, H, W, C), accumulating overlaps."""
    n, h, w, _, _, c = cols.shape
    p = k // 2
    xp = np.zeros((n, h + 2 * p, w + 2 * p, c), dtype=cols.dtype)
    for di in range(k):
        for dj in range(k):
            xp[:, di : di + h, dj : dj + w, :] += cols[:, :, :, di, dj, :]
    return xp[:, p : p + h, p : p + w, :].copy()


def conv2d_forward_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None):
    """'same' convolution via im2col + one GEMM, in NumPy.

    Args:
        x: (N, H, W, C_in).  w: (k, k, C_in, C_out).  b: (C_out,) or None.
    Returns:
        out (N, H, W, C_out) in x's dtype, and the cache (x shape, cols, w) for the backward.
    """
    n, h, wd, c = x.shape
    k, _, _, c_out = w.shape
    w = w.astype(x.dtype, copy=False)
    cols = im2col(x, k).reshape(n * h * wd, k * k * c)
    out = cols @ w.reshape(k * k * c, c_out)
    if b is not None:
        out += b
    return out.reshape(n, h, wd, c_out), (x.shape, cols, w)


def conv2d_backward_reference(dout: np.ndarray, cache, input_grad: bool = True):
    """Gradients of conv2d_forward_reference: dW2 = X^T D, db = sum D, dx = col2im(D W2^T).

    Args:
        input_grad: compute dx; False skips it (dx is returned as None).
    Returns:
        dx (N, H, W, C_in) or None, dw (k, k, C_in, C_out), db (C_out,).
    """
    (n, h, wd, c), cols, w = cache
    k, _, _, c_out = w.shape
    d2 = dout.reshape(n * h * wd, c_out)
    dw = (cols.T @ d2).reshape(w.shape)
    db = d2.sum(axis=0)
    dx = None
    if input_grad:
        dcols = d2 @ w.reshape(k * k * c, c_out).T
        dx = col2im(dcols.reshape(n, h, wd, k, k, c), k)
    return dx, dw, db


# ----------------------------------------------------------------------- fast
def conv2d_forward_fast(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                        variant: str | None = None):
    """'same' convolution by direct numba kernels (no column matrix).

    Args:
        x, w, b: as conv2d_forward_reference (the output is in x's dtype).
        variant: the register tile ('avx512', 'avx2', 'portable'; None: this CPU's,
            numpyseg.kernels.tiles.TILE_VARIANT).
    Returns:
        out (N, H, W, C_out) and the cache (x, w, variant) for the backward.
    """
    return conv_direct.conv_forward(x, w, b, variant=variant), (x, w, variant)


def conv2d_backward_fast(dout: np.ndarray, cache, input_grad: bool = True):
    """Gradients of conv2d_forward_fast (direct numba kernels):

        dx = conv(dout, w flipped, channels swapped)
        dw[di, dj, c, o] = sum_{n,i,j} x[n, i+di-p, j+dj-p, c] * dout[n, i, j, o]
        db[o] = sum_{n,i,j} dout[n, i, j, o]

    Args:
        input_grad: compute dx; False skips it (dx is returned as None).
    Returns:
        dx (N, H, W, C_in) or None, dw (k, k, C_in, C_out), db (C_out,).
    """
    x, w, variant = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dx = conv_direct.conv_input_grad(dout, w, variant=variant) if input_grad else None
    dw = conv_direct.conv_weight_grad(x, dout, w.shape[0], variant=variant)
    db = conv_direct.conv_bias_grad(dout)
    return dx, dw, db


REFERENCE = (conv2d_forward_reference, conv2d_backward_reference)
FAST = (conv2d_forward_fast, conv2d_backward_fast)


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
        forward, backward = pick(REFERENCE, FAST)
        out, cache = forward(x, self.weight.data, b)
        self._keep(cache, backward)
        return out

    def backward(self, dout):
        """Adds dL/dweight and dL/dbias; returns dL/dx, or None when needs_input_grad is False."""
        backward, cache = self._take()
        dx, dw, db = backward(dout, cache, input_grad=self.needs_input_grad)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def __repr__(self):
        extra = "" if self.needs_input_grad else ", input_grad=False"
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"bias={self.bias is not None}{extra})")
