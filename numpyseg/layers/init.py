"""Weight initialisers, as in Keras (the authors' framework).

he_normal:       w ~ TruncatedNormal(0, std), std = sqrt(2 / fan_in), cut at 2 std.
                 Keras draws from a normal truncated at +-2 stddev and divides the
                 scale by 0.87962566 so the *truncated* distribution has the wanted std.
glorot_uniform:  w ~ Uniform(-limit, limit), limit = sqrt(6 / (fan_in + fan_out)).

For an HWIO kernel (kh, kw, c_in, c_out): fan_in = kh*kw*c_in, fan_out = kh*kw*c_out.
Keras computes the fans of a Conv2DTranspose kernel (kh, kw, c_out, c_in) the same way
from its stored shape, which is symmetric in the two channel counts for glorot.

References:
    K. He, X. Zhang, S. Ren, J. Sun, "Delving deep into rectifiers: surpassing human-level
    performance on ImageNet classification", ICCV 2015, arXiv:1502.01852 (he_normal).
    X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward
    neural networks", AISTATS 2010 (glorot_uniform).
"""

from __future__ import annotations

import numpy as np

# std of a standard normal truncated to [-2, 2]
_TRUNCATED_STD = 0.87962566103423978


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel of shape (kh, kw, c_in, c_out) or (c_in, c_out)."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return receptive * shape[-2], receptive * shape[-1]


def truncated_normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    """Normal(0, std) samples redrawn until they fall inside +-2 std."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * std


def he_normal(rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
    fan_in, _ = fans(shape)
    std = np.sqrt(2.0 / fan_in) / _TRUNCATED_STD
    return truncated_normal(rng, shape, std).astype(dtype)


def glorot_uniform(rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def as_rng(seed_or_rng) -> np.random.Generator:
    """Accept a seed, None or a Generator; return a Generator."""
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)
