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

Strided im2col / col2im.  Take the stride-s convolution whose adjoint this is: its
input y has size (s*H, s*W) and its output (H, W), with p0 zeros before the image.  Its
patches are

    cols[n, i, j, di, dj, c] = y[n, s*i + di - p0, s*j + dj - p0, c]      (0 outside y)

(`im2col_strided`), and `col2im_strided` is the adjoint of that map: every entry of
`cols` is *added* back onto the pixel of y it was copied from, so overlapping patches
accumulate.

Two implementations sit side by side (numpyseg.backends chooses; `ConvTranspose2d`
runs the active one):

- `conv_transpose2d_forward_reference` / `conv_transpose2d_backward_reference`: the
  adjoint of a strided convolution as matrices (DeZero style), in NumPy.  With X = x as (N*H*W, C_in) and
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
- `conv_transpose2d_forward_fast` / `conv_transpose2d_backward_fast`: direct numba
  kernels (numpyseg/kernels/transpose.py, the register tile chosen for this CPU) that
  compute the sums above tile by tile in registers, with no column matrix and no BLAS
  call; the cache is just (x, w, stride).

Tests check both against each other and against the definition, one input pixel at a time.

References:
    V. Dumoulin, F. Visin, "A guide to convolution arithmetic for deep learning",
    arXiv:1603.07285, 2016 (the transposed convolution as the adjoint of a strided one).
    K. Chellapilla, S. Puri, P. Simard, "High performance convolutional neural
    networks for document processing", IWFHR 2006 (im2col / col2im).
    O. Ronneberger, P. Fischer, T. Brox, "U-Net: convolutional networks for
    biomedical image segmentation", MICCAI 2015 (the up-convolutions of the decoder).
"""

from __future__ import annotations

import numpy as np

from numpyseg.backends import pick
from numpyseg.kernels import transpose
from numpyseg.kernels.conv_direct import conv_bias_grad
from numpyseg.layers.init import as_rng, glorot_uniform
from numpyseg.layers.module import Module, Parameter, check_input


def same_offset(k: int, stride: int) -> int:
    """Zeros TensorFlow puts before the image in the 'same' strided conv: max(k - s, 0) // 2."""
    return max(k - stride, 0) // 2


# ------------------------------------------------------------------ reference
def _padded_size(n_patches: int, n_image: int, k: int, stride: int, offset: int) -> int:
    """Length of a zero-padded buffer holding both every patch and the whole image.

    Buffer index t is image index t - offset; patch (i, d) reads t = s*i + d, at most
    s*(n_patches - 1) + k - 1; the image ends at t = offset + n_image - 1.
    """
    return max(stride * (n_patches - 1) + k, offset + n_image)


def im2col_strided(y: np.ndarray, k: int, stride: int, offset: int, h: int, w: int) -> np.ndarray:
    """(N, Ho, Wo, C) -> cols (N, h, w, k, k, C) by slicing a padded copy of y k*k times."""
    n, ho, wo, c = y.shape
    ph, pw = _padded_size(h, ho, k, stride, offset), _padded_size(w, wo, k, stride, offset)
    yp = np.zeros((n, ph, pw, c), dtype=y.dtype)
    yp[:, offset : offset + ho, offset : offset + wo, :] = y
    cols = np.empty((n, h, w, k, k, c), dtype=y.dtype)
    for di in range(k):
        for dj in range(k):
            # patch row i reads padded row s*i + di: a stride-s slice starting at di
            cols[:, :, :, di, dj, :] = yp[:, di : di + stride * h : stride,
                                          dj : dj + stride * w : stride, :]
    return cols


def col2im_strided(cols: np.ndarray, stride: int, offset: int, ho: int, wo: int) -> np.ndarray:
    """Adjoint of im2col_strided: (N, h, w, k, k, C) -> (N, Ho, Wo, C), accumulating."""
    n, h, w, k, _, c = cols.shape
    ph, pw = _padded_size(h, ho, k, stride, offset), _padded_size(w, wo, k, stride, offset)
    yp = np.zeros((n, ph, pw, c), dtype=cols.dtype)
    for di in range(k):
        for dj in range(k):
            yp[:, di : di + stride * h : stride,
               dj : dj + stride * w : stride, :] += cols[:, :, :, di, dj, :]
    return yp[:, offset : offset + ho, offset : offset + wo, :].copy()


def conv_transpose2d_forward_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                                       stride: int = 2):
    """Transposed convolution as one GEMM, then col2im_strided, in NumPy.

    Args:
        x: (N, H, W, C_in).  w: (k, k, C_out, C_in).  b: (C_out,) or None.
    Returns:
        out (N, s*H, s*W, C_out) in x's dtype and the cache (x, w, stride) for the backward.
    """
    n, h, wd, c_in = x.shape
    k, _, c_out, _ = w.shape
    w = w.astype(x.dtype, copy=False)
    cols = x.reshape(n * h * wd, c_in) @ w.reshape(k * k * c_out, c_in).T
    out = col2im_strided(cols.reshape(n, h, wd, k, k, c_out), stride, same_offset(k, stride),
                         stride * h, stride * wd)
    if b is not None:
        out += b
    return out, (x, w, stride)


def conv_transpose2d_backward_reference(dout: np.ndarray, cache):
    """Gradients of conv_transpose2d_forward_reference: im2col_strided of dout, then two GEMMs.

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


# ----------------------------------------------------------------------- fast
def conv_transpose2d_forward_fast(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                                  stride: int = 2, variant: str | None = None):
    """Transposed convolution by a direct numba kernel (no column matrix).

    Args:
        x: (N, H, W, C_in).  w: (k, k, C_out, C_in).  b: (C_out,) or None.
        variant: the register tile ('avx512', 'avx2', 'portable'; None: this CPU's).
    Returns:
        out (N, s*H, s*W, C_out) and the cache (x, w, stride, variant) for the backward.
    """
    out = transpose.conv_transpose_forward(x, w, b, stride, same_offset(w.shape[0], stride), variant=variant)
    return out, (x, w, stride, variant)


def conv_transpose2d_backward_fast(dout: np.ndarray, cache):
    """Gradients of conv_transpose2d_forward_fast (direct numba kernels); formulas in the module docstring.

    Args:
        dout: (N, s*H, s*W, C_out).
    Returns:
        dx (N, H, W, C_in), dw (k, k, C_out, C_in), db (C_out,).
    """
    x, w, stride, variant = cache
    k = w.shape[0]
    p0 = same_offset(k, stride)
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dx = transpose.conv_transpose_input_grad(dout, w, x.shape[1], x.shape[2], stride, p0, variant=variant)
    dw = transpose.conv_transpose_weight_grad(x, dout, k, stride, p0, variant=variant)
    db = conv_bias_grad(dout)
    return dx, dw, db


REFERENCE = (conv_transpose2d_forward_reference, conv_transpose2d_backward_reference)
FAST = (conv_transpose2d_forward_fast, conv_transpose2d_backward_fast)


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
        forward, backward = pick(REFERENCE, FAST)
        out, cache = forward(x, self.weight.data, b, self.stride)
        self._keep(cache, backward)
        return out

    def backward(self, dout):
        backward, cache = self._take()
        dx, dw, db = backward(dout, cache)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def __repr__(self):
        return (f"ConvTranspose2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, bias={self.bias is not None})")
