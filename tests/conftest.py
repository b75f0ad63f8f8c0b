"""Shared fixtures: a seeded RNG, optional PyTorch, the DRIVE folder, one numba thread;
the --backend option (numpyseg.backends) for the tests marked backend_subset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DRIVE_ENV = "NUMPYSEG_DRIVE"
STARE_ENV = "NUMPYSEG_STARE"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def torch():
    """PyTorch for parity tests; the test is skipped with a reason when it is absent."""
    return pytest.importorskip("torch", reason="PyTorch not installed (pip install -e .[parity])")


def _dataset_root(name: str, env: str, inside: str | None) -> Path:
    """The folder named by $env, or skip the test saying why; `inside`: a subfolder it must hold."""
    value = os.environ.get(env)
    if not value:
        pytest.skip(f"{name} not available: set {env} to the {name} folder")
    path = Path(value)
    if not (path / inside if inside else path).is_dir():
        problem = f"has no {inside} folder" if inside else "is not a folder"
        pytest.skip(f"{name} not available: {env}={value} {problem}")
    return path


@pytest.fixture
def drive_root() -> Path:
    """The DRIVE folder named by $NUMPYSEG_DRIVE; the test is skipped when it is absent."""
    return _dataset_root("DRIVE", DRIVE_ENV, "training/images")


@pytest.fixture
def stare_root() -> Path:
    """The STARE folder named by $NUMPYSEG_STARE; the test is skipped when it is absent."""
    return _dataset_root("STARE", STARE_ENV, None)


def pytest_addoption(parser):
    parser.addoption("--backend", choices=("fast", "reference"), default=None,
                     help="numpyseg backend for the whole run (default: $NUMPYSEG_BACKEND or 'fast'); "
                          "CI runs `-m backend_subset --backend reference` once more")


def pytest_configure(config):
    name = config.getoption("--backend")
    if name is not None:
        import numpyseg

        numpyseg.set_backend(name)


@pytest.fixture(autouse=True, scope="module")
def one_numba_thread():
    """One numba thread for each test module's module-scoped fixtures too (a model trained
    once per module, say), which run before the per-test `single_numba_thread`."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)


@pytest.fixture(autouse=True)
def single_numba_thread(request):
    """Run each test with one numba thread unless it asks for `parallel_threads`.

    Gradient checks call kernels thousands of times on tiny arrays; a parallel
    region there costs more in thread hand-off than it saves, and on a busy
    2-core machine each hand-off can wait for a scheduler time slice.  Kernel
    tests that must exercise the parallel code use the `parallel_threads` fixture.
    """
    import numba

    if "parallel_threads" in request.fixturenames:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(previous)


@pytest.fixture
def parallel_threads():
    """All of numba's threads (at least 2 where the machine has them)."""
    import numba

    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return numba.get_num_threads()
