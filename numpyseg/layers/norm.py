"""Normalisation layers: GroupNorm (SA-UNetv2) and BatchNorm2d (SA-UNet v1), NHWC.

Both normalise x to xhat = (x - mu) / sigma, sigma = sqrt(var + eps), then apply a
learned per-channel affine map y = gamma * xhat + beta.  They differ only in the set
S of entries the statistics mu, var (biased, 1/|S|) are taken over:

    GroupNorm:   per sample n and group of channels: S = {(n, i, j, k): k in group}
    BatchNorm:   per channel k over the whole batch:  S = {(n, i, j, k): all n, i, j}

Backward (derived once for both).  Let g = dout * gamma (the gradient w.r.t. xhat)
and mean(.) the average over S.  Since xhat depends on every entry of S through mu
and sigma,

    d xhat_a / d x_b = (1/sigma) * ([a == b] - 1/|S| - xhat_a * xhat_b / |S|),

so that

    dx     = (1/sigma) * (g - mean(g) - xhat * mean(g * xhat))
    dgamma = sum over (n, i, j) of dout * xhat        (shape (C,))
    dbeta  = sum over (n, i, j) of dout               (shape (C,))

In BatchNorm's eval mode mu and sigma are fixed running statistics, not functions
of x, and the backward is just dx = dout * gamma / sigma.
"""

from __future__ import annotations

import numpy as np

from numpyseg.kernels.groupnorm import (
    groupnorm_backward_fast,
    groupnorm_forward_fast,
    groupnorm_silu_backward_fast,
    groupnorm_silu_forward_fast,
)
from numpyseg.layers.activations import silu_forward
from numpyseg.layers.module import Module, Parameter, check_input, grad_enabled


# ------------------------------------------------------------------ GroupNorm
def groupnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                      num_groups: int = 8, eps: float = 1e-3):
    """GroupNorm forward (numba kernels; see numpyseg.kernels.groupnorm).

    Args:
        x: (N, H, W, C) with C divisible by num_groups.  gamma, beta: (C,).
    Returns:
        out (N, H, W, C) in x.dtype, and the cache for groupnorm_backward.
    """
    out, mean, rstd = groupnorm_forward_fast(x, gamma, beta, num_groups, eps)
    return out, (x, gamma, mean, rstd, num_groups)


def groupnorm_backward(dout: np.ndarray, cache):
    """Gradients of groupnorm_forward.

    Returns:
        dx (N, H, W, C), dgamma (C,), dbeta (C,), all in the input's dtype.
    """
    x, gamma, mean, rstd, num_groups = cache
    dx, dgamma, dbeta = groupnorm_backward_fast(dout, x, gamma, mean, rstd, num_groups)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def groupnorm_with_statistics(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
                              rstd: np.ndarray, num_groups: int) -> np.ndarray:
    """GroupNorm with given statistics: y = gamma * (x - mu[g]) * rstd[g] + beta (inference only).

    Tiled inference (numpyseg.inference) normalises every tile with the statistics
    of the whole image, so that a tile is normalised exactly as it would be inside
    the whole image.  With the statistics fixed GroupNorm is a per-channel affine map,
    y = a * x + b with a = gamma * rstd[g(c)] and b = beta - a * mu[g(c)].

    Args:
        x: (N, H, W, C) float.  gamma, beta: (C,).
        mean, rstd: (G,) or (N, G): the group means and 1 / sqrt(var + eps).
        num_groups: G; channel c belongs to group c // (C / G).
    Returns:
        (N, H, W, C) in x.dtype.
    """
    per_group = x.shape[-1] // num_groups
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (x.shape[0], num_groups))
    rstd = np.broadcast_to(np.asarray(rstd, dtype=np.float64), (x.shape[0], num_groups))
    a = np.repeat(rstd, per_group, axis=1) * np.asarray(gamma, dtype=np.float64)      # (N, C)
    b = np.asarray(beta, dtype=np.float64) - a * np.repeat(mean, per_group, axis=1)   # (N, C)
    out = x * a[:, None, None, :].astype(x.dtype)
    out += b[:, None, None, :].astype(x.dtype)
    return out


class GroupNorm(Module):
    """Group normalisation (Wu & He 2018) with a per-channel affine map.

    Per sample n and group g of C / num_groups consecutive channels:

        y = gamma * (x - mu[n, g]) / sqrt(var[n, g] + eps) + beta,

    mu, var (biased) over the H * W * C / num_groups entries of the group.
    Backward, with xhat = (x - mu) / sigma, sigma = sqrt(var + eps), g = dout * gamma
    and means over the same group entries:

        dx = (1/sigma) * (g - mean(g) - xhat * mean(g * xhat))
        dgamma = sum_{n,i,j} dout * xhat,   dbeta = sum_{n,i,j} dout

    Parameters: weight = gamma (C,), ones; bias = beta (C,), zeros.
    Shapes: (N, H, W, C) -> (N, H, W, C).  Same in train and eval mode.

    Tiled inference: while `whole_image` is set (numpyseg.inference does so), the
    forward pass hands x to `whole_image.normalise(self, x)`, which normalises it with
    the statistics of the whole image (`normalise_with`) instead of x's own.
    """

    def __init__(self, num_channels: int, num_groups: int = 8, eps: float = 1e-3):
        super().__init__()
        if num_groups < 1 or num_channels % num_groups != 0:
            raise ValueError(f"GroupNorm: {num_channels} channels cannot be split into "
                             f"{num_groups} equal groups")
        self.num_channels, self.num_groups, self.eps = num_channels, num_groups, eps
        self.weight = Parameter(np.ones(num_channels, dtype=np.float32))
        self.bias = Parameter(np.zeros(num_channels, dtype=np.float32))
        self.whole_image = None  # the whole image's statistics during tiled inference

    def normalise_with(self, x, mean, rstd):
        """This layer's output for x normalised with given group statistics (G,) (inference)."""
        return groupnorm_with_statistics(x, self.weight.data, self.bias.data, mean, rstd, self.num_groups)

    def forward(self, x):
        check_input("GroupNorm", x, self.num_channels)
        if self.whole_image is not None:
            return self.whole_image.normalise(self, x)
        out, cache = groupnorm_forward(x, self.weight.data, self.bias.data, self.num_groups, self.eps)
        self._keep(cache)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = groupnorm_backward(dout, self._take_cache())
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx

    def __repr__(self):
        return f"GroupNorm({self.num_channels}, num_groups={self.num_groups}, eps={self.eps})"


# ------------------------------------------------- GroupNorm + SiLU, fused
def groupnorm_silu_forward(x, gamma, beta, num_groups: int = 8, eps: float = 1e-3):
    """y = silu(GroupNorm(x)) in one pass (numpyseg.kernels.groupnorm).

    Returns:
        out (N, H, W, C) in x.dtype, and the cache (x, gamma, beta, mean, rstd, groups):
        no activation is stored, z = GroupNorm(x) is recomputed in the backward.
    """
    out, mean, rstd = groupnorm_silu_forward_fast(x, gamma, beta, num_groups, eps)
    return out, (x, gamma, beta, mean, rstd, num_groups)


def groupnorm_silu_backward(dout, cache):
    """dz = dout * silu'(z), then GroupNorm's backward; returns dx, dgamma, dbeta."""
    x, gamma, beta, mean, rstd, num_groups = cache
    dx, dgamma, dbeta = groupnorm_silu_backward_fast(dout, x, gamma, beta, mean, rstd, num_groups)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


class GroupNormSiLU(GroupNorm):
    """silu(GroupNorm(x)): the tail of every SA-UNetv2 block as one fused layer.

    The same function and parameters (weight = gamma, bias = beta, so the same
    state-dict names) as GroupNorm followed by SiLU.  With z = gamma * xhat + beta:

        y  = z * sigmoid(z)
        dz = dout * s * (1 + z * (1 - s)),  s = sigmoid(z);  dx, dgamma, dbeta: GroupNorm's with dz

    Why fuse: run separately, GroupNorm writes z, SiLU reads it and writes y, and both
    keep their input for the backward.  Fused, z lives only in registers: one pass
    over memory fewer each way, and half the cached activations.
    Shapes: (N, H, W, C) -> (N, H, W, C).
    """

    def normalise_with(self, x, mean, rstd):
        """silu of GroupNorm with given group statistics (G,) (tiled inference)."""
        return silu_forward(super().normalise_with(x, mean, rstd))[0]

    def forward(self, x):
        check_input("GroupNormSiLU", x, self.num_channels)
        if self.whole_image is not None:
            return self.whole_image.normalise(self, x)
        out, cache = groupnorm_silu_forward(x, self.weight.data, self.bias.data, self.num_groups, self.eps)
        self._keep(cache)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = groupnorm_silu_backward(dout, self._take_cache())
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx

    def __repr__(self):
        return f"GroupNormSiLU({self.num_channels}, num_groups={self.num_groups}, eps={self.eps})"


# ------------------------------------------------------------------ BatchNorm
_BATCH_AXES = (0, 1, 2)


def batchnorm_forward(x, gamma, beta, running_mean, running_var, *, training: bool,
                      momentum: float = 0.99, eps: float = 1e-3, keep_cache: bool = True):
    """BatchNorm forward with Keras semantics.

    Training: mu, var = per-channel batch mean and biased variance over (N, H, W);
    the running statistics are updated *in place* as

        running = momentum * running + (1 - momentum) * batch statistic

    (Keras 3 updates the moving variance with the same biased variance it
    normalises with; PyTorch would use the unbiased one here.)
    Eval: mu, var = running_mean, running_var.

    Args:
        x: (N, H, W, C).  gamma, beta, running_mean, running_var: (C,).
        keep_cache: False when no backward follows (no_grad): xhat is then not kept
            and the output is computed in place in its buffer, so eval mode allocates
            one (N, H, W, C) array instead of four.
    Returns:
        out (N, H, W, C) in x.dtype, and the cache for batchnorm_backward (None
        with keep_cache=False).
    """
    dt = x.dtype
    if training:
        mean = x.mean(axis=_BATCH_AXES, dtype=np.float64)
        xhat = np.subtract(x, mean.astype(dt))  # x - mu for now; scaled to xhat below
        var = np.mean(np.square(xhat, dtype=np.float64), axis=_BATCH_AXES)
        running_mean *= momentum
        running_mean += (1 - momentum) * mean.astype(running_mean.dtype)
        running_var *= momentum
        running_var += (1 - momentum) * var.astype(running_var.dtype)
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        var = np.asarray(running_var, dtype=np.float64)
        xhat = np.subtract(x, mean.astype(dt))
    rstd = (1.0 / np.sqrt(var + eps)).astype(dt)
    xhat *= rstd
    # out = xhat * gamma + beta, in xhat's buffer when xhat is not needed afterwards
    out = np.multiply(xhat, gamma.astype(dt), out=None if keep_cache else xhat)
    out += beta.astype(dt)
    return out, ((xhat, rstd, gamma, training) if keep_cache else None)


def batchnorm_backward(dout, cache):
    """Gradients of batchnorm_forward (see the module docstring).

    Returns:
        dx (N, H, W, C), dgamma (C,), dbeta (C,), in the input's dtype.
    """
    xhat, rstd, gamma, training = cache
    dt = xhat.dtype
    dbeta = dout.sum(axis=_BATCH_AXES, dtype=np.float64)
    dgamma = np.sum(dout * xhat, axis=_BATCH_AXES, dtype=np.float64)
    a = rstd * gamma.astype(dt)
    if training:
        count = xhat.size // xhat.shape[-1]
        # mean(g) = gamma * mean(dout), mean(g * xhat) = gamma * mean(dout * xhat)
        dx = a * (dout - (dbeta / count).astype(dt) - xhat * (dgamma / count).astype(dt))
    else:
        dx = dout * a
    return dx.astype(dt, copy=False), dgamma.astype(dt), dbeta.astype(dt)


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) per channel, as Keras BatchNormalization.

    Training mode normalises with the batch statistics and updates the running
    ones: running = momentum * running + (1 - momentum) * batch (biased variance).
    Eval mode normalises with the running statistics.
    Parameters: weight = gamma (C,), ones; bias = beta (C,), zeros.
    Buffers: running_mean (C,), zeros; running_var (C,), ones.
    Shapes: (N, H, W, C) -> (N, H, W, C).
    """

    buffers = ("running_mean", "running_var")

    def __init__(self, num_channels: int, momentum: float = 0.99, eps: float = 1e-3):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm2d momentum must be in [0, 1], got {momentum}")
        self.num_channels, self.momentum, self.eps = num_channels, momentum, eps
        self.weight = Parameter(np.ones(num_channels, dtype=np.float32))
        self.bias = Parameter(np.zeros(num_channels, dtype=np.float32))
        self.running_mean = np.zeros(num_channels, dtype=np.float32)
        self.running_var = np.ones(num_channels, dtype=np.float32)

    def forward(self, x):
        check_input("BatchNorm2d", x, self.num_channels)
        out, cache = batchnorm_forward(x, self.weight.data, self.bias.data, self.running_mean,
                                       self.running_var, training=self.training,
                                       momentum=self.momentum, eps=self.eps, keep_cache=grad_enabled())
        self._keep(cache)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = batchnorm_backward(dout, self._take_cache())
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx

    def __repr__(self):
        return f"BatchNorm2d({self.num_channels}, momentum={self.momentum}, eps={self.eps})"
