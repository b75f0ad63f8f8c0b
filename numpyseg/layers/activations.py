"""Element-wise activations: sigmoid, SiLU (swish), ReLU.  Any shape, dtype kept.

    sigmoid(x) = s = 1 / (1 + exp(-x))         ds/dx = s * (1 - s)
    silu(x)    = x * s                         d/dx  = s + x * s * (1 - s) = s * (1 + x * (1 - s))
    relu(x)    = max(x, 0)                     d/dx  = [x > 0]   (0 at x = 0, as PyTorch)

`sigmoid(x)` below is the one numerically stable sigmoid of the library (the losses,
inference, GroupNorm + SiLU and the attention gates use it).

Each activation has the two pairs `xxx_forward_reference(x) -> (out, cache)`,
`xxx_backward_reference(dout, cache) -> dx` (plain NumPy) and `xxx_forward_fast` /
`xxx_backward_fast`, and a Module class that runs the pair of the active backend
(numpyseg.backends).  Sigmoid and SiLU run fast as numba kernels
(numpyseg/kernels/activations.py: one pass over memory instead of five or more; the
SiLU kernel caches only x and recomputes s).  ReLU has no kernel: its NumPy version,
one comparison and one select, is already a single pass each way, so its fast pair is
its reference pair.

References:
    S. Elfwing, E. Uchibe, K. Doya, "Sigmoid-weighted linear units for neural network
    function approximation in reinforcement learning", Neural Networks 107, 2018
    (SiLU); D. Hendrycks, K. Gimpel, "Gaussian Error Linear Units (GELUs)",
    arXiv:1606.08415, 2016 (where x * sigmoid(x) first appears as the SiLU).
    V. Nair, G. E. Hinton, "Rectified linear units improve restricted Boltzmann
    machines", ICML 2010 (ReLU).
"""

from __future__ import annotations

import numpy as np

from numpyseg.backends import pick
from numpyseg.kernels.activations import (elementwise, sigmoid_backward_kernel, sigmoid_kernel,
                                          silu_backward_kernel, silu_kernel)
from numpyseg.layers.module import Module


def _check_float(layer: str, x) -> None:
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        what = f"dtype {x.dtype}" if isinstance(x, np.ndarray) else f"type {type(x).__name__}"
        raise ValueError(f"{layer} expects a floating-point NumPy array, got {what}")


# -------------------------------------------------------------------- sigmoid
def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow, in x's float dtype (integers: float64).

    exp(-x) overflows for x << 0 (float32 already at x < -88), so write both
    halves with e = exp(-|x|), which lies in (0, 1]:

        x >= 0:  s = 1 / (1 + e)
        x <  0:  s = e / (1 + e) = e * (1 / (1 + e))

    Both branches are accurate in relative terms in their tails; for |x| beyond
    ~745 (float64) e underflows to 0, the correct limit, silently.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    with np.errstate(under="ignore"):
        # explicit out= arrays: no temporaries, and 0-d inputs stay arrays
        e = np.abs(x, out=np.empty_like(x))
        np.negative(e, out=e)
        np.exp(e, out=e)
        s = np.add(e, 1, out=np.empty_like(x))
        np.reciprocal(s, out=s)
        np.multiply(s, e, out=s, where=x < 0)
    return s


def sigmoid_forward_reference(x: np.ndarray):
    """Returns s = sigmoid(x) (NumPy) and the cache s."""
    s = sigmoid(x)
    return s, s


def sigmoid_backward_reference(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * s * (1 - s), in s's dtype."""
    s = cache
    return (dout * s * (1 - s)).astype(s.dtype, copy=False)


def sigmoid_forward_fast(x: np.ndarray):
    """Returns sigmoid(x) (numba kernel) and the cache (the output s)."""
    s = elementwise(sigmoid_kernel, x, x)
    return s, s


def sigmoid_backward_fast(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * s * (1 - s) (numba kernel), in s's dtype."""
    return elementwise(sigmoid_backward_kernel, cache, dout, cache)


# ----------------------------------------------------------------------- SiLU
def silu_forward_reference(x: np.ndarray):
    """y = x * sigmoid(x) in NumPy; the cache is (x, s)."""
    s = sigmoid(x)
    return x * s, (x, s)


def silu_backward_reference(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * s * (1 + x * (1 - s)), in x's dtype."""
    x, s = cache
    dx = 1.0 - s
    dx *= x
    dx += 1.0
    dx *= s
    dx *= dout
    return dx


def silu_forward_fast(x: np.ndarray):
    """y = x * sigmoid(x) (numba kernel); the cache is x alone (s is recomputed in backward)."""
    return elementwise(silu_kernel, x, x), x


def silu_backward_fast(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * s * (1 + x * (1 - s)), s = sigmoid(x) recomputed (numba kernel), in x's dtype."""
    return elementwise(silu_backward_kernel, cache, dout, cache)


# ----------------------------------------------------------------------- ReLU
def relu_forward_reference(x: np.ndarray):
    """y = max(x, 0); the cache is the boolean mask x > 0."""
    positive = x > 0
    return np.where(positive, x, np.zeros((), dtype=x.dtype)), positive


def relu_backward_reference(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * [x > 0]."""
    return np.where(cache, dout, np.zeros((), dtype=dout.dtype))


relu_forward_fast = relu_forward_reference  # no kernel: see the module docstring
relu_backward_fast = relu_backward_reference


# -------------------------------------------------------------------- modules
class _Elementwise(Module):
    """An activation with no parameters: runs the functional pair of the active backend."""

    _reference = None  # (forward, backward), plain NumPy
    _fast = None       # (forward, backward), numba kernels

    def forward(self, x):
        _check_float(type(self).__name__, x)
        forward, backward = pick(type(self)._reference, type(self)._fast)
        out, cache = forward(x)
        self._keep(cache, backward)
        return out

    def backward(self, dout):
        backward, cache = self._take()
        return backward(dout, cache)


class Sigmoid(_Elementwise):
    """y = 1 / (1 + exp(-x)); dy/dx = y * (1 - y).  Any shape -> same shape."""

    _reference = (sigmoid_forward_reference, sigmoid_backward_reference)
    _fast = (sigmoid_forward_fast, sigmoid_backward_fast)


class SiLU(_Elementwise):
    """y = x * sigmoid(x) (swish); dy/dx = s * (1 + x * (1 - s)).  Any shape -> same shape."""

    _reference = (silu_forward_reference, silu_backward_reference)
    _fast = (silu_forward_fast, silu_backward_fast)


class ReLU(_Elementwise):
    """y = max(x, 0); dy/dx = [x > 0].  Any shape -> same shape."""

    _reference = (relu_forward_reference, relu_backward_reference)
    _fast = (relu_forward_fast, relu_backward_fast)
