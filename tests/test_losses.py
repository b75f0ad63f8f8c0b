"""Losses from logits: gradient checks, hand-computed values, stability, PyTorch parity."""

import math

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_function
from numpyseg.losses.bce import BCEWithLogits, balanced_pos_weight, bce_with_logits, sigmoid, softplus
from numpyseg.losses.combined import BCEMCCLoss, bce_mcc_loss
from numpyseg.losses.mcc import MCC_EPS, MCCLoss, mcc_loss

SHAPE = (2, 6, 5, 1)

LOSSES = {
    "bce": lambda z, y, m: bce_with_logits(z, y, m),
    "bce_pos3": lambda z, y, m: bce_with_logits(z, y, m, pos_weight=3.0),
    "bce_balanced": lambda z, y, m: bce_with_logits(z, y, m, pos_weight="balanced"),
    "mcc": lambda z, y, m: mcc_loss(z, y, m),
    "combined": lambda z, y, m: bce_mcc_loss(z, y, m),
    "combined_weighted": lambda z, y, m: bce_mcc_loss(z, y, m, bce_weight=0.3, mcc_weight=0.7,
                                                       pos_weight="balanced"),
}


def batch(rng, scale=2.0):
    z = rng.standard_normal(SHAPE) * scale
    y = (rng.random(SHAPE) < 0.3).astype(np.float64)
    m = (rng.random(SHAPE) < 0.7).astype(np.float64)
    return z, y, m


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_gradcheck(rng, name, masked):
    f = LOSSES[name]
    z, y, m = batch(rng)
    mask = m if masked else None
    value, grad = f(z, y, mask)
    assert grad.shape == z.shape and grad.dtype == np.float64
    report = check_function(lambda zz: f(zz, y, mask)[0], [grad], [z], max_entries=None)
    assert report.passed, f"{name}: {report}"
    if masked:
        # Pixels outside the mask neither count nor receive gradient.
        assert np.all(grad[m == 0] == 0)
        z2 = z.copy()
        z2[m == 0] = rng.standard_normal(int((m == 0).sum())) * 10
        assert f(z2, y, mask)[0] == pytest.approx(value, rel=1e-12)


def test_hand_computed_values():
    # p = sigmoid(+-ln 3) = 0.75, 0.25 for targets 1, 0: every pixel is 75% right.
    z = np.array([math.log(3.0), -math.log(3.0)]).reshape(1, 1, 2, 1)
    y = np.array([1.0, 0.0]).reshape(z.shape)
    e = MCC_EPS

    bce, dbce = bce_with_logits(z, y)
    assert bce == pytest.approx(-math.log(0.75), rel=1e-14)
    np.testing.assert_allclose(dbce.ravel(), [-0.125, 0.125], rtol=1e-14)  # (p - y) / 2

    # w = 3: (3 * -ln 0.75 + -ln 0.75) / 2 ; dl/dz = ((1 - y + 3y) p - 3y) / 2
    bce3, dbce3 = bce_with_logits(z, y, pos_weight=3.0)
    assert bce3 == pytest.approx(-2 * math.log(0.75), rel=1e-14)
    np.testing.assert_allclose(dbce3.ravel(), [(3 * 0.75 - 3) / 2, 0.25 / 2], rtol=1e-14)

    # TP = TN = 0.75, FP = FN = 0.25: N = 0.5, every row/column sum 1, D = 1.
    mcc, dmcc = mcc_loss(z, y)
    assert mcc == pytest.approx(1 - 0.5 / (1 + e), rel=1e-14)
    # g_TP - g_FN = -(TN + FP)/(D + eps) = -1/(1 + eps), times p(1 - p) = 3/16.
    np.testing.assert_allclose(dmcc.ravel(), [-0.1875 / (1 + e), 0.1875 / (1 + e)], rtol=1e-13)

    total, dtotal = bce_mcc_loss(z, y)
    assert total == pytest.approx(0.5 * bce + 0.5 * mcc, rel=1e-14)
    np.testing.assert_allclose(dtotal, 0.5 * dbce + 0.5 * dmcc, rtol=1e-14)

    # A third pixel outside the mask changes nothing.
    z3 = np.array([math.log(3.0), -math.log(3.0), 7.0]).reshape(1, 1, 3, 1)
    y3 = np.array([1.0, 0.0, 0.0]).reshape(z3.shape)
    m3 = np.array([1.0, 1.0, 0.0]).reshape(z3.shape)
    for f, (v, g) in [(bce_with_logits, (bce, dbce)), (mcc_loss, (mcc, dmcc)), (bce_mcc_loss, (total, dtotal))]:
        v3, g3 = f(z3, y3, m3)
        assert v3 == pytest.approx(v, rel=1e-14)
        np.testing.assert_allclose(g3.ravel(), np.append(g.ravel(), 0.0), rtol=1e-13)


def test_mcc_perfect_and_inverted_predictions():
    y = np.array([1.0, 0.0, 0.0, 1.0]).reshape(1, 2, 2, 1)
    assert mcc_loss(np.where(y > 0, 30.0, -30.0), y)[0] == pytest.approx(0.0, abs=1e-6)
    assert mcc_loss(np.where(y > 0, -30.0, 30.0), y)[0] == pytest.approx(2.0, abs=1e-6)


def test_balanced_pos_weight():
    y = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).reshape(1, 1, 6, 1)
    m = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]).reshape(y.shape)
    assert balanced_pos_weight(y) == 2.0            # 4 negatives / 2 positives
    assert balanced_pos_weight(y, m) == 3.0         # 3 / 1 inside the mask
    assert balanced_pos_weight(np.zeros_like(y)) == 1.0  # no positives: plain BCE
    z = np.linspace(-2, 2, 6).reshape(y.shape)
    v, g = bce_with_logits(z, y, m, pos_weight="balanced")
    v3, g3 = bce_with_logits(z, y, m, pos_weight=3.0)
    assert v == v3
    np.testing.assert_array_equal(g, g3)
    assert bce_with_logits(z, np.zeros_like(y), pos_weight="balanced")[0] == bce_with_logits(z, np.zeros_like(y))[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [100.0, 1000.0])
def test_stable_for_saturated_logits(rng, dtype, scale):
    z = np.where(rng.random(SHAPE) < 0.5, scale, -scale).astype(dtype)
    y = (rng.random(SHAPE) < 0.3).astype(dtype)
    m = (rng.random(SHAPE) < 0.7).astype(dtype)
    with np.errstate(all="raise"):  # any overflow, underflow, 0/0 or log(0) raises
        for f in LOSSES.values():
            for mask in (None, m):
                value, grad = f(z, y, mask)
                assert np.isfinite(value)
                assert grad.dtype == dtype and grad.shape == z.shape
                assert np.all(np.isfinite(grad))
    # The BCE of a confidently wrong pixel is its logit: no clipping of p.
    one = np.array([[[[scale]]]], dtype=dtype)
    assert bce_with_logits(one, np.zeros_like(one))[0] == pytest.approx(scale, rel=1e-12)
    assert bce_with_logits(-one, np.ones_like(one))[0] == pytest.approx(scale, rel=1e-12)
    assert bce_with_logits(one, np.ones_like(one))[1].item() == 0.0


def test_softplus_and_sigmoid_match_direct_formulas(rng):
    z = rng.uniform(-30, 30, 1000)
    np.testing.assert_allclose(softplus(z), np.log1p(np.exp(z)), rtol=1e-12)
    np.testing.assert_allclose(sigmoid(z), 1 / (1 + np.exp(-z)), rtol=1e-12)
    with np.errstate(all="raise"):
        assert softplus(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1000.0]
        assert sigmoid(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mcc_zero_denominator_is_finite(rng, dtype):
    y = np.zeros(SHAPE, dtype=dtype)
    with np.errstate(all="raise"):
        # All-background target and all-background prediction: every sum but TN is ~0.
        for z in (np.full(SHAPE, -100.0, dtype), np.full(SHAPE, -1000.0, dtype),
                  rng.standard_normal(SHAPE).astype(dtype)):
            value, grad = mcc_loss(z, y)
            assert value == pytest.approx(1.0)
            # With no positive target N = TP*TN - FP*FN is identically 0: zero gradient.
            assert np.all(grad == 0)
            value, grad = bce_mcc_loss(z, y)
            assert np.isfinite(value) and np.all(np.isfinite(grad))
        # All-vessel target, all-vessel prediction.
        value, grad = mcc_loss(np.full(SHAPE, 1000.0, dtype), np.ones(SHAPE, dtype))
        assert value == pytest.approx(1.0) and np.all(grad == 0)
        # An empty mask: BCE has no pixels (0), MCC has no counts (1); no gradient.
        empty = np.zeros(SHAPE)
        z = rng.standard_normal(SHAPE).astype(dtype)
        value, grad = bce_with_logits(z, y, empty)
        assert value == 0.0 and np.all(grad == 0)
        value, grad = mcc_loss(z, y, empty)
        assert value == 1.0 and np.all(grad == 0)


def test_mcc_gradient_with_rare_positives(rng):
    # Early training on a background patch: one vessel pixel, predictions mostly negative,
    # so the row/column sums TP+FN and TP+FP are small and the sqrt term dominates.
    z = rng.standard_normal(SHAPE) - 4.0
    y = np.zeros(SHAPE)
    y[0, 1, 2, 0] = 1.0
    value, grad = mcc_loss(z, y)
    report = check_function(lambda zz: mcc_loss(zz, y)[0], [grad], [z], max_entries=None)
    assert report.passed, report


def test_classes_match_functions(rng):
    z, y, m = batch(rng)
    loss = BCEMCCLoss(bce_weight=0.25, mcc_weight=0.75, pos_weight=2.0)
    v, g = loss(z, y, m)
    v2, g2 = bce_mcc_loss(z, y, m, 0.25, 0.75, 2.0)
    assert v == v2
    np.testing.assert_array_equal(g, g2)
    assert v == pytest.approx(0.25 * loss.last["bce"] + 0.75 * loss.last["mcc"], rel=1e-14)
    assert BCEWithLogits(2.0)(z, y, m)[0] == bce_with_logits(z, y, m, 2.0)[0]
    assert MCCLoss()(z, y, m)[0] == mcc_loss(z, y, m)[0]


def test_float32_matches_float64(rng):
    z, y, m = batch(rng)
    v64, g64 = bce_mcc_loss(z, y, m)
    v32, g32 = bce_mcc_loss(z.astype(np.float32), y.astype(np.float32), m.astype(np.float32))
    assert g32.dtype == np.float32
    assert v32 == pytest.approx(v64, rel=1e-6)
    np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-9)


def test_bad_inputs_raise_one_line_errors(rng):
    z, y, m = batch(rng)
    cases = [
        (lambda: bce_with_logits(z[..., 0], y), "target shape"),
        (lambda: mcc_loss(z, y, m[:1]), "mask shape"),
        (lambda: bce_mcc_loss(z.astype(np.int64), y), "floating-point logits"),
        (lambda: bce_with_logits(np.where(m > 0, np.nan, z), y), "NaN"),
        (lambda: mcc_loss(z, y * 2), r"target values must lie in \[0, 1\]"),
        (lambda: bce_with_logits(z, y, m * 3), r"mask values must lie in \[0, 1\]"),
        (lambda: bce_with_logits(z, y, pos_weight="balance"), "pos_weight"),
        (lambda: bce_with_logits(z, y, pos_weight=-1.0), "pos_weight"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def _torch_mcc_loss(torch, z, y, m):
    p = torch.sigmoid(z)
    tp = (m * p * y).sum()
    tn = (m * (1 - p) * (1 - y)).sum()
    fp = (m * p * (1 - y)).sum()
    fn = (m * (1 - p) * y).sum()
    den = torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) + 1e-7
    return 1 - (tp * tn - fp * fn) / den


@pytest.mark.parametrize("pos_weight", [1.0, 4.0])
def test_matches_torch(rng, torch, pos_weight):
    z, y, m = batch(rng)
    F = torch.nn.functional
    for mask in (None, m):
        tm = torch.tensor(np.ones_like(y) if mask is None else mask)
        tz = torch.tensor(z, requires_grad=True)
        bce_t = F.binary_cross_entropy_with_logits(
            tz, torch.tensor(y), weight=tm, pos_weight=torch.tensor(pos_weight), reduction="sum") / tm.sum()
        mcc_t = _torch_mcc_loss(torch, tz, torch.tensor(y), tm)
        total_t = 0.5 * bce_t + 0.5 * mcc_t
        for ours, ref in [(bce_with_logits(z, y, mask, pos_weight), bce_t), (mcc_loss(z, y, mask), mcc_t),
                          (bce_mcc_loss(z, y, mask, pos_weight=pos_weight), total_t)]:
            tz.grad = None
            ref.backward(retain_graph=True)
            assert ours[0] == pytest.approx(ref.item(), rel=1e-12)
            np.testing.assert_allclose(ours[1], tz.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_matches_torch_float32(rng, torch):
    z, y, m = batch(rng, scale=5.0)
    z32 = z.astype(np.float32)
    tz = torch.tensor(z32, requires_grad=True)
    tm, ty = torch.tensor(m, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    ref = 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(tz, ty, weight=tm, reduction="sum") / tm.sum()
    ref = ref + 0.5 * _torch_mcc_loss(torch, tz, ty, tm)
    ref.backward()
    value, grad = bce_mcc_loss(z32, y, m)
    rel = np.linalg.norm(grad - tz.grad.numpy()) / np.linalg.norm(tz.grad.numpy())
    assert value == pytest.approx(ref.item(), rel=1e-5)
    assert rel < 1e-4
