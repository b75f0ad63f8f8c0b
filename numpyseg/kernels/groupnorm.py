"""GroupNorm forward and backward for NHWC arrays: numba kernels and NumPy references.

Notation: x has shape (N, H, W, C); the C channels are split into G groups of
Cg = C / G consecutive channels; channel k belongs to group g(k) = k // Cg.  For
sample n and group g the statistics run over the M = H * W * Cg entries of the group:

    mu[n, g]     = (1/M) * sum x[n, :, :, k in g]
    var[n, g]    = (1/M) * sum (x[n, :, :, k in g] - mu[n, g])^2      (biased)
    rstd[n, g]   = 1 / sqrt(var[n, g] + eps)
    xhat         = (x - mu[n, g(k)]) * rstd[n, g(k)]
    y[n,i,j,k]   = gamma[k] * xhat[n,i,j,k] + beta[k]

Backward, for dout of shape (N, H, W, C), with g = dout * gamma and means taken
over the group (the same M entries as the statistics):

    dbeta[k]  = sum_{n,i,j} dout[n,i,j,k]
    dgamma[k] = sum_{n,i,j} dout[n,i,j,k] * xhat[n,i,j,k]
    dx        = rstd * (g - mean(g) - xhat * mean(g * xhat))

How the kernels are organised (memory order is NHWC, so one image row (W, C) is
contiguous):

* Statistics: one parallel task per image row (n, i).  Each task makes two passes
  over its own row (the row stays in cache, so the second pass costs no memory
  traffic) and produces the row's mean and sum of squared deviations per group in
  float64.  The rows are then combined exactly with Chan's formula

      M2 = sum_r M2_r + m * sum_r (mu_r - mu)^2     (every row holds m = W * Cg entries)

  which is as stable as a two-pass algorithm over the whole group.
* Normalisation: one task per row, y = (x - mu) * (rstd * gamma) + beta with the
  per-(sample, channel) factors precomputed, computed in the input dtype.
* Backward pass 1: one task per row accumulates per channel the row sums of dout
  and dout * xhat (float64); summing those over rows gives dbeta, dgamma and, after
  weighting by gamma and summing over the channels of a group, mean(g) and
  mean(g * xhat).  Pass 2 (one task per row) writes dx.

The `*_reference` functions compute the same with whole-array NumPy operations;
tests check that both agree.  Set NUMBA_DISABLE_JIT=1 to step through the kernels.
"""

from __future__ import annotations

import numba
import numpy as np


# ----------------------------------------------------------------- references
def groupnorm_forward_reference(x, gamma, beta, num_groups: int, eps: float):
    """GroupNorm in plain NumPy.

    Args:
        x: (N, H, W, C).  gamma, beta: (C,).  C must be divisible by num_groups.
    Returns:
        y (N, H, W, C) in x.dtype, mean and rstd (N, G) in float64.
    """
    n, h, w, c = x.shape
    xg = x.astype(np.float64).reshape(n, h, w, num_groups, c // num_groups)
    mean = xg.mean(axis=(1, 2, 4))
    var = ((xg - mean[:, None, None, :, None]) ** 2).mean(axis=(1, 2, 4))
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = ((xg - mean[:, None, None, :, None]) * rstd[:, None, None, :, None]).reshape(n, h, w, c)
    y = xhat * gamma + beta
    return y.astype(x.dtype), mean, rstd


def groupnorm_backward_reference(dout, x, gamma, mean, rstd, num_groups: int):
    """Gradients of groupnorm_forward_reference, from the formula in the module docstring.

    Args:
        dout, x: (N, H, W, C).  gamma: (C,).  mean, rstd: (N, G) from the forward.
    Returns:
        dx (N, H, W, C) in x.dtype, dgamma and dbeta (C,) in float64.
    """
    n, h, w, c = x.shape
    cg = c // num_groups
    shape5 = (n, h, w, num_groups, cg)
    xg = x.astype(np.float64).reshape(shape5)
    xhat = (xg - mean[:, None, None, :, None]) * rstd[:, None, None, :, None]
    d = dout.astype(np.float64)
    dbeta = d.sum(axis=(0, 1, 2))
    dgamma = (d * xhat.reshape(n, h, w, c)).sum(axis=(0, 1, 2))
    g = (d * gamma).reshape(shape5)
    mean_g = g.mean(axis=(1, 2, 4), keepdims=True)
    mean_gx = (g * xhat).mean(axis=(1, 2, 4), keepdims=True)
    dx = rstd[:, None, None, :, None] * (g - mean_g - xhat * mean_gx)
    return dx.reshape(n, h, w, c).astype(x.dtype), dgamma, dbeta


# -------------------------------------------------------------- numba kernels
@numba.njit(parallel=True, cache=True)
def _row_stats_kernel(x, num_groups, row_mean, row_m2):
    """Per image row (n, i) and group: mean and sum of squared deviations (float64)."""
    n, h, w, c = x.shape
    cg = c // num_groups
    m = w * cg
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        # Accumulate per channel first: the inner loop then runs over contiguous
        # channels with independent accumulators, which the compiler vectorises.
        acc = np.zeros(c)
        for j in range(w):
            for k in range(c):
                acc[k] += x[b, i, j, k]
        mu = np.zeros(c)  # the row mean of each channel's group, repeated per channel
        for g in range(num_groups):
            s = 0.0
            for k in range(g * cg, g * cg + cg):
                s += acc[k]
            for k in range(g * cg, g * cg + cg):
                mu[k] = s / m
        sq = np.zeros(c)
        for j in range(w):
            for k in range(c):
                dev = x[b, i, j, k] - mu[k]
                sq[k] += dev * dev
        for g in range(num_groups):
            s = 0.0
            for k in range(g * cg, g * cg + cg):
                s += sq[k]
            row_mean[b, i, g] = mu[g * cg]
            row_m2[b, i, g] = s


@numba.njit(parallel=True, cache=True)
def _normalize_kernel(x, mean_c, scale_c, beta, y):
    """y = (x - mean_c[n, k]) * scale_c[n, k] + beta[k], one task per image row."""
    n, h, w, c = x.shape
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        for j in range(w):
            for k in range(c):
                y[b, i, j, k] = (x[b, i, j, k] - mean_c[b, k]) * scale_c[b, k] + beta[k]


@numba.njit(parallel=True, cache=True)
def _backward_sums_kernel(dout, x, mean_c, rstd_c, row_sum_d, row_sum_dx):
    """Per image row and channel: sum of dout and of dout * xhat (float64)."""
    n, h, w, c = x.shape
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        s1 = np.zeros(c)
        s2 = np.zeros(c)
        for j in range(w):
            for k in range(c):
                d = np.float64(dout[b, i, j, k])
                s1[k] += d
                s2[k] += d * ((np.float64(x[b, i, j, k]) - mean_c[b, k]) * rstd_c[b, k])
        for k in range(c):
            row_sum_d[b, i, k] = s1[k]
            row_sum_dx[b, i, k] = s2[k]


@numba.njit(parallel=True, cache=True)
def _backward_dx_kernel(dout, x, mean_c, a_c, c1_c, c2_c, dx):
    """dx = a * dout - c1 - (x - mean) * c2 per (sample, channel) factors, one task per row.

    With a = rstd * gamma, c1 = rstd * mean(g), c2 = rstd^2 * mean(g * xhat) this is
    rstd * (g - mean(g) - xhat * mean(g * xhat)).
    """
    n, h, w, c = x.shape
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        for j in range(w):
            for k in range(c):
                dx[b, i, j, k] = (a_c[b, k] * dout[b, i, j, k] - c1_c[b, k]
                                  - (x[b, i, j, k] - mean_c[b, k]) * c2_c[b, k])


def _per_channel(values_ng: np.ndarray, cg: int) -> np.ndarray:
    """(N, G) -> (N, C): repeat each group's value for its Cg channels."""
    return np.ascontiguousarray(np.repeat(values_ng, cg, axis=1))


def groupnorm_forward_fast(x, gamma, beta, num_groups: int, eps: float):
    """Numba version of `groupnorm_forward_reference` (same arguments and results)."""
    x = np.ascontiguousarray(x)
    n, h, w, c = x.shape
    cg = c // num_groups
    row_mean = np.empty((n, h, num_groups))
    row_m2 = np.empty((n, h, num_groups))
    _row_stats_kernel(x, num_groups, row_mean, row_m2)
    # Chan's combination of the H rows (each of W * Cg entries) into group statistics
    mean = row_mean.mean(axis=1)
    m2 = row_m2.sum(axis=1) + (w * cg) * ((row_mean - mean[:, None, :]) ** 2).sum(axis=1)
    var = m2 / (h * w * cg)
    rstd = 1.0 / np.sqrt(var + eps)
    dt = x.dtype
    mean_c = _per_channel(mean, cg).astype(dt)
    scale_c = (_per_channel(rstd, cg) * np.asarray(gamma, dtype=np.float64)).astype(dt)
    y = np.empty_like(x)
    _normalize_kernel(x, mean_c, scale_c, np.ascontiguousarray(beta, dtype=dt), y)
    return y, mean, rstd


def groupnorm_backward_fast(dout, x, gamma, mean, rstd, num_groups: int):
    """Numba version of `groupnorm_backward_reference` (same arguments and results)."""
    x = np.ascontiguousarray(x)
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    n, h, w, c = x.shape
    cg = c // num_groups
    gamma = np.asarray(gamma, dtype=np.float64)
    mean_c64 = _per_channel(mean, cg)
    rstd_c64 = _per_channel(rstd, cg)
    row_sum_d = np.empty((n, h, c))
    row_sum_dx = np.empty((n, h, c))
    _backward_sums_kernel(dout, x, mean_c64, rstd_c64, row_sum_d, row_sum_dx)
    sum_d = row_sum_d.sum(axis=1)    # (N, C): sum over the image of dout
    sum_dx = row_sum_dx.sum(axis=1)  # (N, C): sum over the image of dout * xhat
    dbeta = sum_d.sum(axis=0)
    dgamma = sum_dx.sum(axis=0)
    count = h * w * cg
    # mean(g) and mean(g * xhat) over each group, g = dout * gamma
    mean_g = (sum_d * gamma).reshape(n, num_groups, cg).sum(axis=2) / count
    mean_gx = (sum_dx * gamma).reshape(n, num_groups, cg).sum(axis=2) / count
    dt = x.dtype
    a_c = (rstd_c64 * gamma).astype(dt)
    c1_c = _per_channel(rstd * mean_g, cg).astype(dt)
    c2_c = _per_channel(rstd * rstd * mean_gx, cg).astype(dt)
    dx = np.empty_like(x)
    _backward_dx_kernel(dout, x, mean_c64.astype(dt), a_c, c1_c, c2_c, dx)
    return dx, dgamma, dbeta
