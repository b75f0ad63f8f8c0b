"""Spatial attention (SA-UNet bottleneck) and cross-scale spatial attention (SA-UNetv2 skips).

Both compute one gate s in (0, 1) per pixel from a two-channel summary of the
features, and rescale every channel of a feature map by it.  Notation: a pixel is
p = (n, h, w); conv is the k x k 'same' convolution 2 -> 1 without bias (weight w,
shape (k, k, 2, 1)); sigma(z) = 1 / (1 + exp(-z)).

SpatialAttention, x of shape (N, H, W, C):

    m_p = (1/C) sum_c x_pc             (mean over channels)
    M_p = max_c x_pc,  c*_p = first channel attaining it
    a   = concat[m, M]                 (N, H, W, 2)
    z_p = sum_{d, ch} a_{p + d, ch} w[d, ch],  s = sigma(z)     (N, H, W, 1)
          (d = (di, dj) - k//2 runs over the k x k offsets; a is 0 outside the image)
    out_pc = x_pc * s_p                (s broadcast over channels)

    Backward, g = dL/dout (N, H, W, C):
      through the product:  dx_pc  = g_pc * s_p            (direct path)
                            ds_p   = sum_c g_pc * x_pc     (s is shared by all channels)
      through the sigmoid:  dz_p   = ds_p * s_p * (1 - s_p)          (sigma' = sigma (1 - sigma))
      through the conv:     da_{p, ch} = sum_d dz_{p - d} w[d, ch]
                            dw[d, ch]  = sum_p a_{p + d, ch} dz_p
      through the mean:     dx_pc += da_p0 / C             (every channel has weight 1/C)
      through the max:      dx_{p, c*_p} += da_p1          (only the winning channel moves M;
                            at a tie the max is not differentiable and the first arg-max
                            channel takes the gradient)

CrossScaleSpatialAttention, enc (N, H, W, C_e) and dec (N, H, W, C_d):

    a = concat[mean_c(enc), mean_c(dec)],  s = sigma(conv(a; w)),  out = enc * s

    Backward: ds_p = sum_c g_pc enc_pc, dz = ds * s * (1 - s), da and dw as above,
              d_enc_pc = g_pc * s_p + da_p0 / C_e
              d_dec_pc = da_p1 / C_d                   (dec reaches the output only via the gate)

The 98 weights (k = 7) sit in a child `conv` (a `GateWeight`), so the parameter is
named `conv.weight` as in the authors' Keras model, where the gate is a Conv2D layer.
The gate convolution itself is the 'same' convolution of numpyseg/layers/conv.py with
C_out = 1 and no bias: the references below call `conv2d_forward_reference` /
`conv2d_backward_reference`, and the fused kernels compute it row by row in place.

Looking at the gate.  With `layer.record_gate = True` each forward pass leaves its gate
s in `layer.gate`, (N, H, W) in (0, 1) in the input's dtype (the maps
`numpyseg predict --explain` draws); False (the default) stores nothing and costs nothing.

Two implementations sit side by side (numpyseg.backends chooses; the layers run the
active one):

- `spatial_attention_forward_reference` / `spatial_attention_backward_reference` (and
  `cross_scale_attention_*_reference`): the formulas above in NumPy.  Easy to follow,
  but every line makes a full-size temporary (dout * x, dout * s, the broadcast d_dec, ...).
- `spatial_attention_forward_fast` / `spatial_attention_backward_fast` (and the CSA
  ones): numba kernels (numpyseg/kernels/attention.py) that fuse the channel
  statistics into one pass over x, and the gate convolution, sigmoid and scaling into
  one pass per row, storing only per-pixel maps (a, s, the arg-max).  Their caches
  hold x, a (2 planes), s and the arg-max, not 98 copies of a as im2col would.

Tests check both against each other and against the formulas.

References:
    S. Woo, J. Park, J.-Y. Lee, I. S. Kweon, "CBAM: convolutional block attention
    module", ECCV 2018, arXiv:1807.06521 (the spatial attention map
    sigma(conv7x7([mean_c, max_c]))).
    C. Guo, M. Szemenyei, Y. Yi, W. Wang, B. Chen, C. Fan, "SA-UNet: spatial attention
    U-Net for retinal vessel segmentation", ICPR 2020, arXiv:2004.03696 (spatial
    attention at the U-Net bottleneck).
    C. Guo, A. N. Christensen, A. B. Dahl, Y. Yi, M. R. Hannemose, "SA-UNetv2: rethinking
    spatial attention U-Net for retinal vessel segmentation", arXiv:2509.11774, 2025
    (cross-scale spatial attention on the skip connections).
"""

from __future__ import annotations

import numba
import numpy as np

from numpyseg.backends import pick
from numpyseg.kernels.attention import (cross_scale_attention_backward_kernel, gate_grad_kernel,
                                        gate_scale_kernel, mean_max_kernel, spatial_attention_backward_kernel,
                                        two_means_kernel)
from numpyseg.layers.activations import sigmoid
from numpyseg.layers.conv import conv2d_backward_reference, conv2d_forward_reference
from numpyseg.layers.init import as_rng, he_normal
from numpyseg.layers.module import Module, Parameter, check_input, grad_enabled


class GateWeight(Module):
    """The weight of an attention gate's k x k convolution 2 -> 1 (no bias): `weight` (k, k, 2, 1).

    Only a holder, so that the parameter is named `conv.weight` (the authors' Keras
    layer names, and every saved checkpoint); the attention layer computes the
    convolution itself.  he_normal, as Keras' Conv2D default and `Conv2d`.
    """

    def __init__(self, kernel_size: int = 7, rng=None):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"attention gate 'same' padding needs an odd kernel size, got {kernel_size}")
        self.kernel_size = kernel_size
        self.weight = Parameter(he_normal(as_rng(rng), (kernel_size, kernel_size, 2, 1)))

    def __repr__(self):
        return f"GateWeight(kernel_size={self.kernel_size})"


def _gate_of(cache):
    """The gate s (N, H, W) kept last in either implementation's cache."""
    s = cache[-1]
    return s.reshape(s.shape[:3])


def _tasks(rows: int) -> int:
    """Parallel tasks of the backward kernels: one per numba thread (at most one per row)."""
    return max(1, min(numba.get_num_threads(), rows))


def _as(a: np.ndarray, dtype) -> np.ndarray:
    """`a` as a C-contiguous array of `dtype` (a copy only when needed): the kernels need that."""
    return np.ascontiguousarray(a, dtype=dtype)


# ------------------------------------------------------------ spatial attention
def spatial_attention_forward_reference(x: np.ndarray, w: np.ndarray, keep: bool = True):
    """out = x * sigma(conv(concat[mean_c x, max_c x]; w)), in NumPy.

    Args:
        x: (N, H, W, C).  w: (k, k, 2, 1).  keep: return the cache (else None).
    Returns:
        out (N, H, W, C) in x's dtype and the cache (x, arg, a, conv cache, s (N, H, W, 1)).
    """
    arg = np.argmax(x, axis=3)[..., None]  # first maximum: the channel the max gradient goes to
    a = np.concatenate([x.mean(axis=3, keepdims=True), np.take_along_axis(x, arg, axis=3)], axis=3)
    z, conv_cache = conv2d_forward_reference(a, w)
    s = sigmoid(z)
    return x * s, ((x, arg, a, conv_cache, s) if keep else None)


def spatial_attention_backward_reference(dout: np.ndarray, cache):
    """Returns dx (N, H, W, C) and dw (k, k, 2, 1); derivation in the module docstring."""
    x, arg, a, conv_cache, s = cache
    ds = np.sum(dout * x, axis=3, keepdims=True)
    dz = ds * s * (1 - s)
    da, dw, _ = conv2d_backward_reference(dz, conv_cache)
    dx = dout * s
    dx += da[..., :1] / x.shape[3]
    # each pixel has one arg-max channel, so this indexed add never hits an entry twice
    np.put_along_axis(dx, arg, np.take_along_axis(dx, arg, axis=3) + da[..., 1:], axis=3)
    return dx, dw


def spatial_attention_forward_fast(x: np.ndarray, w: np.ndarray, keep: bool = True):
    """Fused numba version of spatial_attention_forward_reference, two passes over x.

    Returns:
        out (N, H, W, C) and the cache (x, w, a (N, 2, H, W), arg (N, H, W), s (N, H, W))
        for the backward; None when not `keep` (then neither s nor the arg-max is stored).
    """
    x = np.ascontiguousarray(x)
    n, h, wd, _ = x.shape
    a = np.empty((n, 2, h, wd), dtype=x.dtype)
    arg = np.empty((n, h, wd) if keep else (0, 0, 0), dtype=np.int32)
    s = np.empty((n, h, wd) if keep else (0, 0, 0), dtype=x.dtype)
    out = np.empty_like(x)
    mean_max_kernel(x, a, arg)
    gate_scale_kernel(x, a, _as(w, x.dtype), s, out)
    return out, ((x, w, a, arg, s) if keep else None)


def spatial_attention_backward_fast(dout: np.ndarray, cache):
    """Fused numba version of spatial_attention_backward_reference: dx (N, H, W, C), dw (k, k, 2, 1)."""
    x, w, a, arg, s = cache
    g = _as(dout, x.dtype)
    n, h, wd, _ = x.shape
    w = _as(w, x.dtype)
    dz = np.empty((n, h, wd), dtype=x.dtype)
    gate_grad_kernel(g, x, s, dz)
    dx = np.empty_like(x)
    partial = np.empty((_tasks(n * h),) + w.shape[:3], dtype=np.float64)
    spatial_attention_backward_kernel(g, s, dz, a, arg, w, dx, partial)
    return dx, partial.sum(axis=0).reshape(w.shape).astype(x.dtype)


SPATIAL_REFERENCE = (spatial_attention_forward_reference, spatial_attention_backward_reference)
SPATIAL_FAST = (spatial_attention_forward_fast, spatial_attention_backward_fast)


class SpatialAttention(Module):
    """SA-UNet spatial attention: x * sigmoid(conv_kxk([mean_c x, max_c x])).

    Parameters: conv.weight (k, k, 2, 1), he_normal (Keras Conv2D default of the authors).
    Shapes: (N, H, W, C) -> (N, H, W, C).
    Attributes: record_gate (bool, default False) and gate, the last forward pass's
    s (N, H, W) when record_gate is True, else None (see the module docstring).
    """

    def __init__(self, kernel_size: int = 7, rng=None):
        super().__init__()
        self.conv = GateWeight(kernel_size, rng=rng)
        self.record_gate, self.gate = False, None

    def forward(self, x):
        check_input("SpatialAttention", x)
        keep = grad_enabled() or self.record_gate
        forward, backward = pick(SPATIAL_REFERENCE, SPATIAL_FAST)
        out, cache = forward(x, self.conv.weight.data, keep)
        self.gate = _gate_of(cache) if self.record_gate else None
        self._keep(cache, backward)
        return out

    def backward(self, dout):
        backward, cache = self._take()
        dx, dw = backward(dout, cache)
        self.conv.weight.grad += dw
        return dx

    def __repr__(self):
        return f"SpatialAttention(kernel_size={self.conv.kernel_size})"


# ------------------------------------------------ cross-scale spatial attention
def cross_scale_attention_forward_reference(enc: np.ndarray, dec: np.ndarray, w: np.ndarray, keep: bool = True):
    """out = enc * sigma(conv(concat[mean_c enc, mean_c dec]; w)), in NumPy.

    Args:
        enc: (N, H, W, C_e).  dec: (N, H, W, C_d).  w: (k, k, 2, 1).  keep: return the cache.
    Returns:
        out (N, H, W, C_e) and the cache (enc, dec shape, conv cache, s (N, H, W, 1)), or None.
    """
    a = np.concatenate([enc.mean(axis=3, keepdims=True), dec.mean(axis=3, keepdims=True)], axis=3)
    z, conv_cache = conv2d_forward_reference(a, w)
    s = sigmoid(z)
    return enc * s, ((enc, dec.shape, conv_cache, s) if keep else None)


def cross_scale_attention_backward_reference(dout: np.ndarray, cache):
    """Returns d_enc (N, H, W, C_e), d_dec (N, H, W, C_d) and dw (k, k, 2, 1)."""
    enc, dec_shape, conv_cache, s = cache
    ds = np.sum(dout * enc, axis=3, keepdims=True)
    dz = ds * s * (1 - s)
    da, dw, _ = conv2d_backward_reference(dz, conv_cache)
    d_enc = dout * s
    d_enc += da[..., :1] / enc.shape[3]
    d_dec = np.broadcast_to(da[..., 1:] / dec_shape[3], dec_shape).astype(enc.dtype)
    return d_enc, d_dec, dw


def cross_scale_attention_forward_fast(enc: np.ndarray, dec: np.ndarray, w: np.ndarray, keep: bool = True):
    """Fused numba version of the reference: two passes over enc, one over dec.

    Returns:
        out (N, H, W, C_e) and the cache (enc, C_d, w, a (N, 2, H, W), s (N, H, W)) for
        the backward (None when not `keep`).
    """
    enc = np.ascontiguousarray(enc)
    dec = _as(dec, enc.dtype)
    n, h, wd, _ = enc.shape
    a = np.empty((n, 2, h, wd), dtype=enc.dtype)
    s = np.empty((n, h, wd) if keep else (0, 0, 0), dtype=enc.dtype)
    out = np.empty_like(enc)
    two_means_kernel(enc, dec, a)
    gate_scale_kernel(enc, a, _as(w, enc.dtype), s, out)
    return out, ((enc, dec.shape[3], w, a, s) if keep else None)


def cross_scale_attention_backward_fast(dout: np.ndarray, cache):
    """Fused numba version of the reference: d_enc (N, H, W, C_e), d_dec (N, H, W, C_d), dw (k, k, 2, 1)."""
    enc, dec_channels, w, a, s = cache
    g = _as(dout, enc.dtype)
    n, h, wd, _ = enc.shape
    w = _as(w, enc.dtype)
    dz = np.empty((n, h, wd), dtype=enc.dtype)
    gate_grad_kernel(g, enc, s, dz)
    d_enc = np.empty_like(enc)
    d_dec = np.empty((n, h, wd, dec_channels), dtype=enc.dtype)
    partial = np.empty((_tasks(n * h),) + w.shape[:3], dtype=np.float64)
    cross_scale_attention_backward_kernel(g, s, dz, a, w, d_enc, d_dec, partial)
    return d_enc, d_dec, partial.sum(axis=0).reshape(w.shape).astype(enc.dtype)


CSA_REFERENCE = (cross_scale_attention_forward_reference, cross_scale_attention_backward_reference)
CSA_FAST = (cross_scale_attention_forward_fast, cross_scale_attention_backward_fast)


class CrossScaleSpatialAttention(Module):
    """SA-UNetv2 CSA: enc * sigmoid(conv_kxk([mean_c enc, mean_c dec])).

    forward(enc, dec) with the same N, H, W (channel counts may differ);
    backward(dout) -> (d_enc, d_dec).
    Parameters: conv.weight (k, k, 2, 1), he_normal.
    Shapes: (N, H, W, C_e), (N, H, W, C_d) -> (N, H, W, C_e).
    Attributes: record_gate and gate, as SpatialAttention's.
    """

    def __init__(self, kernel_size: int = 7, rng=None):
        super().__init__()
        self.conv = GateWeight(kernel_size, rng=rng)
        self.record_gate, self.gate = False, None

    def forward(self, enc, dec):
        check_input("CrossScaleSpatialAttention", enc)
        check_input("CrossScaleSpatialAttention", dec)
        if enc.shape[:3] != dec.shape[:3]:
            raise ValueError(
                "CrossScaleSpatialAttention needs enc and dec with the same (N, H, W), "
                f"got shapes {enc.shape} and {dec.shape}"
            )
        keep = grad_enabled() or self.record_gate
        forward, backward = pick(CSA_REFERENCE, CSA_FAST)
        out, cache = forward(enc, dec, self.conv.weight.data, keep)
        self.gate = _gate_of(cache) if self.record_gate else None
        self._keep(cache, backward)
        return out

    def backward(self, dout):
        backward, cache = self._take()
        d_enc, d_dec, dw = backward(dout, cache)
        self.conv.weight.grad += dw
        return d_enc, d_dec

    def __repr__(self):
        return f"CrossScaleSpatialAttention(kernel_size={self.conv.kernel_size})"
