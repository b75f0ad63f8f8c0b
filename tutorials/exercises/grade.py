"""Grade a file of exercise answers (a copy of tutorials/exercises/exercises.py).

    python tutorials/exercises/grade.py my_exercises.py            # every exercise
    python tutorials/exercises/grade.py my_exercises.py col2im     # only some

For every function the file implements, on small random float64 inputs:

1. the comparison with numpyseg's answer (solutions.py, which calls the library): same
   shape, every entry within a relative 1e-6 (plus 1e-9 of the largest entry);
2. a gradient check: the function's gradients against central differences of the
   library's forward pass, along a random direction (directional) and entry by entry
   at a few random places (sampled).  For a forward exercise the roles swap: the
   differences of *your* forward pass are checked against the library's gradient.

A failure is explained in words: which output, how many entries differ, the first of
them, and, where it recognises one, the likely mistake (a flipped kernel, a one-pixel
shift, a missing sum over the batch, a factor of 2, a wrong sign, ...).  A function
that still raises NotImplementedError is "not attempted".  Exit status: 1 if an
attempted exercise fails, else 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import numpyseg
import numpyseg.layers as _layers
import numpyseg.layers.conv as _conv
import numpyseg.layers.dropblock as _dropblock
import numpyseg.losses.mcc as _mcc
import numpyseg.optim as _optim

# Every numpyseg name the grader and the solution key use, in one place.
LIBRARY = {
    "Conv2d": _layers.Conv2d,
    "ConvTranspose2d": _layers.ConvTranspose2d,
    "MaxPool2d": _layers.MaxPool2d,
    "GroupNorm": _layers.GroupNorm,
    "CrossScaleSpatialAttention": _layers.CrossScaleSpatialAttention,
    "Parameter": _layers.Parameter,
    "Adam": _optim.Adam,
    "im2col": _conv.im2col,  # (N, H, W, C), k -> (N, H, W, k, k, C)
    "col2im": _conv.col2im,  # its adjoint
    "dropblock_gamma": _dropblock.dropblock_gamma,  # (rate, H, W, block_h, block_w) -> float
    "mcc_loss": _mcc.mcc_loss,  # (logits, target) -> (loss, dL/dlogits)
}

HERE = Path(__file__).resolve().parent
RTOL, ATOL = 1e-6, 1e-9  # atol is relative to the largest entry of the expected array
STEP = 1e-6  # central-difference step of the gradient checks (float64)
GRAD_TOL = 1e-5  # relative error a gradient check accepts
NOT_ATTEMPTED = "not attempted"


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def solution_key():
    """tutorials/exercises/solutions.py: every exercise answered by numpyseg."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return _load(HERE / "solutions.py", "exercise_solutions")


# ------------------------------------------------------------ explaining a difference
def _fmt(value) -> str:
    return f"{value:.4g}"


def _close(got, expected) -> bool:
    return got.shape == expected.shape and np.allclose(
        got, expected, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(expected).max(initial=0))))


def _constant_factor(got, expected):
    """c if got == c * expected for one constant c != 1, else None."""
    norm = float(np.sum(expected * expected))
    if norm == 0:
        return None
    c = float(np.sum(got * expected)) / norm
    if abs(c - 1) > 1e-6 and _close(got, c * expected):
        return c
    return None


def _factor_hint(c: float, batch: int | None) -> str:
    near = lambda a, b: abs(a - b) <= 1e-6 * max(abs(a), abs(b))  # noqa: E731
    if near(c, -1):
        return "every entry has the wrong sign: is a minus sign missing or extra?"
    if near(c, 0.5):
        return "a factor 0.5: is a term counted once instead of twice?"
    if near(c, 2):
        return "a factor 2: is a term counted twice instead of once?"
    if batch and batch > 1 and near(c, 1 / batch):
        return f"a factor 1/{batch} (the batch size): a mean over the batch where a sum belongs?"
    if batch and batch > 1 and near(c, batch):
        return f"a factor {batch} (the batch size): a sum over the batch where a mean belongs?"
    return f"every entry is off by the same factor {_fmt(c)}: a missing or extra constant?"


def _shift_hint(got, expected) -> str | None:
    """A one-pixel shift along H or W of an (N, H, W, C) array."""
    if got.ndim != 4 or got.shape != expected.shape:
        return None
    for axis, name in ((1, "H"), (2, "W")):
        n = got.shape[axis]
        for shift in (1, -1):
            a = np.take(got, range(max(0, shift), n + min(0, shift)), axis=axis)
            b = np.take(expected, range(max(0, -shift), n + min(0, -shift)), axis=axis)
            if np.abs(b).max(initial=0) > 0 and _close(a, b):
                return (f"your output is the expected one shifted by one pixel along {name}: an off-by-one "
                        "in the padding or in the alignment of the output?")
    return None


def _flip_hint(got, expected) -> str | None:
    """Flipped in space: (k, k, ...) kernels or (N, H, W, C) maps."""
    if got.shape != expected.shape or got.ndim < 2:
        return None
    flipped = expected[:, ::-1, ::-1] if got.ndim == 4 and got.shape[1] > 1 else expected[::-1, ::-1]
    if not _close(got, expected) and _close(got, flipped):
        return "your array is the expected one flipped in space: a kernel flipped where it should not be (or not flipped where it should)?"
    return None


def _border_hint(got, expected, bad) -> str | None:
    if got.ndim != 4 or min(got.shape[1:3]) < 3:
        return None
    _, h, w, _ = got.shape
    idx = np.argwhere(bad)
    on_border = (idx[:, 1] == 0) | (idx[:, 1] == h - 1) | (idx[:, 2] == 0) | (idx[:, 2] == w - 1)
    if on_border.all():
        return ("only entries at the image border differ: check the zero padding and the ranges of "
                "your loops near the edges")
    return None


def explain(exercise: str, output: str, got, expected, *, batch: int | None = None,
            hypotheses: tuple = ()) -> str | None:
    """None if `got` matches `expected`, else one or two sentences saying how it differs.

    hypotheses: (description, array) pairs, typical wrong answers; a match names the mistake.
    """
    where = f"{exercise}: {output}"
    if got is None:
        return f"{where} is None; return an array of shape {expected.shape}"
    got = np.asarray(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        hint = ""
        if got.shape == expected.shape[::-1]:
            hint = " (the axes reversed: a transpose too many or too few?)"
        elif got.size == expected.size:
            hint = " (the same number of entries: reshaped in another order?)"
        elif batch and got.shape == expected.shape[1:]:
            hint = " (the batch axis is missing)"
        return f"{where} has shape {got.shape}, expected {expected.shape}{hint}"
    if not np.all(np.isfinite(got)):
        return f"{where} contains {np.count_nonzero(~np.isfinite(got))} nan/inf entries"
    if _close(got, expected):
        return None
    scale = ATOL * max(1.0, float(np.abs(expected).max(initial=0)))
    bad = ~np.isclose(got, expected, rtol=RTOL, atol=scale)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    text = (f"{where}: {np.count_nonzero(bad)} of {bad.size} entries differ, first at {first}: "
            f"got {_fmt(got[first])}, expected {_fmt(expected[first])}")
    for description, wrong in hypotheses:
        wrong = np.asarray(wrong)
        if wrong.shape == got.shape and _close(got, wrong):
            return f"{text} — {description}"
    c = _constant_factor(got, expected)
    hint = (_factor_hint(c, batch) if c is not None else None) or _flip_hint(got, expected) \
        or _shift_hint(got, expected) or _border_hint(got, expected, bad)
    if hint is None and batch and got.ndim == 4 and got.shape[0] > 1 \
            and _close(got[:1], expected[:1]) and not _close(got[1:], expected[1:]):
        hint = "only the first sample is right: do you loop over the whole batch?"
    return f"{text} — {hint}" if hint else text


# ------------------------------------------------------------------ gradient checks
def gradient_check(exercise: str, f, inputs: dict, grads: dict, rng, samples: int = 6) -> list[str]:
    """Check grads[name] = d f / d inputs[name] by central differences, for every name in grads.

    f(**inputs) -> float.  Directional: along a random unit direction u,
    (f(x + h u) - f(x - h u)) / 2h against sum(grad * u); sampled: the same for
    `samples` single entries.  Returns one sentence per failure.
    """
    failures = []
    for name, grad in grads.items():
        x = inputs[name]

        def at(value, name=name):
            return float(f(**{**inputs, name: value}))

        u = rng.standard_normal(x.shape)
        u /= np.linalg.norm(u)
        numeric = (at(x + STEP * u) - at(x - STEP * u)) / (2 * STEP)
        analytic = float(np.sum(grad * u))
        scale = max(abs(numeric), abs(analytic), 1e-8)
        if abs(numeric - analytic) > GRAD_TOL * scale + 1e-7:
            failures.append(f"{exercise}: gradient check of {name} fails along a random direction: "
                            f"the differences give {_fmt(numeric)}, the gradient {_fmt(analytic)}")
            continue
        flat = rng.choice(x.size, size=min(samples, x.size), replace=False)
        for i in flat:
            index = np.unravel_index(i, x.shape)
            e = np.zeros_like(x)
            e[index] = STEP
            numeric = (at(x + e) - at(x - e)) / (2 * STEP)
            if abs(numeric - grad[index]) > GRAD_TOL * max(abs(numeric), abs(grad[index])) + 1e-7:
                failures.append(f"{exercise}: gradient check of {name} fails at entry "
                                f"{tuple(int(j) for j in index)}: the differences give {_fmt(numeric)}, "
                                f"the gradient {_fmt(grad[index])}")
                break
    return failures


# ------------------------------------------------------------------ the exercises
def _no_ties(rng, shape):
    """Random values, all distinct and at least 0.01 apart (max pooling needs no ties)."""
    values = rng.permutation(np.prod(shape)).astype(np.float64) * 0.01
    return values.reshape(shape) - values.mean()


def _as_tuple(result, n, exercise):
    if not isinstance(result, (tuple, list)) or len(result) != n:
        raise TypeError(f"{exercise} must return a tuple of {n} arrays")
    return result


def grade_conv2d_forward(student, key, rng):
    x, w, b = rng.standard_normal((2, 5, 6, 3)), rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    expected = key.conv2d_forward(x, w, b)
    got = student(x, w, b)
    hyps = (("you flipped the kernel: numpyseg's convolution is a cross-correlation, "
             "out[i, j] uses w[di, dj] at x[i + di - p, j + dj - p]", key.conv2d_forward(x, w[::-1, ::-1], b)),
            ("the bias b is not added", key.conv2d_forward(x, w, 0 * b)))
    report = [explain("conv2d_forward", "out", got, expected, batch=2, hypotheses=hyps)]
    if report[0] is None:
        dout = rng.standard_normal(expected.shape)
        dx, dw, db = key.conv2d_backward(dout, x, w)
        report += gradient_check("conv2d_forward", lambda x, w, b: np.sum(student(x, w, b) * dout),
                                 {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db}, rng)
    return report


def grade_conv2d_backward(student, key, rng):
    x, w, b = rng.standard_normal((2, 5, 6, 3)), rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    dout = rng.standard_normal((2, 5, 6, 4))
    dx, dw, db = _as_tuple(student(dout, x, w), 3, "conv2d_backward")
    ex, ew, eb = key.conv2d_backward(dout, x, w)
    first = key.conv2d_backward(dout[:1], x[:1], w)
    report = [
        explain("conv2d_backward", "dx", dx, ex, batch=2, hypotheses=(
            ("dx is a convolution of dout with the kernel flipped in space, w[::-1, ::-1] with its "
             "channel axes swapped; you did not flip it",
             key.conv2d_forward(dout, w.transpose(0, 1, 3, 2), np.zeros(3))),)),
        explain("conv2d_backward", "dw", dw, ew, batch=2, hypotheses=(
            ("dw is the gradient of the first sample only: a missing sum over the batch", first[1]),)),
        explain("conv2d_backward", "db", db, eb, batch=2, hypotheses=(
            ("db is the gradient of the first sample only: a missing sum over the batch", first[2]),)),
    ]
    if not any(report):
        report += gradient_check("conv2d_backward",
                                 lambda x, w, b: np.sum(key.conv2d_forward(x, w, b) * dout),
                                 {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db}, rng)
    return report


def _col2im_overwriting(cols, k):
    n, h, w, _, _, c = cols.shape
    p = k // 2
    xp = np.zeros((n, h + 2 * p, w + 2 * p, c))
    for di in range(k):
        for dj in range(k):
            xp[:, di:di + h, dj:dj + w, :] = cols[:, :, :, di, dj, :]
    return xp[:, p:p + h, p:p + w, :]


def grade_col2im(student, key, rng):
    cols = rng.standard_normal((2, 4, 5, 3, 3, 2))
    expected = key.col2im(cols, 3)
    got = student(cols, 3)
    report = [explain("col2im", "the result", got, expected, batch=2, hypotheses=(
        ("overlapping patches overwrite each other: col2im must ADD every patch's entries "
         "into the image", _col2im_overwriting(cols, 3)),))]
    if report[0] is None:
        # adjoint test = the gradient check of a linear map: d sum(col2im(cols) * x) / d cols = im2col(x)
        x = rng.standard_normal(expected.shape)
        report += gradient_check("col2im", lambda cols: np.sum(student(cols, 3) * x), {"cols": cols},
                                 {"cols": LIBRARY["im2col"](x, 3)}, rng)
    return report


def grade_maxpool2d_backward(student, key, rng):
    x = _no_ties(rng, (2, 4, 6, 3))
    dout = rng.standard_normal((2, 2, 3, 3))
    got = student(dout, x)
    expected = key.maxpool2d_backward(dout, x)
    spread = np.repeat(np.repeat(dout, 2, axis=1), 2, axis=2)
    report = [explain("maxpool2d_backward", "dx", got, expected, batch=2, hypotheses=(
        ("the gradient goes to all four entries of each window; only the window's maximum "
         "reached the output, so only it gets the gradient", spread),
        ("that is the gradient of average pooling (dout / 4 everywhere); max pooling sends dout "
         "to the maximum only", spread / 4)))]
    if report[0] is None:
        pool = LIBRARY["MaxPool2d"]()
        report += gradient_check("maxpool2d_backward", lambda x: np.sum(pool(x) * dout), {"x": x},
                                 {"x": np.asarray(got)}, rng)
    return report


def _transposed_full(x, w):
    """The whole (2H + 1)-pixel transposed convolution, nothing cropped."""
    n, h, wd, _ = x.shape
    out = np.zeros((n, 2 * h + 1, 2 * wd + 1, w.shape[2]))
    for i in range(h):
        for j in range(wd):
            for di in range(3):
                for dj in range(3):
                    out[:, 2 * i + di, 2 * j + dj] += x[:, i, j] @ w[di, dj].T
    return out


def grade_conv_transpose2d_forward(student, key, rng):
    x, w, b = rng.standard_normal((2, 3, 4, 3)), rng.standard_normal((3, 3, 2, 3)), rng.standard_normal(2)
    expected = key.conv_transpose2d_forward(x, w, b)
    got = student(x, w, b)
    full = _transposed_full(x, w) + b
    hyps = (("your output is shifted by one pixel: that is PyTorch's padding=1, output_padding=1 "
             "alignment; Keras 'same' keeps the first 2H pixels of the full output", full[:, 1:, 1:]),
            ("you flipped the kernel", key.conv_transpose2d_forward(x, w[::-1, ::-1], b)),
            ("the bias b is not added", key.conv_transpose2d_forward(x, w, 0 * b)))
    report = [explain("conv_transpose2d_forward", "out", got, expected, batch=2, hypotheses=hyps)]
    if report[0] is None:
        dout = rng.standard_normal(expected.shape)
        layer = key.conv_transpose_layer(w, b)
        layer(x)
        dx = layer.backward(dout)
        report += gradient_check("conv_transpose2d_forward", lambda x, w, b: np.sum(student(x, w, b) * dout),
                                 {"x": x, "w": w, "b": b},
                                 {"x": dx, "w": layer.weight.grad, "b": layer.bias.grad}, rng)
    return report


def grade_groupnorm_backward(student, key, rng):
    groups, eps = 2, 1e-3
    x, gamma = rng.standard_normal((2, 3, 4, 6)), rng.standard_normal(6)
    dout = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = _as_tuple(student(dout, x, gamma, groups, eps), 3, "groupnorm_backward")
    ex, eg, eb = key.groupnorm_backward(dout, x, gamma, groups, eps)
    xg = x.reshape(2, 3, 4, groups, 3)
    sigma = np.sqrt(xg.var(axis=(1, 2, 4), keepdims=True) + eps)
    xhat = (xg - xg.mean(axis=(1, 2, 4), keepdims=True)) / sigma
    g = (dout * gamma).reshape(xhat.shape)
    no_var_term = ((g - g.mean(axis=(1, 2, 4), keepdims=True)) / sigma).reshape(x.shape)
    report = [
        explain("groupnorm_backward", "dx", dx, ex, batch=2, hypotheses=(
            ("the term - xhat * mean(g * xhat) is missing: sigma depends on x too", no_var_term),
            ("dx = dout * gamma / sigma treats mu and sigma as constants; they depend on every x of the group",
             (g / sigma).reshape(x.shape)))),
        explain("groupnorm_backward", "dgamma", dgamma, eg, batch=2, hypotheses=(
            ("dgamma is sum(dout): it must be sum(dout * xhat)", dout.sum(axis=(0, 1, 2))),)),
        explain("groupnorm_backward", "dbeta", dbeta, eb, batch=2),
    ]
    if not any(report):
        beta = rng.standard_normal(6)
        report += gradient_check(
            "groupnorm_backward",
            lambda x, gamma, beta: np.sum(key.groupnorm_forward(x, gamma, beta, groups, eps) * dout),
            {"x": x, "gamma": gamma, "beta": beta}, {"x": dx, "gamma": dgamma, "beta": dbeta}, rng)
    return report


def grade_dropblock_gamma(student, key, rng):
    report = []
    for rate, h, w, b in ((0.15, 8, 8, 7), (0.1, 20, 12, 5), (0.15, 74, 74, 7)):
        got, expected = student(rate, h, w, b), key.dropblock_gamma(rate, h, w, b)
        if got is None or not np.isclose(got, expected, rtol=RTOL, atol=0):
            hint = ""
            if got is not None and np.isclose(got, rate / (b * b)):
                hint = (" — that is rate / b^2 without the factor (H W) / ((H - b + 1)(W - b + 1)): seeds "
                        "fall only where a whole block fits")
            report.append(f"dropblock_gamma(rate={rate}, H={h}, W={w}, b={b}): got {got}, "
                          f"expected {_fmt(expected)}{hint}")
            break
    return report


def grade_cross_scale_attention_backward(student, key, rng):
    enc, dec = rng.standard_normal((2, 5, 6, 4)), rng.standard_normal((2, 5, 6, 3))
    w, dout = 0.5 * rng.standard_normal((3, 3, 2, 1)), rng.standard_normal((2, 5, 6, 4))
    d_enc, d_dec, dw = _as_tuple(student(dout, enc, dec, w), 3, "cross_scale_attention_backward")
    e_enc, e_dec, e_w = key.cross_scale_attention_backward(dout, enc, dec, w)
    s = key.cross_scale_attention_forward(enc, dec, w) / enc  # the gate, broadcast over channels
    report = [
        explain("cross_scale_attention_backward", "d_enc", d_enc, e_enc, batch=2, hypotheses=(
            ("d_enc holds only the direct path dout * s: the path through the gate "
             "(da[..., 0:1] / C_e) is missing", dout * s),)),
        explain("cross_scale_attention_backward", "d_dec", d_dec, e_dec, batch=2, hypotheses=(
            ("d_dec is not divided by C_d: mean_c(dec) has weight 1/C_d for each channel", e_dec * 3),)),
        explain("cross_scale_attention_backward", "dw", dw, e_w, batch=2, hypotheses=(
            ("dw is the gradient of the first sample only: a missing sum over the batch",
             key.cross_scale_attention_backward(dout[:1], enc[:1], dec[:1], w)[2]),)),
    ]
    if not any(report):
        report += gradient_check(
            "cross_scale_attention_backward",
            lambda enc, dec, w: np.sum(key.cross_scale_attention_forward(enc, dec, w) * dout),
            {"enc": enc, "dec": dec, "w": w}, {"enc": d_enc, "dec": d_dec, "w": dw}, rng)
    return report


def grade_mcc_loss_gradient(student, key, rng):
    z = rng.standard_normal((2, 4, 5, 1))
    y = (rng.random(z.shape) < 0.3).astype(np.float64)
    got = student(z, y)
    expected = key.mcc_loss_gradient(z, y)
    p = 1 / (1 + np.exp(-z))
    report = [explain("mcc_loss_gradient", "dL/dz", got, expected, hypotheses=(
        ("the sigmoid's derivative p (1 - p) is missing: that is dL/dp, not dL/dz", expected / (p * (1 - p))),))]
    if report[0] is None:
        report += gradient_check("mcc_loss_gradient", lambda z: LIBRARY["mcc_loss"](z, y)[0], {"z": z},
                                 {"z": np.asarray(got)}, rng)
    return report


def _adam_uncorrected(theta, g, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return theta - lr * m / (np.sqrt(v) + eps), m, v


def grade_adam_step(student, key, rng):
    theta = rng.standard_normal((3, 4))
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    sm, sv, stheta = m, v, theta
    hp = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7)
    for t in (1, 2, 3):
        g = rng.standard_normal(theta.shape) * 10.0 ** rng.integers(-3, 2, size=theta.shape)
        before = (stheta.copy(), sm.copy(), sv.copy())
        got = _as_tuple(student(stheta, g, sm, sv, t, **hp), 3, "adam_step")
        expected = key.adam_step(stheta, g, sm, sv, t, **hp)
        if any(not np.array_equal(a, b) for a, b in zip(before, (stheta, sm, sv))):
            return [f"adam_step (step {t}) changed its input arrays; return new ones"]
        shifted = key.adam_step(stheta, g, sm, sv, t + 1, **hp)
        for name, a, e, k in zip(("theta", "m", "v"), got, expected, range(3)):
            message = explain(f"adam_step (step {t})", name, a, e, hypotheses=(
                ("no bias correction: m and v start at 0, so divide by 1 - beta^t",
                 _adam_uncorrected(stheta, g, sm, sv, t, **hp)[k]),
                ("bias correction with t + 1: the first step is t = 1", shifted[k])))
            if message:
                return [message]
        stheta, sm, sv = (np.asarray(a) for a in got)
    return []


EXERCISES = {  # name: (chapter, grader)
    "conv2d_forward": (2, grade_conv2d_forward),
    "conv2d_backward": (2, grade_conv2d_backward),
    "col2im": (2, grade_col2im),
    "maxpool2d_backward": (3, grade_maxpool2d_backward),
    "conv_transpose2d_forward": (3, grade_conv_transpose2d_forward),
    "groupnorm_backward": (4, grade_groupnorm_backward),
    "dropblock_gamma": (5, grade_dropblock_gamma),
    "cross_scale_attention_backward": (6, grade_cross_scale_attention_backward),
    "mcc_loss_gradient": (7, grade_mcc_loss_gradient),
    "adam_step": (8, grade_adam_step),
}


@dataclass
class Grade:
    exercise: str
    chapter: int
    status: str  # "passed", "failed", "not attempted" or "missing"
    messages: list[str] = field(default_factory=list)


def grade(path, selection=None, seed: int = 0) -> list[Grade]:
    """Grade the exercise functions in the Python file `path` (see the module docstring)."""
    student = _load(Path(path), "student_exercises")
    key = solution_key()
    grades = []
    for name, (chapter, grader) in EXERCISES.items():
        if selection and name not in selection:
            continue
        function = getattr(student, name, None)
        if function is None:
            grades.append(Grade(name, chapter, "missing", [f"{name}: the file defines no such function"]))
            continue
        rng = np.random.default_rng(seed)
        try:
            report = [line for line in grader(function, key, rng) if line]
        except NotImplementedError:
            grades.append(Grade(name, chapter, NOT_ATTEMPTED))
            continue
        except Exception as error:  # noqa: BLE001 - a student's bug is a result, not a crash
            frame = traceback.extract_tb(error.__traceback__)[-1]
            report = [f"{name} raised {type(error).__name__}: {error} (line {frame.lineno} of "
                      f"{Path(frame.filename).name})"]
        grades.append(Grade(name, chapter, "failed" if report else "passed", report))
    return grades


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="your copy of tutorials/exercises/exercises.py")
    parser.add_argument("exercises", nargs="*", help=f"only these ({', '.join(EXERCISES)})")
    args = parser.parse_args(argv)
    unknown = [e for e in args.exercises if e not in EXERCISES]
    if unknown:
        print(f"grade.py: no exercise {unknown[0]!r} (have: {', '.join(EXERCISES)})", file=sys.stderr)
        return 2
    if not Path(args.file).is_file():
        print(f"grade.py: no such file: {args.file}", file=sys.stderr)
        return 2
    with numpyseg.backend("reference"):  # the key in plain NumPy: nothing to compile
        grades = grade(args.file, args.exercises)
    for g in grades:
        print(f"chapter {g.chapter}  {g.exercise:32s} {g.status}")
        for message in g.messages:
            print(f"    {message}")
    done = [g for g in grades if g.status in ("passed", "failed")]
    print(f"{sum(g.status == 'passed' for g in done)} of {len(done)} attempted exercises pass "
          f"({len(grades) - len(done)} not attempted or missing)")
    return 1 if any(g.status == "failed" for g in grades) else 0


if __name__ == "__main__":
    sys.exit(main())
