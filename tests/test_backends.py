"""The two backends (numpyseg.backends): every operation and the whole SA-UNetv2 give the same
numbers with the plain-NumPy references and with the numba kernels; in reference mode no numba
kernel runs, and a training step works; choosing the backend, and its one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import numpyseg
from numpyseg.errors import ConfigError
from numpyseg.devtools.gradcheck import check_module
from numpyseg.devtools.gradcheck_suite import OPS, model_case
from numpyseg.inference import load_model
from numpyseg.layers.module import no_grad
from numpyseg.losses import BCEMCCLoss
from numpyseg.optim import Adam

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ choosing
def test_set_get_and_the_context_manager():
    before = numpyseg.get_backend()
    with numpyseg.backend("reference") as name:
        assert name == numpyseg.get_backend() == "reference"
        with numpyseg.backend("fast"):
            assert numpyseg.get_backend() == "fast"
        assert numpyseg.get_backend() == "reference"
    assert numpyseg.get_backend() == before
    with pytest.raises(KeyError), numpyseg.backend("reference"):
        raise KeyError("the previous backend comes back after an error too")
    assert numpyseg.get_backend() == before
    numpyseg.set_backend("reference")
    try:
        assert numpyseg.get_backend() == "reference"
    finally:
        numpyseg.set_backend(before)
    with pytest.raises(ConfigError, match="unknown numpyseg backend 'numba': choose 'fast' or 'reference'"):
        numpyseg.set_backend("numba")
    with pytest.raises(ConfigError, match="unknown numpyseg backend"), numpyseg.backend("slow"):
        pass
    assert numpyseg.get_backend() == before


def _python(code: str, backend: str):
    env = dict(os.environ, NUMPYSEG_BACKEND=backend, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_environment_variable_is_read_at_import():
    assert _python("import numpyseg; print(numpyseg.get_backend())", "reference").stdout.strip() == "reference"
    assert _python("import numpyseg.layers; from numpyseg.backends import get_backend; print(get_backend())",
                   "reference").stdout.strip() == "reference"
    assert _python("import numpyseg; print(numpyseg.get_backend())", "").stdout.strip() == "fast"
    bad = _python("import numpyseg.layers", "gpu")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == ("numpyseg.errors.ConfigError: NUMPYSEG_BACKEND='gpu' is not a "
                                                   "backend: set it to 'fast' or 'reference'")
    # the command line: one line, exit status 2
    cli = _python("import sys; from numpyseg.cli.main import main; sys.exit(main(['gradcheck']))", "gpu")
    assert cli.returncode == 2 and cli.stdout == ""
    assert cli.stderr.strip() == ("numpyseg gradcheck: error: NUMPYSEG_BACKEND='gpu' is not a backend: "
                                  "set it to 'fast' or 'reference'")


# ------------------------------------------------------- every operation
def _run(name: str, backend: str, dtype):
    """Output, input gradients, parameter gradients and buffers of OPS[name] on `backend`."""
    layer, inputs = OPS[name].make(0)
    layer.to(dtype)
    inputs = [x.astype(dtype) for x in inputs]
    with numpyseg.backend(backend):
        out = layer(*inputs)
        grads = layer.backward(np.random.default_rng(1).standard_normal(out.shape).astype(dtype))
    grads = grads if isinstance(grads, tuple) else (grads,)
    return [out, *grads, *(p.grad for p in layer.parameters()), *(b for _, b in layer.named_buffers())]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(OPS))
def test_every_operation_gives_the_same_numbers_on_both_backends(name, dtype):
    fast, reference = _run(name, "fast", dtype), _run(name, "reference", dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    assert len(fast) == len(reference)
    for i, (a, r) in enumerate(zip(fast, reference)):
        assert a.shape == r.shape and a.dtype == r.dtype == dtype, (name, i)
        np.testing.assert_allclose(a, r, rtol=tol, atol=tol * max(1.0, float(np.abs(r).max())), err_msg=f"{name} {i}")


@pytest.mark.backend_subset
@pytest.mark.parametrize("name", list(OPS))
def test_gradient_check_of_every_operation_on_the_active_backend(name):
    """Run by CI once more with NUMPYSEG_BACKEND=reference (-m backend_subset): the references' own proof."""
    report = check_module(*OPS[name].make(0))
    assert report.passed, report


@pytest.mark.parametrize("name", ["conv2d", "groupnorm_silu", "spatial_attention", "cross_scale_attention"])
def test_the_references_pass_the_gradient_check(name):
    with numpyseg.backend("reference"):
        report = check_module(*OPS[name].make(1))
    assert report.passed, report


# ------------------------------------------------------- the whole network
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_whole_sa_unetv2_same_logits_and_gradients_on_both_backends(dtype, tol):
    results = {}
    for backend in ("fast", "reference"):
        model, x = model_case("sa_unetv2", seed=3)
        model.to(dtype)
        with numpyseg.backend(backend):
            logits = model(x.astype(dtype))
            g = np.random.default_rng(4).standard_normal(logits.shape).astype(dtype)
            dx = model.backward(g)
        results[backend] = logits, dx, {name: p.grad.copy() for name, p in model.named_parameters()}
    (z_f, dx_f, grads_f), (z_r, dx_r, grads_r) = results["fast"], results["reference"]
    rel = lambda a, b: float(np.linalg.norm((a - b).astype(np.float64)) / np.linalg.norm(b.astype(np.float64)))
    assert z_f.dtype == z_r.dtype == dtype and rel(z_f, z_r) < tol
    assert rel(dx_f, dx_r) < tol
    assert grads_f.keys() == grads_r.keys() and len(grads_f) > 50
    for name in grads_f:
        assert np.any(grads_r[name]), name
        assert rel(grads_f[name], grads_r[name]) < tol, name


def _dispatchers():
    """(owner, key, dispatcher) for every numba kernel reachable from a numpyseg module or table."""
    found = []
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("numpyseg") or module is None:
            continue
        for key, value in list(vars(module).items()):
            if isinstance(value, numba.core.dispatcher.Dispatcher):
                found.append((module, key, value))
            elif isinstance(value, dict):
                found.extend((value, k, v) for k, v in value.items()
                             if isinstance(v, numba.core.dispatcher.Dispatcher))
    return found


@pytest.fixture
def forbid_numba(monkeypatch):
    """Every numba kernel of numpyseg replaced by a function that fails the test when called."""
    import numpyseg.models  # noqa: F401  (every layer module imported before the scan)
    import numpyseg.training.trainer  # noqa: F401

    patched = set()
    for owner, key, dispatcher in _dispatchers():
        def forbidden(*args, _name=dispatcher.py_func.__qualname__, **kwargs):
            raise AssertionError(f"numba kernel {_name} ran")

        if isinstance(owner, dict):
            monkeypatch.setitem(owner, key, forbidden)
        else:
            monkeypatch.setattr(owner, key, forbidden)
        patched.add(dispatcher.py_func.__qualname__)
    return patched


def test_reference_mode_runs_no_numba_kernel_forward_backward_and_step(forbid_numba):
    # the instrumentation covers the kernels of every layer, and catches a fast-mode call
    assert {"conv_forward_avx512", "maxpool_forward_kernel", "silu_kernel", "gate_scale_kernel",
            "apply_mask_kernel", "expand_seeds_kernel", "_normalize_silu_kernel"} <= forbid_numba
    model, x = model_case("sa_unetv2", seed=5)
    model.to(np.float32)
    with pytest.raises(AssertionError, match="numba kernel .* ran"), numpyseg.backend("fast"):
        model(x.astype(np.float32))
    # training mode with DropBlock on: every layer of SA-UNetv2, the loss and an Adam step
    model = numpyseg.models.build_model({"arch": "sa_unetv2", "base_channels": 16, "block_size": 3, "seed": 5})
    images = np.random.default_rng(6).random((2, 32, 32, 3)).astype(np.float32)
    labels = (np.random.default_rng(7).random((2, 32, 32, 1)) < 0.2).astype(np.float32)
    with numpyseg.backend("reference"):
        value, dlogits = BCEMCCLoss()(model(images), labels)
        model.backward(dlogits)
        Adam(model, lr=1e-3).step()
        model.eval()
        with no_grad():
            assert np.isfinite(model(images)).all()
    assert np.isfinite(value)


def test_a_training_step_in_reference_mode_matches_the_fast_step():
    after = {}
    for backend in ("reference", "fast"):
        model, _ = model_case("sa_unetv2", seed=8)
        rng = np.random.default_rng(9)
        images, labels = rng.random((2, 32, 32, 3)), (rng.random((2, 32, 32, 1)) < 0.2).astype(np.float64)
        before = model.state_dict()
        optimizer, loss = Adam(model, lr=1e-3), BCEMCCLoss()
        with numpyseg.backend(backend):
            losses = []
            for _ in range(3):
                optimizer.zero_grad()
                value, dlogits = loss(model(images), labels)
                model.backward(dlogits)
                optimizer.step()
                losses.append(value)
        after[backend] = model.state_dict(), losses
        changed = [name for name, value in model.state_dict().items() if not np.array_equal(value, before[name])]
        assert len(changed) == len(before)  # every parameter moved
        assert losses[-1] < losses[0]
    (state_r, losses_r), (state_f, losses_f) = after["reference"], after["fast"]
    np.testing.assert_allclose(losses_r, losses_f, rtol=1e-9)
    for name in state_r:
        np.testing.assert_allclose(state_r[name], state_f[name], rtol=1e-7, atol=1e-9, err_msg=name)


# ------------------------------------------------------- the shipped weights
def test_version_one_weights_give_the_pinned_logits_on_both_backends():
    """Logits of the weights numpyseg 1.0 shipped (kept in tests/data) for a fixed input, computed
    before the attention gates kept their weight in a GateWeight instead of a Conv2d: the same
    names load the same model, and weights from earlier versions keep loading."""
    data = Path(__file__).resolve().parent / "data"
    pinned = np.load(data / "shipped_weights_logits.npz")["logits"]
    model, _ = load_model(data / "sa_unetv2_drive_v1.npz")
    model.eval()
    x = np.random.default_rng(2024).random((1, 40, 48, 3)).astype(np.float32)
    gates = {"attention.conv.weight", "csa1.conv.weight", "csa2.conv.weight", "csa3.conv.weight"}
    assert {name for name, p in model.named_parameters() if p.shape == (7, 7, 2, 1)} == gates
    with no_grad():
        fast = model(x)
        with numpyseg.backend("reference"):
            reference = model(x)
    assert fast.dtype == np.float32 and fast.shape == pinned.shape
    np.testing.assert_array_equal(fast, pinned)
    np.testing.assert_allclose(reference, pinned, rtol=1e-4, atol=1e-4)
