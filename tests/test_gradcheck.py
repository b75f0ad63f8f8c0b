"""The gradient check itself: it passes every correct layer and fails a planted one-entry error.

Each layer of numpyseg.devtools.gradcheck_suite is checked as the suite builds it; the test swaps the
suite's check_module / check_function for a version that first wraps the layer's backward so
that ONE entry of one gradient (an input's dx or a parameter's dw) is wrong.  The directional
test must catch every such error on its own, whether or not the sampled entries include it.
"""

from __future__ import annotations

import numpy as np
import pytest

import numpyseg.devtools.gradcheck_suite as suite
from numpyseg.devtools.gradcheck import (
    DEFAULT_TOLERANCE,
    check_function,
    check_module,
    directional_derivatives,
    numerical_gradient,
    worst_entry_error,
)
from numpyseg.layers import Conv2d, Module, Parameter

LAYERS = dict(suite.LAYER_CHECKS)


def _plant(array: np.ndarray, kind: str, rng: np.random.Generator) -> None:
    """Make one entry of `array` wrong, in place.

    'scale': an entry at least half the RMS in size becomes 1.5x too large;
    'offset': a random entry (possibly one whose gradient is 0) gains 1e-3 RMS.
    """
    flat = array.reshape(-1)
    rms = np.sqrt(np.mean(flat ** 2))
    assert rms > 0
    if kind == "scale":
        i = rng.choice(np.flatnonzero(np.abs(flat) >= 0.5 * rms))
        flat[i] *= 1.5
    else:
        flat[rng.integers(flat.size)] += 1e-3 * rms


def _planting_checks(monkeypatch, target: str, kind: str, seed: int = 0):
    """Swap the suite's checkers for ones that plant an error in `target` ('input1', 'weight')."""
    rng = np.random.default_rng(seed)

    def planted_check_module(module, inputs, **options):
        original = module.backward

        def backward(dout):
            before = {name: p.grad.copy() for name, p in module.named_parameters()}
            dxs = original(dout)
            single = not isinstance(dxs, tuple)
            dxs = [None if d is None else d.copy() for d in ((dxs,) if single else dxs)]
            if target.startswith("input"):
                _plant(dxs[int(target[5:])], kind, rng)
            else:
                p = dict(module.named_parameters())[target]
                contribution = p.grad - before[target]  # this backward's dw alone
                _plant(contribution, kind, rng)
                p.grad[...] = before[target] + contribution
            return dxs[0] if single else tuple(dxs)

        module.backward = backward  # the instance attribute shadows the class's method
        return check_module(module, inputs, **options)

    def planted_check_function(f, grads, inputs, **options):
        grads = [np.array(g, dtype=np.float64) for g in grads]
        _plant(grads[int(target[5:])], kind, rng)
        return check_function(f, grads, inputs, **options)

    monkeypatch.setattr(suite, "check_module", planted_check_module)
    monkeypatch.setattr(suite, "check_function", planted_check_function)


@pytest.mark.parametrize("name", LAYERS)
def test_every_suite_layer_passes_and_every_planted_error_fails(monkeypatch, name):
    report = LAYERS[name](0)
    assert report.passed, f"{name}: {report}\n{report.table()}"
    assert report.zero == [] and report.unexpected_zero == []
    assert all(t.directions >= 1 for t in report.tensors.values())
    # every input, and every parameter where the layer has some
    targets = list(report.tensors)
    assert "input0" in targets
    for target in targets:
        for kind in ("scale", "offset"):
            with monkeypatch.context() as m:
                _planting_checks(m, target, kind)
                planted = LAYERS[name](0)
            assert not planted.passed, f"{name}: {kind} error in {target} passed: {planted}"
            # the directional test alone catches it, sampled or not
            assert planted.tensors[target].directional > DEFAULT_TOLERANCE, (name, target, kind)
            # and only the planted tensor is wrong
            for other, check in planted.tensors.items():
                if other != target:
                    assert check.error <= DEFAULT_TOLERANCE, (name, target, other)


def test_one_pixel_of_a_32x32_conv_input_gradient_cannot_hide():
    # The case a sampled check passed (error 1.2e-8): dx 1.5x too large at one pixel.
    class OnePixelWrong(Conv2d):
        def backward(self, dout):
            dx = super().backward(dout).copy()
            dx[1, 17, 5, :] *= 1.5
            return dx

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 32, 32, 3))
    right = check_module(Conv2d(3, 4, 3, rng=1), [x])
    assert right.passed, right
    report = check_module(OnePixelWrong(3, 4, 3, rng=1), [x])
    assert not report.passed and report.worst_name == "input0"
    assert report.tensors["input0"].directional > 100 * DEFAULT_TOLERANCE
    assert report.tensors["input0"].entries == 64  # only 64 of 6144 entries were sampled


class _WithUnused(Module):
    """y = x * a; `unused` takes no part in the output, so its gradient is truly zero."""

    def __init__(self, unused_grad=0.0):
        super().__init__()
        self.a = Parameter(np.array([0.7, -1.3]))
        self.unused = Parameter(np.ones(2))
        self.unused_grad = unused_grad

    def forward(self, x):
        self._keep(x)
        return x * self.a.data

    def backward(self, dout):
        x = self._take_cache()
        self.a.grad += np.sum(dout * x, axis=(0, 1, 2))
        self.unused.grad += self.unused_grad
        return dout * self.a.data


def test_a_zero_gradient_is_reported_and_fails_unless_allowed():
    x = np.random.default_rng(1).standard_normal((2, 3, 3, 2))
    report = check_module(_WithUnused(), [x])
    assert not report.passed
    assert report.unexpected_zero == ["unused"] and report.zero == []
    assert "zero gradient in unused" in str(report) and "FAIL: zero gradient" in report.table()
    for allow in (True, {"unused"}):
        allowed = check_module(_WithUnused(), [x], allow_zero=allow)
        assert allowed.passed and allowed.zero == ["unused"] and allowed.unexpected_zero == []
        assert "zero (allowed): unused" in str(allowed)
    # a non-zero backward for a tensor whose true gradient is zero still fails
    wrong = check_module(_WithUnused(unused_grad=1e-3), [x], allow_zero=True)
    assert not wrong.passed and wrong.worst_name == "unused" and wrong.zero == []


def test_directional_derivative_is_exact_for_a_quadratic_and_restores_the_array():
    rng = np.random.default_rng(2)
    c = rng.standard_normal((3, 4))
    x = rng.standard_normal((3, 4))
    x0 = x.copy()
    vs = [rng.standard_normal(x.shape) for _ in range(3)]
    got = directional_derivatives(lambda: float(np.sum(c * x * x)), x, vs, eps=1e-3)
    # the central difference of a quadratic has no truncation error
    np.testing.assert_allclose(got, [np.vdot(2 * c * x0, v) for v in vs], rtol=1e-9)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_allclose(numerical_gradient(lambda: float(np.sum(c * x * x)), x, np.arange(12), 1e-3),
                               (2 * c * x0).ravel(), rtol=1e-9)


def test_worst_entry_error_judges_tiny_entries_against_the_tensor_scale():
    a = np.array([1.0, -2.0, 1e-12])
    # 1e-12 vs 2e-12 is a 50% error of a noise-sized entry: judged against scale 1 it is 1e-12
    assert worst_entry_error(a, [1.0, -2.0, 2e-12], scale=1.0) == pytest.approx(1e-12)
    assert worst_entry_error(a, [1.0, -2.2, 1e-12], scale=1.0) == pytest.approx(0.2 / 2.2)
    assert worst_entry_error([0.0, 0.0], [0.0, 0.0], scale=0.0) == 0.0


def test_report_lists_both_errors_per_tensor():
    rng = np.random.default_rng(3)
    report = check_module(Conv2d(2, 3, 3, rng=4), [rng.standard_normal((1, 5, 5, 2))], max_entries=10)
    assert set(report.tensors) == {"input0", "weight", "bias"}
    weight = report.tensors["weight"]
    assert (weight.entries, weight.size) == (10, 54)
    assert report.errors["weight"] == max(weight.directional, weight.elementwise)
    lines = report.table().splitlines()
    assert "directional" in lines[0] and "worst entry" in lines[0] and len(lines) == 4
    assert lines[2].split()[0] == "weight" and lines[2].split()[3] == "10/54"
