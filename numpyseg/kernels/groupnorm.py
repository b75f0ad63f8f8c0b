"""GroupNorm (and GroupNorm + SiLU) forward and backward for NHWC arrays: numba kernels.

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

GroupNorm followed by SiLU (every SA-UNetv2 block) is fused: with z = gamma * xhat + beta,

    forward:   y  = silu(z) = z * sigmoid(z)        one pass, z never stored
    backward:  dz = dout * silu'(z),  silu'(z) = s * (1 + z * (1 - s)),  s = sigmoid(z)
               and then the GroupNorm backward above with dz in place of dout.

z (and so dz) is recomputed from x, mean, rstd, gamma and beta in the backward, so the
fused layer caches only x and the (N, G) statistics: one pass over memory instead of
three in the forward, and no cached activation.

The entry points at the end (`forward`, `forward_silu`, `backward`, `backward_silu`)
are the fast path of numpyseg/layers/norm.py (`groupnorm_forward_fast`, ...); the
plain-NumPy references beside them there (`groupnorm_forward_reference`, ...) compute
the same with whole-array operations, and tests check that both agree.  Set NUMBA_DISABLE_JIT=1 to step through the kernels.
"""

from __future__ import annotations

import numba
import numpy as np

from numpyseg.kernels.activations import _sigmoid1


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
def _normalize_silu_kernel(x, mean_c, scale_c, beta, one, y):
    """y = silu(z), z = (x - mean_c[n, k]) * scale_c[n, k] + beta[k], one task per image row.

    Two sweeps over the row: z, then silu(z) in place while the row is still in cache.
    The second is a flat loop over W * C numbers, which the compiler vectorises; folded
    into the first (an inner loop over the few channels) it would not be.
    """
    n, h, w, c = x.shape
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        for j in range(w):
            for k in range(c):
                y[b, i, j, k] = (x[b, i, j, k] - mean_c[b, k]) * scale_c[b, k] + beta[k]
        row = y[b, i].reshape(-1)
        for t in range(row.size):
            z = row[t]
            row[t] = z * _sigmoid1(z, one)


@numba.njit(inline="always")
def _row_sums(d, x, b, i, mean_c, rstd_c, row_sum_d, row_sum_dx):
    """row_sum_d[b, i, k] = sum_j d[b, i, j, k] and row_sum_dx[b, i, k] = sum_j d * xhat, in float64."""
    w, c = x.shape[2], x.shape[3]
    s1 = np.zeros(c)
    s2 = np.zeros(c)
    for j in range(w):
        for k in range(c):
            dv = np.float64(d[b, i, j, k])
            s1[k] += dv
            s2[k] += dv * ((np.float64(x[b, i, j, k]) - mean_c[b, k]) * rstd_c[b, k])
    for k in range(c):
        row_sum_d[b, i, k] = s1[k]
        row_sum_dx[b, i, k] = s2[k]


@numba.njit(parallel=True, cache=True)
def _silu_backward_sums_kernel(dout, x, mean_c, scale_c, beta, one, mean_c64, rstd_c64,
                               dz, row_sum_d, row_sum_dx):
    """dz = dout * silu'(z), z recomputed exactly as the forward computed it; and per image
    row and channel the sums of dz and dz * xhat (float64).  Three sweeps over a row
    that stays in cache: z, then dz in place (flat, vectorised), then the sums."""
    n, h, w, c = x.shape
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        for j in range(w):
            for k in range(c):
                dz[b, i, j, k] = (x[b, i, j, k] - mean_c[b, k]) * scale_c[b, k] + beta[k]
        row = dz[b, i].reshape(-1)
        drow = dout[b, i].reshape(-1)
        for t in range(row.size):
            z = row[t]
            s = _sigmoid1(z, one)
            row[t] = drow[t] * s * (one + z * (one - s))
        _row_sums(dz, x, b, i, mean_c64, rstd_c64, row_sum_d, row_sum_dx)


@numba.njit(parallel=True, cache=True)
def _backward_sums_kernel(dout, x, mean_c, rstd_c, row_sum_d, row_sum_dx):
    """Per image row and channel: sum of dout and of dout * xhat (float64)."""
    n, h, w, c = x.shape
    for task in numba.prange(n * h):
        b = task // h
        i = task % h
        _row_sums(dout, x, b, i, mean_c, rstd_c, row_sum_d, row_sum_dx)


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


def _group_stats(x, num_groups: int, eps: float):
    """mean and rstd (N, G) in float64: row statistics combined with Chan's formula."""
    n, h, w, c = x.shape
    cg = c // num_groups
    row_mean = np.empty((n, h, num_groups))
    row_m2 = np.empty((n, h, num_groups))
    _row_stats_kernel(x, num_groups, row_mean, row_m2)
    # Chan's combination of the H rows (each of W * Cg entries) into group statistics
    mean = row_mean.mean(axis=1)
    m2 = row_m2.sum(axis=1) + (w * cg) * ((row_mean - mean[:, None, :]) ** 2).sum(axis=1)
    var = m2 / (h * w * cg)
    return mean, 1.0 / np.sqrt(var + eps)


def _affine_factors(x, gamma, beta, mean, rstd, num_groups: int):
    """Per (sample, channel) mean and scale = rstd * gamma, and beta, in x's dtype."""
    cg = x.shape[3] // num_groups
    dt = x.dtype
    mean_c = _per_channel(mean, cg).astype(dt)
    scale_c = (_per_channel(rstd, cg) * np.asarray(gamma, dtype=np.float64)).astype(dt)
    return mean_c, scale_c, np.ascontiguousarray(beta, dtype=dt)


def forward(x, gamma, beta, num_groups: int, eps: float):
    """y (N, H, W, C) in x.dtype, mean and rstd (N, G) float64: GroupNorm by the kernels above."""
    x = np.ascontiguousarray(x)
    mean, rstd = _group_stats(x, num_groups, eps)
    y = np.empty_like(x)
    _normalize_kernel(x, *_affine_factors(x, gamma, beta, mean, rstd, num_groups), y)
    return y, mean, rstd


def forward_silu(x, gamma, beta, num_groups: int, eps: float):
    """silu(GroupNorm(x)) in one pass: y (N, H, W, C) in x.dtype, mean and rstd (N, G) float64."""
    x = np.ascontiguousarray(x)
    mean, rstd = _group_stats(x, num_groups, eps)
    y = np.empty_like(x)
    _normalize_silu_kernel(x, *_affine_factors(x, gamma, beta, mean, rstd, num_groups), x.dtype.type(1), y)
    return y, mean, rstd


def _input_grad_factors(sum_d, sum_dx, gamma, rstd, rstd_c64, num_groups: int, count: int, dt):
    """a, c1, c2 (N, C) of dx = a * g_in - c1 - (x - mean) * c2, from the per-channel sums
    of the incoming gradient g_in and of g_in * xhat (see `_backward_dx_kernel`)."""
    n, c = sum_d.shape
    cg = c // num_groups
    # mean(g) and mean(g * xhat) over each group, g = g_in * gamma
    mean_g = (sum_d * gamma).reshape(n, num_groups, cg).sum(axis=2) / count
    mean_gx = (sum_dx * gamma).reshape(n, num_groups, cg).sum(axis=2) / count
    a_c = (rstd_c64 * gamma).astype(dt)
    c1_c = _per_channel(rstd * mean_g, cg).astype(dt)
    c2_c = _per_channel(rstd * rstd * mean_gx, cg).astype(dt)
    return a_c, c1_c, c2_c


def backward_silu(dout, x, gamma, beta, mean, rstd, num_groups: int):
    """dx (N, H, W, C) in x.dtype, dgamma and dbeta (C,) float64 of `forward_silu`."""
    x = np.ascontiguousarray(x)
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    n, h, w, c = x.shape
    cg = c // num_groups
    mean_c, scale_c, beta_c = _affine_factors(x, gamma, beta, mean, rstd, num_groups)
    one = x.dtype.type(1)
    rstd_c64 = _per_channel(rstd, cg)
    row_sum_d = np.empty((n, h, c))
    row_sum_dx = np.empty((n, h, c))
    # dz is stored once rather than recomputed in the second pass: writing it costs less
    # than a second exponential per entry; the dx pass then overwrites it in place.
    dz = np.empty_like(x)
    _silu_backward_sums_kernel(dout, x, mean_c, scale_c, beta_c, one, _per_channel(mean, cg), rstd_c64,
                               dz, row_sum_d, row_sum_dx)
    sum_d = row_sum_d.sum(axis=1)    # (N, C): sum over the image of dz
    sum_dx = row_sum_dx.sum(axis=1)  # (N, C): sum over the image of dz * xhat
    gamma = np.asarray(gamma, dtype=np.float64)
    factors = _input_grad_factors(sum_d, sum_dx, gamma, rstd, rstd_c64, num_groups, h * w * cg, x.dtype)
    _backward_dx_kernel(dz, x, mean_c, *factors, dz)  # element-wise, so in place is safe
    return dz, sum_dx.sum(axis=0), sum_d.sum(axis=0)


def backward(dout, x, gamma, mean, rstd, num_groups: int):
    """dx (N, H, W, C) in x.dtype, dgamma and dbeta (C,) float64 of `forward`."""
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
    factors = _input_grad_factors(sum_d, sum_dx, gamma, rstd, rstd_c64, num_groups, h * w * cg, x.dtype)
    dx = np.empty_like(x)
    _backward_dx_kernel(dout, x, mean_c64.astype(x.dtype), *factors, dx)
    return dx, dgamma, dbeta
