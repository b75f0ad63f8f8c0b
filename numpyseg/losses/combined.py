"""The SA-UNetv2 training loss: a weighted sum of BCE and soft-MCC, both from logits.

    L = bce_weight * L_BCE(z, y; w_pos) + mcc_weight * L_MCC(z, y)
    dL/dz = bce_weight * dL_BCE/dz + mcc_weight * dL_MCC/dz

The spec uses bce_weight = mcc_weight = 0.5 and w_pos = 1 (the authors' notebook:
plain BCE, although the paper calls it weighted).  Both terms are taken over the
same masked pixels; see numpyseg.losses.bce and numpyseg.losses.mcc for the formulas
and gradients.  The two gradients are added in float64 and cast once.

References:
    C. Guo, A. N. Christensen, A. B. Dahl, Y. Yi, M. R. Hannemose, "SA-UNetv2: rethinking
    spatial attention U-Net for retinal vessel segmentation", arXiv:2509.11774, 2025
    (the BCE + MCC loss).
    K. Abhishek, G. Hamarneh, "Matthews correlation coefficient loss for deep
    convolutional networks: application to skin lesion segmentation", ISBI 2021.
"""

from __future__ import annotations

import numpy as np

from numpyseg.losses.bce import bce_terms, cast_grad, prepare, resolve_pos_weight
from numpyseg.losses.mcc import mcc_terms


def _bce_mcc(logits, target, mask, bce_weight, mcc_weight, pos_weight):
    z, y, m = prepare("bce_mcc_loss", logits, target, mask)
    bce, d_bce = bce_terms(z, y, m, resolve_pos_weight(pos_weight, y, m))
    mcc, d_mcc = mcc_terms(z, y, m)
    value = bce_weight * bce + mcc_weight * mcc
    grad = bce_weight * d_bce + mcc_weight * d_mcc
    return float(value), cast_grad(grad, logits.dtype), bce, mcc


def bce_mcc_loss(logits: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                 bce_weight: float = 0.5, mcc_weight: float = 0.5,
                 pos_weight: float | str = 1.0) -> tuple[float, np.ndarray]:
    """bce_weight * BCE + mcc_weight * (1 - soft MCC) and its gradient w.r.t. the logits.

    Args:
        logits: z, (N, H, W, 1) float array.
        target: y, same shape, values in [0, 1].
        mask: same shape, 0/1 (None: every pixel counts).
        bce_weight, mcc_weight: the weights of the two terms.
        pos_weight: BCE positive-class weight, a number or 'balanced'.

    Returns:
        (L, dL/dz), dL/dz with the shape and dtype of `logits`.
    """
    value, grad, _, _ = _bce_mcc(logits, target, mask, bce_weight, mcc_weight, pos_weight)
    return value, grad


class BCEMCCLoss:
    """The training loss as an object: loss(logits, target, mask=None) -> (L, dL/dz).

    After a call, `last` holds the two unweighted terms {'bce': ..., 'mcc': ...} for logging.
    """

    def __init__(self, bce_weight: float = 0.5, mcc_weight: float = 0.5,
                 pos_weight: float | str = 1.0):
        self.bce_weight = float(bce_weight)
        self.mcc_weight = float(mcc_weight)
        self.pos_weight = pos_weight
        self.last: dict[str, float] = {}

    def __call__(self, logits, target, mask=None):
        value, grad, bce, mcc = _bce_mcc(logits, target, mask, self.bce_weight,
                                         self.mcc_weight, self.pos_weight)
        self.last = {"bce": bce, "mcc": mcc}
        return value, grad

    def __repr__(self):
        return (f"BCEMCCLoss(bce_weight={self.bce_weight}, mcc_weight={self.mcc_weight}, "
                f"pos_weight={self.pos_weight!r})")
