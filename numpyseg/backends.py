"""The backend: which implementation of every operation the layers run.

Every operation (convolution, pooling, GroupNorm, the attention gates, ...) has two
implementations side by side in its layer module (see numpyseg/layers/__init__.py):

    "fast"       numba kernels where they pay (the default): what training and
                 inference use.
    "reference"  plain NumPy, written to be read: the formulas of the module
                 docstring, line by line.  No numba kernel runs in this mode, so
                 a student can train, gradient-check and step through the whole
                 network in a debugger (numba stays installed, it is only not called).

Both give the same numbers up to rounding (tests/test_backends.py).  Choose with

    numpyseg.set_backend("reference")          # for the rest of the process
    with numpyseg.backend("reference"): ...    # for a block, then back
    NUMPYSEG_BACKEND=reference python ...      # read once, at import

A layer picks its implementation when its forward pass runs and its backward pass
uses the matching one, so switching between a forward and its backward is safe.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from numpyseg.errors import ConfigError

BACKENDS = ("fast", "reference")
ENVIRONMENT_VARIABLE = "NUMPYSEG_BACKEND"


def _checked(name) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"unknown numpyseg backend {name!r}: choose 'fast' or 'reference'")
    return name


def _from_environment() -> str:
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not value:
        return "fast"
    if value not in BACKENDS:
        raise ConfigError(f"{ENVIRONMENT_VARIABLE}={value!r} is not a backend: set it to 'fast' or 'reference'")
    return value


_current = _from_environment()


def get_backend() -> str:
    """The active backend, 'fast' or 'reference'."""
    return _current


def set_backend(name: str) -> None:
    """Make `name` ('fast' or 'reference') the backend of every layer from now on.

    Raises:
        ConfigError: `name` is not a backend.
    """
    global _current
    _current = _checked(name)


def reference_mode() -> bool:
    """True when the layers run their plain-NumPy references."""
    return _current == "reference"


@contextmanager
def backend(name: str):
    """Run a block with backend `name`, then restore the previous one.

    >>> with backend("reference"):
    ...     logits = model(images)       # plain NumPy, no numba kernel
    """
    global _current
    previous = _current
    _current = _checked(name)
    try:
        yield name
    finally:
        _current = previous


def pick(reference, fast):
    """`reference` or `fast` (anything: a function, a (forward, backward) pair), by the active backend."""
    return reference if _current == "reference" else fast
