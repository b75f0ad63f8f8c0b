"""Losses with explicit gradients with respect to the logits: each returns (value, dlogits)."""

from numpyseg.losses.bce import BCEWithLogits, bce_with_logits
from numpyseg.losses.combined import BCEMCCLoss, bce_mcc_loss
from numpyseg.losses.mcc import MCCLoss, mcc_loss

__all__ = ["bce_with_logits", "BCEWithLogits", "mcc_loss", "MCCLoss", "bce_mcc_loss", "BCEMCCLoss"]
