"""Soft Matthews-correlation-coefficient loss computed from logits.

With p_i = sigmoid(z_i), target y_i in [0, 1] and mask m_i (1 = pixel counts) the
soft confusion counts over the whole batch are

    TP = sum m p y          FP = sum m p (1 - y)
    FN = sum m (1 - p) y    TN = sum m (1 - p)(1 - y)

and, as in the SA-UNetv2 spec (eps = 1e-7 keeps the ratio finite),

    N = TP*TN - FP*FN
    A = (TP + FP)(TP + FN)(TN + FP)(TN + FN),    D = sqrt(A)
    L = 1 - N / (D + eps).

Gradient.  With the row/column sums a = TP+FP, b = TP+FN, c = TN+FP, d = TN+FN:

    dN/dTP = TN     dN/dTN = TP     dN/dFP = -FN    dN/dFN = -FP
    dA/dTP = c d (a + b)            dA/dTN = a b (c + d)
    dA/dFP = b d (a + c)            dA/dFN = a c (b + d)
    dD/dX  = dA/dX / (2 D)

and for each count X in {TP, TN, FP, FN} (quotient rule on N / (D + eps))

    g_X = dL/dX = -dN/dX / (D + eps) + N * dA/dX / (2 D (D + eps)^2).

Each pixel enters the counts through dTP/dp = m y, dFN/dp = -m y, dFP/dp = m (1-y),
dTN/dp = -m (1-y), and dp/dz = p (1 - p), so

    dL/dz_i = m_i p_i (1 - p_i) [ y_i (g_TP - g_FN) + (1 - y_i)(g_FP - g_TN) ].

Zero denominator.  A = 0 only when one of a, b, c, d is 0 (no predicted positives
or negatives, no true positives or negatives), and then N = 0 too: e.g. b = 0 means
every y = 0, so TP = FN = 0.  The loss is then 1 and the sqrt term's factor
N / (2 D) is 0/0; we take it as 0.  That is exact when the target has no positives
(or no negatives): N is then identically 0 and so is the whole gradient.  When all
predictions saturate at 0 (or 1) the sigmoid factor p (1 - p) is 0 as well, so the
gradient is 0 either way.  Both cases (an all-background patch with an all-background
prediction) stay finite.

The counts are accumulated in float64: a batch of 8 x 592 x 592 pixels has counts
near 10^6 whose float32 sums keep only a few digits, and N = TP*TN - FP*FN cancels
most of those.  The returned gradient has the logits' dtype.

References:
    K. Abhishek, G. Hamarneh, "Matthews correlation coefficient loss for deep
    convolutional networks: application to skin lesion segmentation", ISBI 2021.
    B. W. Matthews, "Comparison of the predicted and observed secondary structure of T4
    phage lysozyme", Biochimica et Biophysica Acta 405(2), 1975 (the coefficient).
"""

from __future__ import annotations

import numpy as np

from numpyseg.layers.activations import sigmoid
from numpyseg.losses.bce import cast_grad, prepare

MCC_EPS = 1e-7


def soft_confusion(p: np.ndarray, y: np.ndarray, m: np.ndarray,
                   q: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """(TP, TN, FP, FN) soft counts as float64 sums (formulas in the module docstring).

    q = 1 - p may be passed as sigmoid(-z), which keeps its digits when p is near 1.
    """
    mp, mq = m * p, m * (1.0 - p if q is None else q)
    tp = float(np.sum(mp * y))
    fp = float(np.sum(mp * (1.0 - y)))
    fn = float(np.sum(mq * y))
    tn = float(np.sum(mq * (1.0 - y)))
    return tp, tn, fp, fn


def mcc_from_counts(tp: float, tn: float, fp: float, fn: float, eps: float = MCC_EPS) -> float:
    """(TP*TN - FP*FN) / (sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) + eps)."""
    d = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / (d + eps))


def mcc_terms(z: np.ndarray, y: np.ndarray, m: np.ndarray) -> tuple[float, np.ndarray]:
    """Soft-MCC loss and its float64 gradient for float64 (z, y, m) from `prepare`."""
    p, q = sigmoid(z), sigmoid(-z)  # q = 1 - p without cancellation near p = 1
    tp, tn, fp, fn = soft_confusion(p, y, m, q)
    a, b, c, d = tp + fp, tp + fn, tn + fp, tn + fn
    num = tp * tn - fp * fn
    denom = float(np.sqrt(a * b * c * d))
    value = 1.0 - num / (denom + MCC_EPS)

    # g_X = -dN/dX / (D + eps) + s * dA/dX with s = N / (2 D (D + eps)^2), s := 0 at D = 0.
    s = num / (2.0 * denom * (denom + MCC_EPS) ** 2) if denom > 0 else 0.0
    inv = 1.0 / (denom + MCC_EPS)
    g_tp = -tn * inv + s * c * d * (a + b)
    g_tn = -tp * inv + s * a * b * (c + d)
    g_fp = fn * inv + s * b * d * (a + c)
    g_fn = fp * inv + s * a * c * (b + d)

    with np.errstate(under="ignore"):  # p (1 - p) underflows for saturated logits
        grad = m * (y * (g_tp - g_fn) + (1.0 - y) * (g_fp - g_tn)) * (p * q)
    return float(value), grad


def mcc_loss(logits: np.ndarray, target: np.ndarray,
             mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Soft MCC loss L = 1 - MCC(sigmoid(z), y) over the masked pixels, and dL/dz.

    Args:
        logits: z, (N, H, W, 1) float array (target and mask must have the same shape).
        target: y, same shape, values in [0, 1].
        mask: m, same shape, 0/1 (None: every pixel counts).  Masked-out pixels do not
            enter the counts and get a zero gradient.

    Returns:
        (L, dL/dz): the loss as a Python float and its gradient, same shape and dtype
        as `logits`.  Formulas in the module docstring.
    """
    z, y, m = prepare("mcc_loss", logits, target, mask)
    value, grad = mcc_terms(z, y, m)
    return value, cast_grad(grad, logits.dtype)


class MCCLoss:
    """Callable form of `mcc_loss`: loss(z, y, m) -> (L, dL/dz)."""

    def __call__(self, logits, target, mask=None):
        return mcc_loss(logits, target, mask)

    def __repr__(self):
        return "MCCLoss()"
