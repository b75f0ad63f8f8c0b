"""The field's segmentation metrics, per image and averaged over a dataset."""

from numpyseg.metrics.segmentation import (METRICS, confusion, evaluate_dataset,
                                           metrics_from_confusion, roc_auc, roc_curve,
                                           segmentation_metrics)

__all__ = ["METRICS", "confusion", "metrics_from_confusion", "roc_auc", "roc_curve",
           "segmentation_metrics", "evaluate_dataset"]
