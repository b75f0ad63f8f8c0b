"""Segmentation scores against hand counts, brute-force AUC, and the DRIVE second observer."""

import math

import numpy as np
import pytest

from numpyseg.data.datasets import load_drive
from numpyseg.metrics.segmentation import (
    METRICS, confusion, evaluate_dataset, metrics_from_confusion, roc_auc, roc_curve, segmentation_metrics,
)


def brute_force_auc(scores, labels):
    """P(score_pos > score_neg) + 1/2 P(tie) over all positive-negative pairs: O(n^2)."""
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (pos.size * neg.size)


def test_confusion_by_hand():
    prob = np.array([[0.9, 0.2, 0.5], [0.6, 0.4, 0.1]])
    label = np.array([[1, 0, 1], [0, 1, 0]])
    # pred = prob >= 0.5 -> [[1, 0, 1], [1, 0, 0]]
    assert confusion(prob, label) == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    assert confusion(prob, label, mask) == {"tp": 1, "fp": 0, "tn": 2, "fn": 1}
    assert confusion(prob[:, :, None], label[:, :, None], threshold=0.55) == {"tp": 1, "fp": 1, "tn": 2, "fn": 2}


def test_metrics_from_known_counts():
    m = metrics_from_confusion(tp=10, fp=5, tn=80, fn=5)
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["sensitivity"] == pytest.approx(10 / 15)
    assert m["specificity"] == pytest.approx(80 / 85)
    assert m["precision"] == pytest.approx(10 / 15)
    assert m["f1"] == pytest.approx(20 / 30)
    assert m["iou"] == pytest.approx(10 / 20)
    assert m["mcc"] == pytest.approx((10 * 80 - 5 * 5) / math.sqrt(15 * 15 * 85 * 85))


def test_mcc_is_the_correlation_of_prediction_and_label(rng):
    prob = rng.random((30, 40))
    label = (rng.random((30, 40)) < 0.3).astype(np.uint8)
    label[prob > 0.8] = 1
    pred = (prob >= 0.5).astype(float)
    m = segmentation_metrics(prob, label)
    assert m["mcc"] == pytest.approx(np.corrcoef(pred.ravel(), label.ravel())[0, 1], rel=1e-12)
    assert m["f1"] == pytest.approx(2 * m["precision"] * m["sensitivity"] / (m["precision"] + m["sensitivity"]))
    assert m["iou"] == pytest.approx(m["f1"] / (2 - m["f1"]))


def test_zero_denominators_are_zero_and_auc_nan():
    prob = np.zeros((4, 4))
    label = np.zeros((4, 4), np.uint8)
    m = segmentation_metrics(prob, label)
    assert m["accuracy"] == 1.0 and m["specificity"] == 1.0
    assert m["sensitivity"] == m["precision"] == m["f1"] == m["iou"] == m["mcc"] == 0.0
    assert math.isnan(m["auc"])


@pytest.mark.parametrize("n,levels", [(50, 3), (200, 6), (301, 1000)])
def test_auc_matches_brute_force_with_ties(rng, n, levels):
    for _ in range(5):
        scores = rng.integers(0, levels, n).astype(np.float32) / levels
        labels = (rng.random(n) < 0.35).astype(np.uint8)
        assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


def test_auc_extremes():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(np.full(4, 0.3), labels) == 0.5
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([np.nan, 0.2]), np.array([0, 1]))


def test_roc_curve_area_and_points(rng):
    scores = rng.integers(0, 20, 500) / 20.0
    labels = (rng.random(500) < 0.4).astype(np.uint8)
    fpr, tpr, thresholds = roc_curve(scores, labels)
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0 and np.isinf(thresholds[0])
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all() and (np.diff(thresholds) < 0).all()
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
    assert area == pytest.approx(roc_auc(scores, labels), abs=1e-12)
    for t, f, s in zip(thresholds[1:], fpr[1:], tpr[1:]):
        c = confusion(scores[None, :], labels[None, :], threshold=t)
        assert f == pytest.approx(c["fp"] / (c["fp"] + c["tn"])) and s == pytest.approx(c["tp"] / (c["tp"] + c["fn"]))
    small = roc_curve(scores, labels, max_points=5)
    assert small[0].size == 5 and small[0][0] == 0.0 and small[0][-1] == 1.0


def test_fov_restricts_the_region(rng):
    prob = rng.random((20, 20))
    label = (rng.random((20, 20)) < 0.2).astype(np.uint8)
    fov = np.zeros((20, 20), np.uint8)
    fov[5:15, 5:15] = 1
    inside = segmentation_metrics(prob, label, fov)
    cropped = segmentation_metrics(prob[5:15, 5:15], label[5:15, 5:15])
    for key in METRICS:
        assert inside[key] == pytest.approx(cropped[key])
    with pytest.raises(ValueError, match="differs from label shape"):
        segmentation_metrics(np.zeros((24, 24)), label)


def test_evaluate_dataset_means_and_regions(rng):
    probs = [rng.random((16, 18)) for _ in range(3)]
    labels = [(rng.random((16, 18)) < 0.3).astype(np.uint8) for _ in range(3)]
    fovs = [(rng.random((16, 18)) < 0.8).astype(np.uint8) for _ in range(3)]
    result = evaluate_dataset(probs, labels, fovs, names=["a", "b", "c"])
    assert set(result) == {"whole", "fov"}
    for region, masks in (("whole", [None] * 3), ("fov", fovs)):
        rows = result[region]["per_image"]
        assert [r["name"] for r in rows] == ["a", "b", "c"]
        for row, p, y, m in zip(rows, probs, labels, masks):
            assert row["f1"] == pytest.approx(segmentation_metrics(p, y, m)["f1"])
        for key in METRICS:
            assert result[region]["mean"][key] == pytest.approx(np.mean([r[key] for r in rows]))
    assert set(evaluate_dataset(probs, labels)) == {"whole"}
    with pytest.raises(ValueError, match="2 labels"):
        evaluate_dataset(probs, labels[:2])


def test_drive_second_observer_scores(drive_root):
    # The published scores of DRIVE's second observer against the first, inside the
    # FOV: accuracy 0.9472, sensitivity 0.7760, specificity 0.9724.
    first = load_drive(drive_root, "test")
    second = load_drive(drive_root, "test", observer=2)
    result = evaluate_dataset([s.label.astype(np.float32) for s in second], [s.label for s in first],
                              [s.fov for s in first])
    mean = result["fov"]["mean"]
    assert mean["accuracy"] == pytest.approx(0.9472, abs=5e-4)
    assert mean["sensitivity"] == pytest.approx(0.7760, abs=5e-4)
    assert mean["specificity"] == pytest.approx(0.9724, abs=5e-4)
    assert result["whole"]["mean"]["accuracy"] > mean["accuracy"]  # the black outside is easy
