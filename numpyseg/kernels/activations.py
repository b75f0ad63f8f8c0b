"""Element-wise sigmoid and SiLU as numba kernels: the fast path of
numpyseg/layers/activations.py (`sigmoid_forward_fast`, `silu_forward_fast`, ...), whose
plain-NumPy references (`sigmoid`, `silu_forward_reference`, ...) they are tested against.

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

Every kernel works on flat, contiguous float32 or float64 arrays; `elementwise` below
accepts any shape, and computes other float dtypes (float16, long double) in float64 and
rounds the result back to the input's dtype.

The exponential.  np.exp inside a numba loop is a call to the C library's scalar exp,
one number at a time, and it costs more than everything else SiLU does.  For float32
(the run-time dtype) `exp_neg` uses instead the textbook construction, which the
compiler turns into vector instructions, eight numbers at a time:

    a * log2(e) = k + f,  k = round(a * log2(e)),  r = k * ln2 - a,  |r| <= ln2 / 2
    e^(-a) = 2^(-k) * e^r
    e^r    = sum_{i=0..7} r^i / i!          (Horner; truncation error < 1e-8 for |r| <= 0.35)
    2^(-k) = product over the bits b of k of 2^(-2^b)   (k < 128: seven selects)

with ln2 split into a short "high" part and a small "low" part so that k * ln2 is exact
enough (Cody and Waite).  Its relative error is about 1e-7, float32's own rounding.
Below float32's smallest normal number (a > 87.3) it returns 0: subnormal numbers
would make the whole loop many times slower, and sigmoid(-87) is 1e-38 anyway.
float64 (used by the gradient checks) keeps np.exp.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.core import types
from numba.extending import overload

_F32 = np.float32
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693145751953125)  # ln 2 with its last 12 bits zero: k * _LN2_HI is exact
_LN2_LO = _F32(1.4286068202862268e-06)  # ln 2 - _LN2_HI
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7 = (_F32(1 / math.factorial(i)) for i in range(8))
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = (_F32(2.0 ** -(2 ** b)) for b in range(7))
_A_MAX = _F32(87.33)  # e^-87.33 is float32's smallest normal number: the result is 0 beyond


def exp_neg(a):
    """e^(-a) for a >= 0 (compiled code: a vectorisable polynomial for float32)."""
    return np.exp(-a)


def _exp_neg_float32(a):
    b = min(a, _A_MAX)
    k = np.int32(b * _LOG2E + _F32(0.5))  # b >= 0, so truncation rounds to nearest: k <= 126
    kf = _F32(k)
    r = (kf * _LN2_HI - b) + kf * _LN2_LO
    e = ((((((_C7 * r + _C6) * r + _C5) * r + _C4) * r + _C3) * r + _C2) * r + _C1) * r + _C0
    one = _F32(1.0)
    # 2^-k from the bits of k: selects, not branches, so the loop stays vectorised
    s = one
    s = s * (_P0 if k & 1 else one)
    s = s * (_P1 if k & 2 else one)
    s = s * (_P2 if k & 4 else one)
    s = s * (_P3 if k & 8 else one)
    s = s * (_P4 if k & 16 else one)
    s = s * (_P5 if k & 32 else one)
    s = s * (_P6 if k & 64 else one)
    return e * s if a < _A_MAX else _F32(0.0)


@overload(exp_neg, inline="always")
def _exp_neg_overload(a):
    """Inside numba: the polynomial for float32, np.exp otherwise."""
    if isinstance(a, types.Float) and a.bitwidth == 32:
        return _exp_neg_float32
    return lambda a: np.exp(-a)


# `one` is passed in as x.dtype.type(1): a literal 1 or 1.0 would promote float32
# arithmetic to float64, doubling the work.
@numba.njit(inline="always")
def _sigmoid1(v, one):
    e = exp_neg(np.abs(v))
    s = one / (one + e)
    return e * s if v < 0 else s


@numba.njit(parallel=True, cache=True)
def sigmoid_kernel(x, one, out):
    for i in numba.prange(x.size):
        out[i] = _sigmoid1(x[i], one)


@numba.njit(parallel=True, cache=True)
def sigmoid_backward_kernel(dout, s, one, dx):
    for i in numba.prange(s.size):
        si = s[i]
        dx[i] = dout[i] * si * (one - si)


@numba.njit(parallel=True, cache=True)
def silu_kernel(x, one, out):
    for i in numba.prange(x.size):
        v = x[i]
        out[i] = v * _sigmoid1(v, one)


@numba.njit(parallel=True, cache=True)
def silu_backward_kernel(dout, x, one, dx):
    for i in numba.prange(x.size):
        v = x[i]
        s = _sigmoid1(v, one)
        dx[i] = dout[i] * s * (one + v * (one - s))


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _flat(a: np.ndarray, dtype=None) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def elementwise(kernel, out_like: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """Run kernel(*flat arrays, one, flat out) and return out, shaped and typed as out_like.

    The kernels are compiled for float32 and float64; other float dtypes are computed
    in float64 (one temporary per argument) and rounded back once at the end.
    """
    dt = out_like.dtype
    work = dt if dt in _KERNEL_DTYPES else np.dtype(np.float64)
    out = np.empty(out_like.shape, dtype=work)
    kernel(*(_flat(a, work) for a in arrays), work.type(1), out.reshape(-1))
    return out if work == dt else out.astype(dt)
