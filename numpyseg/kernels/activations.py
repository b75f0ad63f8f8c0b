"""Element-wise sigmoid and SiLU as numba kernels (the NumPy references are in
numpyseg/layers/activations.py).

    sigmoid(x) = s = 1 / (1 + exp(-x))         ds/dx = s * (1 - s)
    silu(x)    = x * s                         d/dx  = s * (1 + x * (1 - s))

Why kernels for something NumPy does in one line: written with ufuncs, the stable
sigmoid makes five passes over memory (abs, negate, exp, add, reciprocal, ...) and
allocates a temporary for each, and SiLU adds two more.  A kernel reads x once and
writes y once, computing everything in registers, in x's dtype.  The SiLU backward
recomputes s from x instead of storing it, so a SiLU layer caches only its input.

Overflow: exp(-|x|) lies in (0, 1] for every x, so with e = exp(-|x|)

    x >= 0:  s = 1 / (1 + e)           x < 0:  s = e / (1 + e)

never overflows (float32 exp(-x) alone would for x < -88).

Every kernel works on flat, contiguous arrays; the wrappers below accept any shape.
"""

from __future__ import annotations

import numba
import numpy as np


# `one` is passed in as x.dtype.type(1): a literal 1 or 1.0 would promote float32
# arithmetic to float64, doubling the work.
@numba.njit(inline="always")
def _sigmoid1(v, one):
    e = np.exp(-np.abs(v))
    s = one / (one + e)
    return e * s if v < 0 else s


@numba.njit(parallel=True, cache=True)
def _sigmoid_kernel(x, one, out):
    for i in numba.prange(x.size):
        out[i] = _sigmoid1(x[i], one)


@numba.njit(parallel=True, cache=True)
def _sigmoid_backward_kernel(dout, s, one, dx):
    for i in numba.prange(s.size):
        si = s[i]
        dx[i] = dout[i] * si * (one - si)


@numba.njit(parallel=True, cache=True)
def _silu_kernel(x, one, out):
    for i in numba.prange(x.size):
        v = x[i]
        out[i] = v * _sigmoid1(v, one)


@numba.njit(parallel=True, cache=True)
def _silu_backward_kernel(dout, x, one, dx):
    for i in numba.prange(x.size):
        v = x[i]
        s = _sigmoid1(v, one)
        dx[i] = dout[i] * s * (one + v * (one - s))


def _flat(a: np.ndarray, dtype=None) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def sigmoid_fast(x: np.ndarray) -> np.ndarray:
    """sigmoid(x), any shape, in x's float dtype."""
    out = np.empty(x.shape, dtype=x.dtype)
    _sigmoid_kernel(_flat(x), x.dtype.type(1), out.reshape(-1))
    return out


def sigmoid_backward_fast(dout: np.ndarray, s: np.ndarray) -> np.ndarray:
    """dx = dout * s * (1 - s), from the forward's output s."""
    dx = np.empty(s.shape, dtype=s.dtype)
    _sigmoid_backward_kernel(_flat(dout, s.dtype), _flat(s), s.dtype.type(1), dx.reshape(-1))
    return dx


def silu_fast(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), any shape, in x's float dtype."""
    out = np.empty(x.shape, dtype=x.dtype)
    _silu_kernel(_flat(x), x.dtype.type(1), out.reshape(-1))
    return out


def silu_backward_fast(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dx = dout * s * (1 + x * (1 - s)), s = sigmoid(x) recomputed from the input x."""
    dx = np.empty(x.shape, dtype=x.dtype)
    _silu_backward_kernel(_flat(dout, x.dtype), _flat(x), x.dtype.type(1), dx.reshape(-1))
    return dx
