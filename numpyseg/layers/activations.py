"""Element-wise activations: sigmoid, SiLU (swish), ReLU.  Any shape, dtype kept.

    sigmoid(x) = s = 1 / (1 + exp(-x))         ds/dx = s * (1 - s)
    silu(x)    = x * s                         d/dx  = s + x * s * (1 - s) = s * (1 + x * (1 - s))
    relu(x)    = max(x, 0)                     d/dx  = [x > 0]   (0 at x = 0, as PyTorch)

Each has a functional pair `xxx_forward(x) -> (out, cache)`,
`xxx_backward(dout, cache) -> dx` and a Module class.  Sigmoid and SiLU run as numba
kernels (numpyseg/kernels/activations.py: one pass over memory instead of five or
more); the NumPy versions here (`sigmoid`, `silu_forward_reference`,
`silu_backward_reference`) are the references the tests compare them with.
"""

from __future__ import annotations

import numpy as np

from numpyseg.kernels.activations import sigmoid_backward_fast, sigmoid_fast, silu_backward_fast, silu_fast
from numpyseg.layers.module import Module


def _check_float(layer: str, x) -> None:
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        what = f"dtype {x.dtype}" if isinstance(x, np.ndarray) else f"type {type(x).__name__}"
        raise ValueError(f"{layer} expects a floating-point NumPy array, got {what}")


# -------------------------------------------------------------------- sigmoid
def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow, in x's dtype.

    exp(-x) overflows for x << 0 (float32 already at x < -88), so write both
    halves with e = exp(-|x|), which lies in (0, 1]:

        x >= 0:  s = 1 / (1 + e)
        x <  0:  s = e / (1 + e) = e * (1 / (1 + e))

    Both branches are accurate in relative terms in their tails.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    # explicit out= arrays: no temporaries, and 0-d inputs stay arrays
    e = np.abs(x, out=np.empty_like(x))
    np.negative(e, out=e)
    np.exp(e, out=e)
    s = np.add(e, 1, out=np.empty_like(x))
    np.reciprocal(s, out=s)
    np.multiply(s, e, out=s, where=x < 0)
    return s


def sigmoid_forward(x: np.ndarray):
    """Returns sigmoid(x) (numba kernel) and the cache (the output s)."""
    s = sigmoid_fast(x)
    return s, s


def sigmoid_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * s * (1 - s) (numba kernel)."""
    return sigmoid_backward_fast(dout, cache)


# ----------------------------------------------------------------------- SiLU
def silu_forward_reference(x: np.ndarray):
    """NumPy reference: y = x * sigmoid(x); the cache is (x, s)."""
    s = sigmoid(x)
    return x * s, (x, s)


def silu_backward_reference(dout: np.ndarray, cache) -> np.ndarray:
    """NumPy reference: dx = dout * s * (1 + x * (1 - s))."""
    x, s = cache
    dx = 1.0 - s
    dx *= x
    dx += 1.0
    dx *= s
    dx *= dout
    return dx


def silu_forward(x: np.ndarray):
    """y = x * sigmoid(x) (numba kernel); the cache is x alone (s is recomputed in backward)."""
    return silu_fast(x), x


def silu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * s * (1 + x * (1 - s)), s = sigmoid(x) recomputed (numba kernel)."""
    return silu_backward_fast(dout, cache)


# ----------------------------------------------------------------------- ReLU
def relu_forward(x: np.ndarray):
    """y = max(x, 0); the cache is the boolean mask x > 0."""
    positive = x > 0
    return np.where(positive, x, np.zeros((), dtype=x.dtype)), positive


def relu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * [x > 0]."""
    return np.where(cache, dout, np.zeros((), dtype=dout.dtype))


# -------------------------------------------------------------------- modules
class _Elementwise(Module):
    """An activation with no parameters: wraps a functional forward/backward pair."""

    _forward = None
    _backward = None

    def forward(self, x):
        _check_float(type(self).__name__, x)
        out, cache = type(self)._forward(x)
        self._keep(cache)
        return out

    def backward(self, dout):
        return type(self)._backward(dout, self._take_cache())


class Sigmoid(_Elementwise):
    """y = 1 / (1 + exp(-x)); dy/dx = y * (1 - y).  Any shape -> same shape."""

    _forward = staticmethod(sigmoid_forward)
    _backward = staticmethod(sigmoid_backward)


class SiLU(_Elementwise):
    """y = x * sigmoid(x) (swish); dy/dx = s * (1 + x * (1 - s)).  Any shape -> same shape."""

    _forward = staticmethod(silu_forward)
    _backward = staticmethod(silu_backward)


class ReLU(_Elementwise):
    """y = max(x, 0); dy/dx = [x > 0].  Any shape -> same shape."""

    _forward = staticmethod(relu_forward)
    _backward = staticmethod(relu_backward)
