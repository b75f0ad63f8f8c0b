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

The 98 weights (k = 7) sit in a Conv2d child, so the parameter is named `conv.weight`.

Looking at the gate.  With `layer.record_gate = True` each forward pass leaves its gate
s in `layer.gate`, float32 (N, H, W) in (0, 1) (the maps `numpyseg predict --explain`
draws); False (the default) stores nothing and costs nothing.

Two implementations sit side by side:

- `spatial_attention_forward_reference` / `..._backward_reference` (and the CSA ones):
  the formulas above in NumPy, with the gate convolution of
  `numpyseg.kernels.attention.gate_conv_*_reference`.  Easy to follow, but every line
  makes a full-size temporary (dout * x, dout * s, the broadcast d_dec, ...).
- `spatial_attention_forward` / `..._backward` (used by the layers): numba kernels that
  fuse the channel statistics into one pass over x, and the gate convolution, sigmoid
  and scaling into one pass per row, storing only per-pixel maps (a, s, the arg-max);
  see numpyseg/kernels/attention.py.  Their caches hold x, a (2 planes), s and the
  arg-max, not 98 copies of a as im2col would.

Tests check both against each other and against the formulas.
"""

from __future__ import annotations

import numpy as np

from numpyseg.kernels.attention import (cross_scale_attention_backward_fused,
                                        cross_scale_attention_forward_fused,
                                        gate_conv_backward_reference, gate_conv_forward_reference,
                                        spatial_attention_backward_fused,
                                        spatial_attention_forward_fused)
from numpyseg.layers.conv import Conv2d
from numpyseg.layers.module import Module, check_input, grad_enabled


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """sigma(z) without overflow: exp is only ever taken of -|z| <= 0.

    sigma(z) = 1 / (1 + e^{-z}) for z >= 0 and e^{z} / (1 + e^{z}) for z < 0;
    with e = exp(-|z|) both read  (1 or e) / (1 + e).
    """
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


# ------------------------------------------------------------ spatial attention
def spatial_attention_forward_reference(x: np.ndarray, w: np.ndarray):
    """out = x * sigma(conv(concat[mean_c x, max_c x]; w)), in NumPy.

    Args:
        x: (N, H, W, C).  w: (k, k, 2, 1).
    Returns:
        out (N, H, W, C) and the cache for the backward.
    """
    arg = np.argmax(x, axis=3)[..., None]  # first maximum: the channel the max gradient goes to
    a = np.concatenate([x.mean(axis=3, keepdims=True), np.take_along_axis(x, arg, axis=3)], axis=3)
    s = _sigmoid(gate_conv_forward_reference(a, w))
    return x * s, (x, arg, a, s, w)


def spatial_attention_backward_reference(dout: np.ndarray, cache):
    """Returns dx (N, H, W, C) and dw (k, k, 2, 1); derivation in the module docstring."""
    x, arg, a, s, w = cache
    ds = np.sum(dout * x, axis=3, keepdims=True)
    dz = ds * s * (1 - s)
    da, dw = gate_conv_backward_reference(dz, a, w)
    dx = dout * s
    dx += da[..., :1] / x.shape[3]
    # each pixel has one arg-max channel, so this indexed add never hits an entry twice
    np.put_along_axis(dx, arg, np.take_along_axis(dx, arg, axis=3) + da[..., 1:], axis=3)
    return dx, dw


def spatial_attention_forward(x: np.ndarray, w: np.ndarray, keep: bool | None = None):
    """Fused numba version of spatial_attention_forward_reference.

    Args:
        keep: return the cache; None (default) means grad_enabled().
    Returns:
        out (N, H, W, C) and the cache (x, w, a, arg, s) for the backward, s of shape
        (N, H, W); the cache is None when not kept (under no_grad()), when neither s
        nor the arg-max is stored.
    """
    keep = grad_enabled() if keep is None else keep
    out, maps = spatial_attention_forward_fused(x, w, keep)
    return out, ((x, w) + maps if keep else None)


def spatial_attention_backward(dout: np.ndarray, cache):
    """Fused numba version of spatial_attention_backward_reference: dx (N, H, W, C), dw (k, k, 2, 1)."""
    x, w, a, arg, s = cache
    return spatial_attention_backward_fused(dout, x, w, a, arg, s)


class SpatialAttention(Module):
    """SA-UNet spatial attention: x * sigmoid(conv_kxk([mean_c x, max_c x])).

    Parameters: conv.weight (k, k, 2, 1), he_normal (Keras Conv2D default of the authors).
    Shapes: (N, H, W, C) -> (N, H, W, C).
    Attributes: record_gate (bool, default False) and gate, the last forward pass's
    s (N, H, W) when record_gate is True, else None (see the module docstring).
    """

    def __init__(self, kernel_size: int = 7, rng=None):
        super().__init__()
        self.conv = Conv2d(2, 1, kernel_size, bias=False, rng=rng)
        self.record_gate, self.gate = False, None

    def forward(self, x):
        check_input("SpatialAttention", x)
        keep = grad_enabled() or self.record_gate
        out, cache = spatial_attention_forward(x, self.conv.weight.data, keep)
        self.gate = cache[-1] if self.record_gate else None
        self._keep(cache)
        return out

    def backward(self, dout):
        dx, dw = spatial_attention_backward(dout, self._take_cache())
        self.conv.weight.grad += dw
        return dx

    def __repr__(self):
        return f"SpatialAttention(kernel_size={self.conv.kernel_size})"


# ------------------------------------------------ cross-scale spatial attention
def cross_scale_attention_forward_reference(enc: np.ndarray, dec: np.ndarray, w: np.ndarray):
    """out = enc * sigma(conv(concat[mean_c enc, mean_c dec]; w)), in NumPy.

    Args:
        enc: (N, H, W, C_e).  dec: (N, H, W, C_d).  w: (k, k, 2, 1).
    Returns:
        out (N, H, W, C_e) and the cache for the backward.
    """
    a = np.concatenate([enc.mean(axis=3, keepdims=True), dec.mean(axis=3, keepdims=True)], axis=3)
    s = _sigmoid(gate_conv_forward_reference(a, w))
    return enc * s, (enc, dec.shape, a, s, w)


def cross_scale_attention_backward_reference(dout: np.ndarray, cache):
    """Returns d_enc (N, H, W, C_e), d_dec (N, H, W, C_d) and dw (k, k, 2, 1)."""
    enc, dec_shape, a, s, w = cache
    ds = np.sum(dout * enc, axis=3, keepdims=True)
    dz = ds * s * (1 - s)
    da, dw = gate_conv_backward_reference(dz, a, w)
    d_enc = dout * s
    d_enc += da[..., :1] / enc.shape[3]
    d_dec = np.broadcast_to(da[..., 1:] / dec_shape[3], dec_shape).copy()
    return d_enc, d_dec, dw


def cross_scale_attention_forward(enc: np.ndarray, dec: np.ndarray, w: np.ndarray, keep: bool | None = None):
    """Fused numba version of cross_scale_attention_forward_reference.

    Args:
        keep: return the cache; None (default) means grad_enabled().
    Returns:
        out (N, H, W, C_e) and the cache (enc, C_d, w, a, s) for the backward, s of
        shape (N, H, W) (None when not kept: under no_grad()).
    """
    keep = grad_enabled() if keep is None else keep
    out, maps = cross_scale_attention_forward_fused(enc, dec, w, keep)
    return out, ((enc, dec.shape[3], w) + maps if keep else None)


def cross_scale_attention_backward(dout: np.ndarray, cache):
    """Fused numba version of the reference: d_enc (N, H, W, C_e), d_dec (N, H, W, C_d), dw (k, k, 2, 1)."""
    enc, dec_channels, w, a, s = cache
    return cross_scale_attention_backward_fused(dout, enc, dec_channels, w, a, s)


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
        self.conv = Conv2d(2, 1, kernel_size, bias=False, rng=rng)
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
        out, cache = cross_scale_attention_forward(enc, dec, self.conv.weight.data, keep)
        self.gate = cache[-1] if self.record_gate else None
        self._keep(cache)
        return out

    def backward(self, dout):
        d_enc, d_dec, dw = cross_scale_attention_backward(dout, self._take_cache())
        self.conv.weight.grad += dw
        return d_enc, d_dec

    def __repr__(self):
        return f"CrossScaleSpatialAttention(kernel_size={self.conv.kernel_size})"
