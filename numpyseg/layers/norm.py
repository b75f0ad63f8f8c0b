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

Every operation here has a plain-NumPy reference and a fast version (numpyseg.backends
chooses; the layers run the active one): `groupnorm_forward_reference` /
`groupnorm_backward_reference` compute the formulas above with whole-array NumPy
operations in float64, `groupnorm_forward_fast` / `groupnorm_backward_fast` run the
numba kernels of numpyseg/kernels/groupnorm.py (two passes over memory forward, two
backward); the same for GroupNorm + SiLU (`groupnorm_silu_*`).  BatchNorm has no
kernel: `batchnorm_forward_reference` is the formulas in float64, and
`batchnorm_forward_fast` the same in the input's dtype, in place, with no copy of xhat
when no backward follows.

References:
    Y. Wu, K. He, "Group normalization", ECCV 2018, arXiv:1803.08494.
    S. Ioffe, C. Szegedy, "Batch normalization: accelerating deep network training
    by reducing internal covariate shift", ICML 2015, arXiv:1502.03167.
    S. Elfwing, E. Uchibe, K. Doya, "Sigmoid-weighted linear units for neural network
    function approximation in reinforcement learning", Neural Networks 107, 2018 (SiLU).
    T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing the sample
    variance: analysis and recommendations", The American Statistician 37(3), 1983
    (combining per-row statistics in the GroupNorm kernels).
"""

from __future__ import annotations

import numpy as np

from numpyseg.backends import pick
from numpyseg.kernels import groupnorm as groupnorm_kernels
from numpyseg.layers.activations import sigmoid, silu_forward_fast, silu_forward_reference
from numpyseg.layers.module import Module, Parameter, check_input, grad_enabled


# ------------------------------------------------------------------ GroupNorm
def _group_view(x, num_groups: int) -> np.ndarray:
    """(N, H, W, C) -> float64 (N, H, W, G, C/G): a group's entries share the index g."""
    n, h, w, c = x.shape
    return np.asarray(x, dtype=np.float64).reshape(n, h, w, num_groups, c // num_groups)


def _normalised(x, mean, rstd, num_groups: int) -> np.ndarray:
    """xhat = (x - mu[n, g]) * rstd[n, g], float64 (N, H, W, C)."""
    xg = _group_view(x, num_groups)
    return ((xg - mean[:, None, None, :, None]) * rstd[:, None, None, :, None]).reshape(x.shape)


def groupnorm_forward_reference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                                num_groups: int = 8, eps: float = 1e-3):
    """GroupNorm in plain NumPy (float64 inside).

    Args:
        x: (N, H, W, C) with C divisible by num_groups.  gamma, beta: (C,).
    Returns:
        out (N, H, W, C) in x.dtype, and the cache (x, gamma, mean, rstd, num_groups),
        mean and rstd (N, G) float64.
    """
    xg = _group_view(x, num_groups)
    mean = xg.mean(axis=(1, 2, 4))
    var = ((xg - mean[:, None, None, :, None]) ** 2).mean(axis=(1, 2, 4))
    rstd = 1.0 / np.sqrt(var + eps)
    y = _normalised(x, mean, rstd, num_groups) * gamma + beta
    return y.astype(x.dtype), (x, gamma, mean, rstd, num_groups)


def _groupnorm_input_grad(d, x, gamma, mean, rstd, num_groups: int):
    """dx, dgamma, dbeta (float64) for the gradient d w.r.t. the GroupNorm output z."""
    n, h, w, c = x.shape
    shape5 = (n, h, w, num_groups, c // num_groups)
    xhat = _normalised(x, mean, rstd, num_groups)
    dbeta = d.sum(axis=(0, 1, 2))
    dgamma = (d * xhat).sum(axis=(0, 1, 2))
    g = (d * np.asarray(gamma, dtype=np.float64)).reshape(shape5)
    xhat = xhat.reshape(shape5)
    mean_g = g.mean(axis=(1, 2, 4), keepdims=True)
    mean_gx = (g * xhat).mean(axis=(1, 2, 4), keepdims=True)
    dx = rstd[:, None, None, :, None] * (g - mean_g - xhat * mean_gx)
    return dx.reshape(x.shape), dgamma, dbeta


def groupnorm_backward_reference(dout: np.ndarray, cache):
    """Gradients of groupnorm_forward_reference, from the formula in the module docstring.

    Returns:
        dx (N, H, W, C), dgamma (C,), dbeta (C,), all in the input's dtype.
    """
    x, gamma, mean, rstd, num_groups = cache
    dx, dgamma, dbeta = _groupnorm_input_grad(np.asarray(dout, dtype=np.float64), x, gamma, mean, rstd,
                                              num_groups)
    return dx.astype(x.dtype), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def groupnorm_forward_fast(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                           num_groups: int = 8, eps: float = 1e-3):
    """GroupNorm by numba kernels (numpyseg.kernels.groupnorm); arguments and results as the reference."""
    out, mean, rstd = groupnorm_kernels.forward(x, gamma, beta, num_groups, eps)
    return out, (x, gamma, mean, rstd, num_groups)


def groupnorm_backward_fast(dout: np.ndarray, cache):
    """Gradients of groupnorm_forward_fast (numba kernels): dx, dgamma, dbeta in the input's dtype."""
    x, gamma, mean, rstd, num_groups = cache
    dx, dgamma, dbeta = groupnorm_kernels.backward(dout, x, gamma, mean, rstd, num_groups)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


GROUPNORM_REFERENCE = (groupnorm_forward_reference, groupnorm_backward_reference)
GROUPNORM_FAST = (groupnorm_forward_fast, groupnorm_backward_fast)


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

    _implementations = (GROUPNORM_REFERENCE, GROUPNORM_FAST)  # (reference pair, fast pair)

    def normalise_with(self, x, mean, rstd):
        """This layer's output for x normalised with given group statistics (G,) (inference)."""
        return groupnorm_with_statistics(x, self.weight.data, self.bias.data, mean, rstd, self.num_groups)

    def forward(self, x):
        check_input(type(self).__name__, x, self.num_channels)
        if self.whole_image is not None:
            return self.whole_image.normalise(self, x)
        forward, backward = pick(*self._implementations)
        out, cache = forward(x, self.weight.data, self.bias.data, self.num_groups, self.eps)
        self._keep(cache, backward)
        return out

    def backward(self, dout):
        backward, cache = self._take()
        dx, dgamma, dbeta = backward(dout, cache)
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx

    def __repr__(self):
        return f"GroupNorm({self.num_channels}, num_groups={self.num_groups}, eps={self.eps})"


# ------------------------------------------------- GroupNorm + SiLU, fused
def groupnorm_silu_forward_reference(x, gamma, beta, num_groups: int = 8, eps: float = 1e-3):
    """y = silu(GroupNorm(x)) = z * sigmoid(z) in plain NumPy (float64 inside).

    Returns:
        out (N, H, W, C) in x.dtype, and the cache (x, gamma, beta, mean, rstd, groups).
    """
    z, (_, _, mean, rstd, _) = groupnorm_forward_reference(np.asarray(x, dtype=np.float64), gamma, beta,
                                                           num_groups, eps)
    y = z * sigmoid(z)
    return y.astype(x.dtype), (x, gamma, beta, mean, rstd, num_groups)


def groupnorm_silu_backward_reference(dout, cache):
    """dz = dout * s * (1 + z * (1 - s)), s = sigmoid(z), then GroupNorm's backward; dx, dgamma, dbeta."""
    x, gamma, beta, mean, rstd, num_groups = cache
    z = _normalised(x, mean, rstd, num_groups) * gamma + beta
    s = sigmoid(z)
    dz = np.asarray(dout, dtype=np.float64) * s * (1.0 + z * (1.0 - s))
    dx, dgamma, dbeta = _groupnorm_input_grad(dz, x, gamma, mean, rstd, num_groups)
    return dx.astype(x.dtype), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def groupnorm_silu_forward_fast(x, gamma, beta, num_groups: int = 8, eps: float = 1e-3):
    """y = silu(GroupNorm(x)) in one pass (numpyseg.kernels.groupnorm).

    Returns:
        out (N, H, W, C) in x.dtype, and the cache (x, gamma, beta, mean, rstd, groups):
        no activation is stored, z = GroupNorm(x) is recomputed in the backward.
    """
    out, mean, rstd = groupnorm_kernels.forward_silu(x, gamma, beta, num_groups, eps)
    return out, (x, gamma, beta, mean, rstd, num_groups)


def groupnorm_silu_backward_fast(dout, cache):
    """dz = dout * silu'(z), then GroupNorm's backward (numba kernels); returns dx, dgamma, dbeta."""
    x, gamma, beta, mean, rstd, num_groups = cache
    dx, dgamma, dbeta = groupnorm_kernels.backward_silu(dout, x, gamma, beta, mean, rstd, num_groups)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


GROUPNORM_SILU_REFERENCE = (groupnorm_silu_forward_reference, groupnorm_silu_backward_reference)
GROUPNORM_SILU_FAST = (groupnorm_silu_forward_fast, groupnorm_silu_backward_fast)


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
        silu = pick(silu_forward_reference, silu_forward_fast)
        return silu(super().normalise_with(x, mean, rstd))[0]

    _implementations = (GROUPNORM_SILU_REFERENCE, GROUPNORM_SILU_FAST)

    def __repr__(self):
        return f"GroupNormSiLU({self.num_channels}, num_groups={self.num_groups}, eps={self.eps})"


# ------------------------------------------------------------------ BatchNorm
_BATCH_AXES = (0, 1, 2)


def batchnorm_forward_reference(x, gamma, beta, running_mean, running_var, *, training: bool,
                                momentum: float = 0.99, eps: float = 1e-3, keep_cache: bool = True):
    """BatchNorm forward with Keras semantics, the formulas in float64.

    Training: mu, var = per-channel batch mean and biased variance over (N, H, W), and
    running = momentum * running + (1 - momentum) * batch statistic, in place.
    Eval: mu, var = running_mean, running_var.

    Args:
        x: (N, H, W, C).  gamma, beta, running_mean, running_var: (C,).
        keep_cache: False when no backward follows (no_grad): the cache is then None.
    Returns:
        out (N, H, W, C) in x.dtype, and the cache (xhat, rstd, gamma, training, dtype).
    """
    x64 = np.asarray(x, dtype=np.float64)
    if training:
        mean = x64.mean(axis=_BATCH_AXES)
        var = ((x64 - mean) ** 2).mean(axis=_BATCH_AXES)
        running_mean *= momentum
        running_mean += (1 - momentum) * mean
        running_var *= momentum
        running_var += (1 - momentum) * var
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        var = np.asarray(running_var, dtype=np.float64)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x64 - mean) * rstd
    out = xhat * np.asarray(gamma, dtype=np.float64) + beta
    return out.astype(x.dtype), ((xhat, rstd, gamma, training, x.dtype) if keep_cache else None)


def batchnorm_backward_reference(dout, cache):
    """Gradients of batchnorm_forward_reference (module docstring), in the input's dtype.

    Returns:
        dx (N, H, W, C), dgamma (C,), dbeta (C,).
    """
    xhat, rstd, gamma, training, dt = cache
    d = np.asarray(dout, dtype=np.float64)
    dbeta = d.sum(axis=_BATCH_AXES)
    dgamma = (d * xhat).sum(axis=_BATCH_AXES)
    g = d * np.asarray(gamma, dtype=np.float64)
    if training:
        dx = rstd * (g - g.mean(axis=_BATCH_AXES) - xhat * (g * xhat).mean(axis=_BATCH_AXES))
    else:
        dx = rstd * g
    return dx.astype(dt), dgamma.astype(dt), dbeta.astype(dt)


def batchnorm_forward_fast(x, gamma, beta, running_mean, running_var, *, training: bool,
                      momentum: float = 0.99, eps: float = 1e-3, keep_cache: bool = True):
    """BatchNorm forward with Keras semantics, in x's dtype and in place where it can.

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
        out (N, H, W, C) in x.dtype, and the cache for batchnorm_backward_fast (None
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


def batchnorm_backward_fast(dout, cache):
    """Gradients of batchnorm_forward_fast (see the module docstring).

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


BATCHNORM_REFERENCE = (batchnorm_forward_reference, batchnorm_backward_reference)
BATCHNORM_FAST = (batchnorm_forward_fast, batchnorm_backward_fast)


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
        forward, backward = pick(BATCHNORM_REFERENCE, BATCHNORM_FAST)
        out, cache = forward(x, self.weight.data, self.bias.data, self.running_mean, self.running_var,
                             training=self.training, momentum=self.momentum, eps=self.eps,
                             keep_cache=grad_enabled())
        self._keep(cache, backward)
        return out

    def backward(self, dout):
        backward, cache = self._take()
        dx, dgamma, dbeta = backward(dout, cache)
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx

    def __repr__(self):
        return f"BatchNorm2d({self.num_channels}, momentum={self.momentum}, eps={self.eps})"
