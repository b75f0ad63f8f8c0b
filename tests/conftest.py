"""Shared fixtures: a seeded RNG, optional PyTorch, the DRIVE folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DRIVE_ENV = "NUMPYSEG_DRIVE"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def torch():
    """PyTorch for parity tests; the test is skipped with a reason when it is absent."""
    return pytest.importorskip("torch", reason="PyTorch not installed (pip install -e .[parity])")


@pytest.fixture
def drive_root() -> Path:
    """The DRIVE folder named by $NUMPYSEG_DRIVE; the test is skipped when it is absent."""
    value = os.environ.get(DRIVE_ENV)
    if not value:
        pytest.skip(f"DRIVE not available: set {DRIVE_ENV} to the DRIVE folder")
    path = Path(value)
    if not (path / "training" / "images").is_dir():
        pytest.skip(f"DRIVE not available: {DRIVE_ENV}={value} has no training/images folder")
    return path
