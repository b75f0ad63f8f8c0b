"""Central-difference gradient checks: the proof that a backward pass is right.

For a layer y = f(x; theta) we pick a random upstream gradient g (random, not all
ones: an all-ones g cannot see a wrong normalisation that sums to zero) and the
scalar

    L(x, theta) = sum(f(x; theta) * g).

The analytic backward gives dL/dx = backward(g) and dL/dtheta in Parameter.grad.
The numerical estimate perturbs one entry at a time:

    dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps),

whose error is O(eps^2) from truncation plus O(u |L| / eps) from rounding
(u = 1.1e-16 in float64).  With eps = 1e-6 both are far below 1e-6 relative, while
in float32 (u = 6e-8) rounding alone would swamp the test: checks run in float64.

The error reported for one tensor is the norm-wise relative error over the
entries checked,

    err = ||a - n|| / max(||a||, ||n||, tiny),

which is small only if the two gradients agree in direction and size.
A gradient that is exactly zero cannot be checked by a ratio: its central difference
is pure rounding noise, about u |L| / eps, and the ratio is ~1.  A conv bias just
before a BatchNorm in training mode is such a case (the normalisation removes any
per-channel constant, so dL/db = 0 exactly).  Where BOTH gradients are below the
noise level 100 u max(|L|, 1) / eps, the tensor is reported as zero (error 0) and
listed in `report.zero`; a backward that returns a non-zero gradient there still fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from numpyseg.layers.module import Module

DEFAULT_EPS = 1e-6
DEFAULT_TOLERANCE = 1e-6


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """||a - n|| / max(||a||, ||n||); 0 when both are exactly zero."""
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numeric, dtype=np.float64).ravel()
    scale = max(np.linalg.norm(a), np.linalg.norm(n))
    if scale == 0.0:
        return 0.0
    return float(np.linalg.norm(a - n) / scale)


def pick_indices(size: int, max_entries: int | None, rng: np.random.Generator) -> np.ndarray:
    """All flat indices of a tensor, or a random sample of `max_entries` of them."""
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_entries, replace=False))


def numerical_gradient(
    f: Callable[[], float], array: np.ndarray, indices: np.ndarray, eps: float = DEFAULT_EPS
) -> np.ndarray:
    """Central differences of the scalar f() with respect to array.flat[indices].

    `array` is perturbed in place and restored; f() must read it afresh each call.
    """
    flat = array.reshape(-1)  # a view: writes reach `array`
    grads = np.empty(len(indices))
    for k, i in enumerate(indices):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        grads[k] = (plus - minus) / (2 * eps)
    return grads


@dataclass
class GradcheckReport:
    """Relative error per checked tensor ('input0', 'input1', parameter names)."""

    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE
    zero: list[str] = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0

    @property
    def worst_name(self) -> str:
        return max(self.errors, key=self.errors.get) if self.errors else ""

    @property
    def passed(self) -> bool:
        return self.worst <= self.tolerance

    def __str__(self) -> str:
        status = "pass" if self.passed else "FAIL"
        return f"worst relative error {self.worst:.2e} ({self.worst_name}) {status}"


def check_module(
    module: Module,
    inputs: Sequence[np.ndarray],
    *,
    eps: float = DEFAULT_EPS,
    seed: int = 0,
    max_entries: int | None = 64,
    tolerance: float = DEFAULT_TOLERANCE,
    check_inputs: Sequence[bool] | None = None,
) -> GradcheckReport:
    """Check module.backward against central differences of sum(module(*inputs) * g).

    The module and inputs are cast to float64 first.  Every input and every
    parameter is checked; tensors with more than `max_entries` entries are
    checked on a random sample of that many (None: every entry).

    Args:
        module: the layer or model (its mode, e.g. train() with a frozen DropBlock
            mask, is left as the caller set it).
        inputs: the forward inputs (N, H, W, C) arrays.
        check_inputs: per input, whether to check its gradient (default: all).  A
            module whose backward returns None for an input it is asked to check
            (a model built with input_grad=False) is an error.

    Returns:
        A GradcheckReport with the relative error of every checked tensor.
    """
    rng = np.random.default_rng(seed)
    module.to(np.float64)
    xs = [np.array(x, dtype=np.float64) for x in inputs]
    out = module.forward(*xs)
    g = rng.standard_normal(out.shape)

    module.zero_grad()
    module.forward(*xs)
    dxs = module.backward(g)
    if not isinstance(dxs, tuple):
        dxs = (dxs,)

    def loss() -> float:
        return float(np.sum(module.forward(*xs) * g))

    report = GradcheckReport(tolerance=tolerance)
    noise = 100 * np.finfo(np.float64).eps * max(abs(loss()), 1.0) / eps

    def record(name, analytic, numeric):
        if max(np.linalg.norm(analytic), np.linalg.norm(numeric)) < noise:
            report.zero.append(name)
            report.errors[name] = 0.0
        else:
            report.errors[name] = relative_error(analytic, numeric)

    flags = check_inputs if check_inputs is not None else [True] * len(xs)
    for i, (x, dx, flag) in enumerate(zip(xs, dxs, flags)):
        if not flag:
            continue
        if dx is None:
            raise ValueError(
                f"{type(module).__name__}.backward returned no gradient for input {i}: build the "
                "model with input_grad=True, or pass check_inputs=[False] to skip it"
            )
        idx = pick_indices(x.size, max_entries, rng)
        numeric = numerical_gradient(loss, x, idx, eps)
        record(f"input{i}", dx.reshape(-1)[idx], numeric)
    for name, p in module.named_parameters():
        idx = pick_indices(p.size, max_entries, rng)
        analytic = p.grad.reshape(-1)[idx].copy()
        numeric = numerical_gradient(loss, p.data, idx, eps)
        record(name, analytic, numeric)
    return report


def check_function(
    f: Callable[..., float],
    grads: Sequence[np.ndarray],
    inputs: Sequence[np.ndarray],
    *,
    eps: float = DEFAULT_EPS,
    seed: int = 0,
    max_entries: int | None = 256,
    tolerance: float = DEFAULT_TOLERANCE,
) -> GradcheckReport:
    """Check given gradients of a scalar function f(*inputs) (e.g. a loss).

    Args:
        f: scalar function of the float64 arrays in `inputs`.
        grads: the analytic gradients, one per input (None to skip an input).
        inputs: float64 arrays; they are perturbed in place and restored.
    """
    rng = np.random.default_rng(seed)
    report = GradcheckReport(tolerance=tolerance)
    for i, (x, dx) in enumerate(zip(inputs, grads)):
        if dx is None:
            continue
        idx = pick_indices(x.size, max_entries, rng)
        numeric = numerical_gradient(lambda: float(f(*inputs)), x, idx, eps)
        report.errors[f"input{i}"] = relative_error(np.asarray(dx).reshape(-1)[idx], numeric)
    return report
