"""Central-difference gradient checks: the proof that a backward pass is right.

For a layer y = f(x; theta) we pick a random upstream gradient g (random, not all
ones: an all-ones g cannot see a wrong normalisation that sums to zero) and the
scalar

    L(x, theta) = sum(f(x; theta) * g).

The analytic backward gives a = dL/dx = backward(g) and dL/dtheta in Parameter.grad.
Every tensor t (each input, each parameter) is then checked in two ways.

1. Directional derivatives: the test that cannot miss an entry.  For k random unit
   directions u = z / ||z||, z ~ N(0, I) of t's shape, the derivative of L along u is

       <a, u>  ~  (L(t + h u) - L(t - h u)) / (2 h).

   Each side needs only two forward passes, however large t is, and every entry
   of a takes part: an error e at entry i changes <a, u> by e u_i, and u_i is
   non-zero almost surely.  With d = a - (true gradient), E <d, u>^2 = ||d||^2 / n
   for a tensor of n entries, so over the k directions

       directional error = sqrt(n) rms_k(<a, u_k> - numeric_k) / ||a||

   (the denominator is max(||a||, sqrt(n) rms_k(numeric_k))) estimates, in mean
   square, the norm-wise relative error ||d|| / ||a|| over ALL entries.  One pixel
   of a 32x32 input gradient made 1.5x too large gives about 0.5 / sqrt(n) ~ 1e-2,
   four orders of magnitude above the bar.  The step has length h, like a one-entry
   step, so the activations move about as little (a longer step would cross ReLU
   kinks and max-pool near-ties, where the derivative jumps).

2. Sampled entries: the element-wise view.  On up to `max_entries` random entries i,

       a_i  ~  (L(t + h e_i) - L(t - h e_i)) / (2 h),

   and the error is the worst entry, |a_i - n_i| / max(|a_i|, |n_i|, rms(a)), where
   the tensor's RMS gradient rms(a) = ||a|| / sqrt(#entries) keeps an entry far
   smaller than typical from being judged by its own rounding noise.

Both errors must be at most `tolerance` (1e-6).  Why float64 and h = 1e-6: the
central difference has a truncation error O(h^2 |L'''|) and a rounding error
O(u |L| / h), u the unit roundoff.  In float64 (u = 1.1e-16) both are far below 1e-6
relative at h = 1e-6; in float32 (u = 6e-8) rounding alone is ~1e-1 there, so the
module and its inputs are cast to float64 first.

A gradient that is exactly zero cannot be checked by a ratio: its central difference
is pure rounding noise, about u |L| / h.  (A conv bias just before a BatchNorm in
training mode is such a case: the normalisation removes any per-channel constant.)
Where the analytic gradient and every difference are below the noise level
100 u max(|L|, 1) / h, the tensor is ZERO.  A zero tensor fails the check, with its
name in the report, unless the caller says it is expected (allow_zero=True or a set
of names); then it is listed in `report.zero` and passes.

References: CS231n, "Neural Networks Part 3: Gradient checks"
(https://cs231n.github.io/neural-networks-3/#gradcheck) for the central difference,
float64 and relative errors; PyTorch, "Gradcheck mechanics", fast mode
(https://pytorch.org/docs/stable/notes/gradcheck.html), which likewise compares
v^T J u computed both ways for random u, v instead of every Jacobian entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

import numpy as np

from numpyseg.layers.module import Module, no_grad

DEFAULT_EPS = 1e-6
DEFAULT_TOLERANCE = 1e-6
DEFAULT_DIRECTIONS = 4


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


def directional_derivatives(
    f: Callable[[], float], array: np.ndarray, directions: Sequence[np.ndarray], eps: float = DEFAULT_EPS
) -> np.ndarray:
    """Central differences (f(array + eps v) - f(array - eps v)) / (2 eps), one per direction v
    (the derivatives of f along the directions v, times their lengths).

    `array` is perturbed in place and restored exactly; f() must read it afresh each call.
    """
    original = array.copy()
    out = np.empty(len(directions))
    try:
        for k, v in enumerate(directions):
            np.add(original, eps * v, out=array)
            plus = f()
            np.subtract(original, eps * v, out=array)
            minus = f()
            out[k] = (plus - minus) / (2 * eps)
    finally:
        array[...] = original
    return out


def worst_entry_error(analytic: np.ndarray, numeric: np.ndarray, scale: float) -> float:
    """max_i |a_i - n_i| / max(|a_i|, |n_i|, scale); 0 when every denominator is 0."""
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numeric, dtype=np.float64).ravel()
    if a.size == 0:
        return 0.0
    denominator = np.maximum(np.maximum(np.abs(a), np.abs(n)), scale)
    diff = np.abs(a - n)
    ratio = np.divide(diff, denominator, out=np.zeros_like(diff), where=denominator > 0)
    return float(ratio.max())


@dataclass
class TensorCheck:
    """The two errors of one checked tensor (see the module docstring).

    Attributes:
        directional: relative error of the derivatives along `directions` random directions.
        elementwise: worst relative error over the `entries` sampled entries.
        zero: True when both gradients are below the rounding-noise level.
    """

    directional: float
    elementwise: float
    entries: int
    size: int
    directions: int
    zero: bool = False

    @property
    def error(self) -> float:
        return max(self.directional, self.elementwise)


@dataclass
class GradcheckReport:
    """Per checked tensor ('input0', 'input1', parameter names): its TensorCheck.

    `errors` maps each name to the larger of its two errors; `zero` lists the tensors
    accepted as zero (only when the check was asked to allow them); `unexpected_zero`
    lists zero tensors that were not allowed, each of which fails the check.  str()
    gives one line, table() one line per tensor with both errors.
    """

    tensors: dict[str, TensorCheck] = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE
    allow_zero: bool | Collection[str] = False

    def _zero_allowed(self, name: str) -> bool:
        if isinstance(self.allow_zero, bool):
            return self.allow_zero
        return name in self.allow_zero

    @property
    def errors(self) -> dict[str, float]:
        return {name: t.error for name, t in self.tensors.items()}

    @property
    def zero(self) -> list[str]:
        return [n for n, t in self.tensors.items() if t.zero and self._zero_allowed(n)]

    @property
    def unexpected_zero(self) -> list[str]:
        return [n for n, t in self.tensors.items() if t.zero and not self._zero_allowed(n)]

    @property
    def worst(self) -> float:
        return max(self.errors.values()) if self.tensors else 0.0

    @property
    def worst_name(self) -> str:
        errors = self.errors
        return max(errors, key=errors.get) if errors else ""

    @property
    def worst_directional(self) -> float:
        return max((t.directional for t in self.tensors.values()), default=0.0)

    @property
    def worst_elementwise(self) -> float:
        return max((t.elementwise for t in self.tensors.values()), default=0.0)

    @property
    def passed(self) -> bool:
        return self.worst <= self.tolerance and not self.unexpected_zero

    def table(self) -> str:
        """One line per tensor: both errors, entries sampled, and pass/FAIL/zero."""
        lines = [f"  {'tensor':<28}{'directional':>12}{'worst entry':>13}  {'sampled':>15}"]
        for name, t in self.tensors.items():
            if t.zero:
                status = "zero (allowed)" if self._zero_allowed(name) else "FAIL: zero gradient"
            else:
                status = "pass" if t.error <= self.tolerance else "FAIL"
            lines.append(f"  {name:<28}{t.directional:>12.1e}{t.elementwise:>13.1e}  "
                         f"{f'{t.entries}/{t.size}':>15}  {status}")
        return "\n".join(lines)

    def __str__(self) -> str:
        status = "pass" if self.passed else "FAIL"
        text = f"worst relative error {self.worst:.2e} ({self.worst_name}) {status}"
        if self.unexpected_zero:
            text += f"; zero gradient in {', '.join(self.unexpected_zero)} (allow_zero if expected)"
        elif self.zero:
            text += f"; zero (allowed): {', '.join(self.zero)}"
        return text


def _check_tensor(loss, array, analytic, rng, *, eps, max_entries, directions, noise) -> TensorCheck:
    """Both checks of one tensor: `array` is perturbed in place, `analytic` is dL/darray."""
    analytic = np.asarray(analytic, dtype=np.float64).reshape(array.shape)
    vs = [z / np.linalg.norm(z) for z in (rng.standard_normal(array.shape) for _ in range(directions))]
    numeric_dir = directional_derivatives(loss, array, vs, eps)
    analytic_dir = np.array([np.vdot(analytic, v) for v in vs])
    idx = pick_indices(array.size, max_entries, rng)
    numeric = numerical_gradient(loss, array, idx, eps)
    sampled = analytic.reshape(-1)[idx]

    norm = float(np.linalg.norm(analytic))
    if max(norm, np.abs(numeric_dir).max(initial=0.0), np.abs(numeric).max(initial=0.0)) < noise:
        return TensorCheck(0.0, 0.0, len(idx), array.size, directions, zero=True)
    root_n = np.sqrt(array.size)
    scale = max(norm, root_n * _rms(numeric_dir))
    directional = root_n * _rms(analytic_dir - numeric_dir) / scale if scale > 0 else 0.0
    elementwise = worst_entry_error(sampled, numeric, norm / root_n)
    return TensorCheck(directional, elementwise, len(idx), array.size, directions)


def _rms(values: np.ndarray) -> float:
    """Root mean square; 0 for no values."""
    return float(np.sqrt(np.mean(np.square(values)))) if len(values) else 0.0


def check_module(
    module: Module,
    inputs: Sequence[np.ndarray],
    *,
    eps: float = DEFAULT_EPS,
    seed: int = 0,
    max_entries: int | None = 64,
    directions: int = DEFAULT_DIRECTIONS,
    tolerance: float = DEFAULT_TOLERANCE,
    check_inputs: Sequence[bool] | None = None,
    allow_zero: bool | Collection[str] = False,
) -> GradcheckReport:
    """Check module.backward against central differences of sum(module(*inputs) * g).

    The module and inputs are cast to float64 first.  Every input and every parameter
    is checked along `directions` random directions (which cover every entry) and on
    a random sample of `max_entries` entries (None: every entry).  The perturbed
    forward passes run under no_grad() (they keep no caches).

    Args:
        module: the layer or model (its mode, e.g. train() with a frozen DropBlock
            mask, is left as the caller set it).
        inputs: the forward inputs (N, H, W, C) arrays.
        check_inputs: per input, whether to check its gradient (default: all).
        allow_zero: True, or the names of tensors ('input0', 'conv.bias'), whose
            gradient may be zero; any other zero tensor fails the check.

    Returns:
        A GradcheckReport with both errors of every checked tensor.

    Raises:
        ValueError: backward returned None for an input it is asked to check (a
            model built with input_grad=False).
    """
    rng = np.random.default_rng(seed)
    module.to(np.float64)
    xs = [np.array(x, dtype=np.float64) for x in inputs]

    def loss() -> float:
        with no_grad():
            return float(np.sum(module.forward(*xs) * g))

    with no_grad():
        g = rng.standard_normal(module.forward(*xs).shape)
    module.zero_grad()
    module.forward(*xs)
    dxs = module.backward(g)
    if not isinstance(dxs, tuple):
        dxs = (dxs,)
    noise = 100 * np.finfo(np.float64).eps * max(abs(loss()), 1.0) / eps
    options = dict(eps=eps, max_entries=max_entries, directions=directions, noise=noise)

    report = GradcheckReport(tolerance=tolerance, allow_zero=allow_zero)
    flags = check_inputs if check_inputs is not None else [True] * len(xs)
    for i, (x, dx, flag) in enumerate(zip(xs, dxs, flags)):
        if not flag:
            continue
        if dx is None:
            raise ValueError(
                f"{type(module).__name__}.backward returned no gradient for input {i}: build the "
                "model with input_grad=True, or pass check_inputs=[False] to skip it"
            )
        report.tensors[f"input{i}"] = _check_tensor(loss, x, dx, rng, **options)
    for name, p in module.named_parameters():
        report.tensors[name] = _check_tensor(loss, p.data, p.grad.copy(), rng, **options)
    return report


def check_function(
    f: Callable[..., float],
    grads: Sequence[np.ndarray],
    inputs: Sequence[np.ndarray],
    *,
    eps: float = DEFAULT_EPS,
    seed: int = 0,
    max_entries: int | None = 256,
    directions: int = DEFAULT_DIRECTIONS,
    tolerance: float = DEFAULT_TOLERANCE,
    allow_zero: bool | Collection[str] = False,
) -> GradcheckReport:
    """Check given gradients of a scalar function f(*inputs) (e.g. a loss), as check_module does.

    Args:
        f: scalar function of the float64 arrays in `inputs`.
        grads: the analytic gradients, one per input (None to skip an input).
        inputs: float64 arrays; they are perturbed in place and restored.
        allow_zero: as for check_module.
    """
    rng = np.random.default_rng(seed)

    def loss() -> float:
        return float(f(*inputs))

    noise = 100 * np.finfo(np.float64).eps * max(abs(loss()), 1.0) / eps
    report = GradcheckReport(tolerance=tolerance, allow_zero=allow_zero)
    for i, (x, dx) in enumerate(zip(inputs, grads)):
        if dx is None:
            continue
        report.tensors[f"input{i}"] = _check_tensor(loss, x, dx, rng, eps=eps, max_entries=max_entries,
                                                    directions=directions, noise=noise)
    return report
