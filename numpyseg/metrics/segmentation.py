"""Segmentation scores, as the authors report them.

A probability map p (H, W) is thresholded, pred = [p >= threshold]
(threshold 0.5), and compared with the 0/1 label y over a region (the whole
image, or the field of view).  Counting pixels in the region:

    TP = #(pred = 1, y = 1)    FP = #(pred = 1, y = 0)
    TN = #(pred = 0, y = 0)    FN = #(pred = 0, y = 1)

    accuracy    = (TP + TN) / (TP + TN + FP + FN)
    sensitivity = TP / (TP + FN)                  (recall, true-positive rate)
    specificity = TN / (TN + FP)                  (true-negative rate)
    precision   = TP / (TP + FP)
    f1          = 2 TP / (2 TP + FP + FN)         (Dice)
    iou         = TP / (TP + FP + FN)             (Jaccard)
    mcc         = (TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN))

Zero denominators: a ratio whose denominator is 0 is reported as 0.0 (for
example the sensitivity of an image with no vessel pixels), following the
scikit-learn convention.

ROC AUC is computed from the probabilities themselves (no threshold): the
probability that a random vessel pixel scores higher than a random background
pixel, ties counting 1/2.  This is the Mann-Whitney U statistic:

    AUC = (R+ - n+ (n+ + 1) / 2) / (n+ n-)

where R+ is the sum of the ranks (1-based, tied scores sharing their average
rank) of the n+ positive pixels among all n+ + n- pixels: O(n log n) by one
sort.  When the region holds only one class the AUC is undefined and is
reported as NaN; dataset means skip NaN values.
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "iou", "mcc", "auc")


def _as_map(array, what: str) -> np.ndarray:
    """(H, W) or (H, W, 1) -> (H, W); anything else -> one-line ValueError."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(f"{what} must be a map (H, W) or (H, W, 1), got shape {array.shape}")
    return array


def _region(prob, label, mask):
    """Validated flat (scores, labels bool) inside the region."""
    prob = _as_map(prob, "prob")
    label = _as_map(label, "label")
    if prob.shape != label.shape:
        raise ValueError(f"prob shape {prob.shape} differs from label shape {label.shape} "
                         f"(crop padded predictions back with numpyseg.data.crop_to)")
    if mask is None:
        return prob.ravel(), label.ravel() != 0
    mask = _as_map(mask, "mask")
    if mask.shape != label.shape:
        raise ValueError(f"mask shape {mask.shape} differs from label shape {label.shape}")
    inside = mask != 0
    return prob[inside], label[inside] != 0


def confusion(prob, label, mask=None, threshold: float = 0.5) -> dict:
    """Confusion counts of [prob >= threshold] against label, inside mask (if given).

    Args:
        prob: (H, W) or (H, W, 1) probabilities (or any scores).
        label: same shape, 0/1 (nonzero = vessel).
        mask: same shape, nonzero = counted; None counts every pixel.

    Returns:
        {'tp': int, 'fp': int, 'tn': int, 'fn': int}.
    """
    scores, truth = _region(prob, label, mask)
    pred = scores >= threshold
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    tn = int(truth.size - tp - fp - fn)
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def metrics_from_confusion(tp: int, fp: int, tn: int, fn: int) -> dict:
    """Accuracy, sensitivity, specificity, precision, F1, IoU, MCC from counts (see module docstring)."""
    tp, fp, tn, fn = (float(v) for v in (tp, fp, tn, fn))
    mcc_denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "mcc": _ratio(tp * tn - fp * fn, mcc_denominator),
    }


def _flat_scores(scores, labels):
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores ({scores.size} values) and labels ({labels.size} values) differ in size")
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, labels != 0


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic (ties: average ranks).

    AUC = (R+ - n+ (n+ + 1) / 2) / (n+ n-); see the module docstring.

    Args:
        scores: any shape, higher = more likely positive.
        labels: same size, nonzero = positive.

    Returns:
        AUC in [0, 1], or NaN when all labels are of one class.
    """
    scores, truth = _flat_scores(scores, labels)
    n_pos = int(np.count_nonzero(truth))
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    # Groups of tied scores: sorted positions [start, end) share the average
    # 1-based rank (start + 1 + end) / 2.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    positives_per_group = np.add.reduceat(truth[order].astype(np.int64), starts)
    rank_sum = float(np.dot(positives_per_group, (starts + 1 + ends) / 2.0))
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return u / (float(n_pos) * float(n_neg))


def roc_curve(scores, labels, max_points: int | None = None):
    """ROC curve points for plotting: (fpr, tpr, thresholds), float64 1-D arrays.

    One point per distinct score t (descending), with pred = [score >= t]:
    fpr = FP / n-, tpr = TP / n+.  The first point is (0, 0) at threshold +inf,
    the last (1, 1) at the lowest score; ties make diagonal steps, so the
    trapezoidal area under (fpr, tpr) equals `roc_auc`.

    Args:
        max_points: keep at most this many points (evenly spaced along the
            curve, first and last kept) to make plots light; None keeps all.

    Raises:
        ValueError: when the labels hold only one class (the curve is undefined).
    """
    scores, truth = _flat_scores(scores, labels)
    n_pos = int(np.count_nonzero(truth))
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_curve needs both positive and negative labels")
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    ordered = scores[order]
    last_of_group = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    tps = np.cumsum(truth[order])[last_of_group]
    fps = (last_of_group + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, ordered[last_of_group].astype(np.float64)]
    if max_points is not None and fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max(int(max_points), 2)).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return fpr, tpr, thresholds


def segmentation_metrics(prob, label, fov=None, threshold: float = 0.5) -> dict:
    """All scores of one image: accuracy, sensitivity, specificity, precision, f1, iou, mcc, auc.

    Args:
        prob: (H, W) or (H, W, 1) vessel probabilities.
        label: same shape, 0/1.
        fov: same shape, 0/1: score only inside it; None scores the whole image.
        threshold: pred = [prob >= threshold] for every score but the AUC.
    """
    counts = confusion(prob, label, fov, threshold)
    result = metrics_from_confusion(**counts)
    scores, truth = _region(prob, label, fov)
    result["auc"] = roc_auc(scores, truth)
    return result


def _mean(rows: list[dict]) -> dict:
    mean = {}
    for key in METRICS:
        values = np.array([row[key] for row in rows], dtype=np.float64)
        finite = values[~np.isnan(values)]
        mean[key] = float(finite.mean()) if finite.size else float("nan")
    return mean


def evaluate_dataset(probs, labels, fovs=None, threshold: float = 0.5, names=None) -> dict:
    """Per-image scores and their mean, over the whole image and inside the FOV.

    Args:
        probs: sequence of (H, W) or (H, W, 1) probability maps, cropped to the
            labels' size (or an array (N, H, W[, 1])).
        labels: matching 0/1 labels.
        fovs: matching FOV masks, or None (then only 'whole' is computed).
        threshold: see `segmentation_metrics`.
        names: optional image names, copied into the per-image rows as 'name'.

    Returns:
        {'whole': {'per_image': [dict, ...], 'mean': dict},
         'fov':   {'per_image': [...],       'mean': dict}}   ('fov' only with fovs)
        Each dict has the keys of METRICS; 'mean' is the mean over images (the
        authors' protocol), skipping NaN AUCs.
    """
    probs, labels = list(probs), list(labels)
    if len(probs) != len(labels):
        raise ValueError(f"evaluate_dataset: {len(probs)} probability maps but {len(labels)} labels")
    if fovs is not None:
        fovs = list(fovs)
        if len(fovs) != len(labels):
            raise ValueError(f"evaluate_dataset: {len(fovs)} FOV masks but {len(labels)} labels")
    if names is not None:
        names = list(names)
        if len(names) != len(labels):
            raise ValueError(f"evaluate_dataset: {len(names)} names but {len(labels)} labels")
    regions = {"whole": [None] * len(labels)}
    if fovs is not None:
        regions["fov"] = fovs
    result = {}
    for region, masks in regions.items():
        rows = []
        for i, (prob, label, mask) in enumerate(zip(probs, labels, masks)):
            row = segmentation_metrics(prob, label, mask, threshold)
            if names is not None:
                row = {"name": names[i], **row}
            rows.append(row)
        result[region] = {"per_image": rows, "mean": _mean(rows)}
    return result
