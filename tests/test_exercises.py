"""The exercise grader (tutorials/exercises/grade.py) passes the solution key, fails typical
mistakes with an explanation naming the exercise, and reports stubs as not attempted."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

EXERCISES = Path(__file__).resolve().parent.parent / "tutorials" / "exercises"


def _load_grader():
    spec = importlib.util.spec_from_file_location("exercise_grader", EXERCISES / "grade.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


grader = _load_grader()
HEADER = f"import sys\nsys.path.insert(0, {str(EXERCISES)!r})\nimport numpy as np\nimport solutions as S\n\n"

# exercise -> [(a typical wrong answer, words its explanation must contain)]
WRONG = {
    "conv2d_forward": [
        ("def conv2d_forward(x, w, b):\n    return S.conv2d_forward(x, w[::-1, ::-1], b)", "flipped the kernel"),
        ("def conv2d_forward(x, w, b):\n    return np.roll(S.conv2d_forward(x, w, b), 1, axis=1)",
         "shifted by one pixel along H"),
    ],
    "conv2d_backward": [
        ("def conv2d_backward(dout, x, w):\n    dx, dw, db = S.conv2d_backward(dout, x, w)\n"
         "    return S.conv2d_forward(dout, w.transpose(0, 1, 3, 2), np.zeros(w.shape[2])), dw, db",
         "did not flip"),
        ("def conv2d_backward(dout, x, w):\n    dx, dw, db = S.conv2d_backward(dout, x, w)\n"
         "    return dx, dw, dout[0].sum(axis=(0, 1))", "missing sum over the batch"),
        ("def conv2d_backward(dout, x, w):\n    dx, dw, db = S.conv2d_backward(dout, x, w)\n"
         "    return dx, dw / 2, db", "factor 0.5"),
    ],
    "col2im": [
        ("def col2im(cols, k):\n    n, h, w, _, _, c = cols.shape\n    p = k // 2\n"
         "    xp = np.zeros((n, h + 2 * p, w + 2 * p, c))\n    for di in range(k):\n        for dj in range(k):\n"
         "            xp[:, di:di + h, dj:dj + w] = cols[:, :, :, di, dj]\n    return xp[:, p:p + h, p:p + w]",
         "must ADD"),
    ],
    "maxpool2d_backward": [
        ("def maxpool2d_backward(dout, x):\n    return np.repeat(np.repeat(dout, 2, axis=1), 2, axis=2)",
         "all four entries"),
        ("def maxpool2d_backward(dout, x):\n    return -S.maxpool2d_backward(dout, x)", "wrong sign"),
    ],
    "conv_transpose2d_forward": [
        ("def conv_transpose2d_forward(x, w, b):\n    n, h, wd, _ = x.shape\n"
         "    out = np.zeros((n, 2 * h + 2, 2 * wd + 2, w.shape[2]))\n"
         "    for i in range(h):\n        for j in range(wd):\n            for di in range(3):\n"
         "                for dj in range(3):\n"
         "                    out[:, 2 * i + di, 2 * j + dj] += x[:, i, j] @ w[di, dj].T\n"
         "    return out[:, 1:2 * h + 1, 1:2 * wd + 1] + b", "PyTorch"),
        ("def conv_transpose2d_forward(x, w, b):\n    return S.conv_transpose2d_forward(x, w, b)[:, :-1]",
         "has shape"),
    ],
    "groupnorm_backward": [
        ("def groupnorm_backward(dout, x, gamma, num_groups, eps):\n"
         "    n, h, w, c = x.shape\n    xg = x.reshape(n, h, w, num_groups, c // num_groups)\n"
         "    sigma = np.sqrt(xg.var(axis=(1, 2, 4), keepdims=True) + eps)\n"
         "    g = (dout * gamma).reshape(xg.shape)\n"
         "    dx = ((g - g.mean(axis=(1, 2, 4), keepdims=True)) / sigma).reshape(x.shape)\n"
         "    _, dgamma, dbeta = S.groupnorm_backward(dout, x, gamma, num_groups, eps)\n"
         "    return dx, dgamma, dbeta", "xhat * mean(g * xhat)"),
    ],
    "dropblock_gamma": [
        ("def dropblock_gamma(rate, height, width, block_size):\n    return rate / block_size ** 2",
         "whole block fits"),
    ],
    "cross_scale_attention_backward": [
        ("def cross_scale_attention_backward(dout, enc, dec, w):\n"
         "    d_enc, d_dec, dw = S.cross_scale_attention_backward(dout, enc, dec, w)\n"
         "    return d_enc, d_dec * dec.shape[3], dw", "not divided by C_d"),
        ("def cross_scale_attention_backward(dout, enc, dec, w):\n"
         "    d_enc, d_dec, dw = S.cross_scale_attention_backward(dout, enc, dec, w)\n"
         "    return d_enc, d_dec, -dw", "wrong sign"),
    ],
    "mcc_loss_gradient": [
        ("def mcc_loss_gradient(z, y):\n    p = 1 / (1 + np.exp(-z))\n"
         "    return S.mcc_loss_gradient(z, y) / (p * (1 - p))", "p (1 - p) is missing"),
    ],
    "adam_step": [
        ("def adam_step(theta, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):\n"
         "    m = beta1 * m + (1 - beta1) * g\n    v = beta2 * v + (1 - beta2) * g * g\n"
         "    return theta - lr * m / (np.sqrt(v) + eps), m, v", "no bias correction"),
    ],
}
CASES = [(name, code, words) for name, wrongs in WRONG.items() for code, words in wrongs]


def _write(tmp_path, body, name="answers.py"):
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body) + "\n", encoding="utf-8")
    return path


def test_every_exercise_has_a_stub_and_a_typical_mistake():
    stubs = (EXERCISES / "exercises.py").read_text(encoding="utf-8")
    for name in grader.EXERCISES:
        assert f"def {name}(" in stubs, name
        assert name in WRONG, f"no wrong answer tested for {name}"


@pytest.mark.parametrize("name", list(grader.EXERCISES))
def test_the_library_solution_passes(name):
    [result] = grader.grade(EXERCISES / "solutions.py", [name])
    assert (result.exercise, result.status, result.messages) == (name, "passed", [])


@pytest.mark.parametrize("name, code, words", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_typical_mistake_fails_with_an_explanation(tmp_path, name, code, words):
    [result] = grader.grade(_write(tmp_path, code), [name])
    assert result.status == "failed"
    text = " ".join(result.messages)
    assert result.messages[0].startswith(name), text
    assert words in text, text


def test_stubs_are_not_attempted(tmp_path, capsys):
    results = grader.grade(EXERCISES / "exercises.py")
    assert [r.exercise for r in results] == list(grader.EXERCISES)
    assert {r.status for r in results} == {"not attempted"}
    assert grader.main([str(EXERCISES / "exercises.py")]) == 0
    assert "0 of 0 attempted exercises pass (10 not attempted or missing)" in capsys.readouterr().out


def test_the_command_reports_a_failure_in_words(tmp_path, capsys):
    path = _write(tmp_path, WRONG["conv2d_backward"][0][0])
    assert grader.main([str(path), "conv2d_backward", "col2im"]) == 1
    out = capsys.readouterr().out
    assert "conv2d_backward                  failed" in out and "col2im" in out and "missing" in out
    assert "conv2d_backward: dx: " in out and " entries differ, first at (" in out


def test_an_exception_is_a_failure_naming_the_line(tmp_path):
    [result] = grader.grade(_write(tmp_path, "def col2im(cols, k):\n    return cols.sum(axis=(3, 4)) + None"),
                            ["col2im"])
    assert result.status == "failed" and "col2im raised TypeError" in result.messages[0]
    assert "answers.py" in result.messages[0]


def test_a_wrong_gradient_fails_the_gradient_check():
    """The check itself, independently of the comparison: half of the right gradient fails."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    report = grader.gradient_check("demo", lambda x: float(np.sum(x ** 2)), {"x": x}, {"x": x}, rng)
    assert len(report) == 1 and report[0].startswith("demo: gradient check of x fails")
    assert grader.gradient_check("demo", lambda x: float(np.sum(x ** 2)), {"x": x}, {"x": 2 * x}, rng) == []


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert grader.main([str(tmp_path / "nothing.py")]) == 2
    assert grader.main([str(EXERCISES / "exercises.py"), "no_such_exercise"]) == 2
