"""Concat: join two NHWC batches along the channel axis.

Forward, for a (N, H, W, C_a) and b (N, H, W, C_b):

    out[..., :C_a] = a,   out[..., C_a:] = b          out: (N, H, W, C_a + C_b)

Backward: each output channel is a copy of exactly one input channel, so the upstream
gradient is split back at the same place:

    da = dout[..., :C_a],   db = dout[..., C_a:]

References:
    O. Ronneberger, P. Fischer, T. Brox, "U-Net: convolutional networks for biomedical
    image segmentation", MICCAI 2015, arXiv:1505.04597 (skip connections that
    concatenate encoder and decoder features).
"""

from __future__ import annotations

import numpy as np

from numpyseg.layers.module import Module, check_input


def concat_forward(a: np.ndarray, b: np.ndarray):
    """Returns out (N, H, W, C_a + C_b) and the cache C_a."""
    return np.concatenate([a, b], axis=3), a.shape[3]


def concat_backward(dout: np.ndarray, cache):
    """Returns (da, db), contiguous copies so later in-place updates cannot alias dout."""
    c_a = cache
    return np.ascontiguousarray(dout[..., :c_a]), np.ascontiguousarray(dout[..., c_a:])


class Concat(Module):
    """Channel concatenation of two batches with the same N, H, W; no parameters."""

    def forward(self, a, b):
        check_input("Concat", a)
        check_input("Concat", b)
        if a.shape[:3] != b.shape[:3]:
            raise ValueError(
                f"Concat needs inputs with the same (N, H, W), got shapes {a.shape} and {b.shape}"
            )
        out, cache = concat_forward(a, b)
        self._keep(cache)
        return out

    def backward(self, dout):
        return concat_backward(dout, self._take_cache())
