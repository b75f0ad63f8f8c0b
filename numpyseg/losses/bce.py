"""Binary cross-entropy computed from logits, with an optional positive-class weight.

The model outputs logits z of shape (N, H, W, 1); the vessel probability is
p = sigmoid(z).  For a target y in [0, 1] and a positive-class weight w the loss of
one pixel is

    l(z, y) = -[ w * y * log p + (1 - y) * log(1 - p) ].

Computing log p from a clipped p loses everything beyond the clip and produces
log(0) for saturated outputs.  Instead we use the log-sigmoid identities

    log p       = log sigmoid(z)  = -softplus(-z)
    log (1 - p) = log sigmoid(-z) = -softplus(z)
    softplus(z) = log(1 + e^z) = max(z, 0) + log1p(e^{-|z|})      (never overflows)
    softplus(-z) = softplus(z) - z,

which give

    l(z, y) = w * y * (softplus(z) - z) + (1 - y) * softplus(z)
            = (1 - y + w*y) * softplus(z) - w * y * z.

For w = 1 this is the familiar max(z, 0) - z*y + log1p(e^{-|z|}).

Gradient (d softplus(z)/dz = sigmoid(z) = p):

    dl/dz = (1 - y + w*y) * p - w*y            (w = 1:  p - y)

The batch loss is the mean over the pixels selected by a 0/1 mask m
(padding and outside-the-field-of-view pixels have m = 0; values in between act as
pixel weights):

    L = sum_i m_i * l_i / sum_i m_i,        dL/dz_i = m_i * dl/dz_i / sum_i m_i.

All sums are accumulated in float64; the returned gradient has the dtype of the logits.
An empty mask (sum m = 0) gives L = 0 and a zero gradient.

References:
    The log-sigmoid / softplus form of binary cross-entropy from logits is the standard
    one (e.g. TensorFlow's sigmoid_cross_entropy_with_logits); the weighted BCE + MCC
    loss of SA-UNetv2: C. Guo, A. N. Christensen, A. B. Dahl, Y. Yi, M. R. Hannemose,
    "SA-UNetv2: rethinking spatial attention U-Net for retinal vessel segmentation",
    arXiv:2509.11774, 2025.
"""

from __future__ import annotations

import numpy as np

from numpyseg.layers.activations import sigmoid


def softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + e^z) = max(z, 0) + log1p(e^{-|z|}), finite for every finite z."""
    # e^{-|z|} <= 1 cannot overflow; for |z| > ~745 it underflows to 0, which is the
    # correct limit, so the underflow flag is not an error here.
    with np.errstate(under="ignore"):
        return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def prepare(name: str, logits, target, mask=None):
    """Validate loss inputs and return them as float64 arrays (z, y, m) of equal shape.

    Raises:
        ValueError: one line naming the problem (type, dtype, shape, values).
    """
    if not isinstance(logits, np.ndarray) or logits.dtype.kind != "f":
        kind = getattr(logits, "dtype", type(logits).__name__)
        raise ValueError(f"{name} expects floating-point logits, got {kind}")
    target = np.asarray(target)
    if target.shape != logits.shape:
        raise ValueError(f"{name}: target shape {target.shape} differs from logits shape {logits.shape}")
    z = logits.astype(np.float64, copy=False)
    y = target.astype(np.float64, copy=False)
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name}: logits contain NaN or infinity (did training diverge?)")
    if not np.all((y >= 0) & (y <= 1)):
        raise ValueError(f"{name}: target values must lie in [0, 1] (got min {y.min()}, max {y.max()})")
    if mask is None:
        m = np.ones_like(y)
    else:
        mask = np.asarray(mask)
        if mask.shape != logits.shape:
            raise ValueError(f"{name}: mask shape {mask.shape} differs from logits shape {logits.shape}")
        m = mask.astype(np.float64, copy=False)
        if not np.all((m >= 0) & (m <= 1)):
            raise ValueError(f"{name}: mask values must lie in [0, 1] (got min {m.min()}, max {m.max()})")
    return z, y, m


#: Bounds of the 'balanced' weight: at most 100 (one vessel pixel in a patch of
#: background must not get 10,000 times the weight of the others), at least 1/100.
BALANCED_MAX_WEIGHT = 100.0


def balanced_pos_weight(target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """w = #negatives / #positives over the (masked) pixels, kept finite and positive.

    Both counts are floored at 1 pixel and w is clipped to
    [1 / BALANCED_MAX_WEIGHT, BALANCED_MAX_WEIGHT]:

        w = clip(max(#neg, 1) / max(#pos, 1), 1/100, 100)      (#pos > 0)

    so a batch without background (all vessel) still gives the vessels a positive
    weight, hence a loss and a gradient (w = 0 would silence them), and a batch with
    a handful of vessel pixels does not blow their gradient up.  A batch with no
    vessel pixel gets w = 1.0: w multiplies only the y = 1 terms, so the loss is
    plain BCE whatever w is.  Soft labels count fractionally (#pos = sum m * y,
    #neg = sum m * (1 - y)).

    Returns:
        w as a Python float in [0.01, 100].
    """
    y = np.asarray(target, dtype=np.float64)
    m = np.ones_like(y) if mask is None else np.asarray(mask, dtype=np.float64)
    pos = float(np.sum(m * y))
    if pos <= 0:
        return 1.0
    neg = float(np.sum(m * (1.0 - y)))
    ratio = max(neg, 1.0) / max(pos, 1.0)
    return float(np.clip(ratio, 1.0 / BALANCED_MAX_WEIGHT, BALANCED_MAX_WEIGHT))


def resolve_pos_weight(pos_weight, y: np.ndarray, m: np.ndarray) -> float:
    """The numeric positive-class weight: `pos_weight` itself or the balanced ratio."""
    if isinstance(pos_weight, str):
        if pos_weight != "balanced":
            raise ValueError(f"pos_weight must be a positive number or 'balanced', got '{pos_weight}'")
        return balanced_pos_weight(y, m)
    w = float(pos_weight)
    if not (np.isfinite(w) and w > 0):
        raise ValueError(f"pos_weight must be a positive finite number or 'balanced', got {pos_weight}")
    return w


def cast_grad(grad: np.ndarray, dtype) -> np.ndarray:
    """The float64 gradient in the logits' dtype (values below float32's range become 0)."""
    with np.errstate(under="ignore"):
        return grad.astype(dtype, copy=False)


def bce_terms(z: np.ndarray, y: np.ndarray, m: np.ndarray, w: float) -> tuple[float, np.ndarray]:
    """Masked mean weighted BCE and its float64 gradient for float64 (z, y, m) from `prepare`."""
    count = float(np.sum(m))
    if count == 0:
        return 0.0, np.zeros_like(z)
    a = 1.0 - y + w * y  # weight of softplus(z); equals 1 for plain BCE
    value = float(np.sum(m * (a * softplus(z) - w * y * z)) / count)
    with np.errstate(under="ignore"):
        grad = m * (a * sigmoid(z) - w * y) / count
    return value, grad


def bce_with_logits(logits: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                    pos_weight: float | str = 1.0) -> tuple[float, np.ndarray]:
    """Masked mean (weighted) binary cross-entropy from logits and its gradient.

    Args:
        logits: z, (N, H, W, 1) float array (any shape works; target and mask must match).
        target: y, same shape, values in [0, 1] (vessel = 1).
        mask: m, same shape, 1 for pixels that count and 0 for padding / outside the
            field of view; None counts every pixel.
        pos_weight: w > 0, the weight of the positive term, or 'balanced' for
            w = #neg / #pos over the masked pixels of this batch (a constant, not
            differentiated; counts floored at 1 and w clipped to [0.01, 100], see
            `balanced_pos_weight`).

    Returns:
        (L, dL/dz): the loss as a Python float and its gradient, same shape and dtype
        as `logits`.  Formulas in the module docstring.
    """
    z, y, m = prepare("bce_with_logits", logits, target, mask)
    value, grad = bce_terms(z, y, m, resolve_pos_weight(pos_weight, y, m))
    return value, cast_grad(grad, logits.dtype)


class BCEWithLogits:
    """Callable form of `bce_with_logits` with a fixed pos_weight: loss(z, y, m) -> (L, dL/dz)."""

    def __init__(self, pos_weight: float | str = 1.0):
        self.pos_weight = pos_weight

    def __call__(self, logits, target, mask=None):
        return bce_with_logits(logits, target, mask, self.pos_weight)

    def __repr__(self):
        return f"BCEWithLogits(pos_weight={self.pos_weight!r})"
