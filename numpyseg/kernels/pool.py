"""2 x 2, stride-2 max pooling kernels (NHWC, even H and W).

Forward, for output pixel (i, j) of channel c, the window holds the four inputs

    x[2i + a, 2j + b, c]   with window index  q = 2a + b  in {0, 1, 2, 3}
                                  (row-major: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)

    out[i, j, c]    = max_q  x[2i + a, 2j + b, c]
    argmax[i, j, c] = the first q (smallest) attaining the maximum   (stored as uint8)

Backward: the max is locally the identity on the winning input and constant in the
others, so the whole upstream gradient goes to the arg-max and the other three get 0:

    dx[2i + a, 2j + b, c] = dout[i, j, c]  if 2a + b == argmax[i, j, c]  else 0.

At a tie the max is not differentiable; routing to the first maximum is one valid
subgradient and matches what the NumPy reference (np.argmax) picks.

These kernels are the fast path of numpyseg/layers/pool.py (`maxpool2d_forward_fast`,
`maxpool2d_backward_fast`); the plain-NumPy references beside them there
(`maxpool2d_forward_reference`, ...) are what tests check them against.
Set NUMBA_DISABLE_JIT=1 to step through the kernels in a debugger.
"""

from __future__ import annotations

import numba


# -------------------------------------------------------------- numba kernels
@numba.njit(parallel=True, cache=True)
def maxpool_forward_kernel(x, out, argmax):
    n, ho, wo, c = out.shape
    # one parallel task per (image, output row)
    for task in numba.prange(n * ho):
        b = task // ho
        i = task % ho
        for j in range(wo):
            for ch in range(c):
                best = x[b, 2 * i, 2 * j, ch]
                q_best = 0
                for q in range(1, 4):
                    v = x[b, 2 * i + q // 2, 2 * j + q % 2, ch]
                    if v > best:  # strict: a later equal value does not win (first maximum)
                        best = v
                        q_best = q
                out[b, i, j, ch] = best
                argmax[b, i, j, ch] = q_best


@numba.njit(parallel=True, cache=True)
def maxpool_backward_kernel(dout, argmax, dx):
    n, ho, wo, c = dout.shape
    for task in numba.prange(n * ho):
        b = task // ho
        i = task % ho
        for j in range(wo):
            for ch in range(c):
                g = dout[b, i, j, ch]
                q_best = argmax[b, i, j, ch]
                # every one of the four window entries is written, so dx needs no zeroing
                for q in range(4):
                    dx[b, 2 * i + q // 2, 2 * j + q % 2, ch] = g if q == q_best else 0
