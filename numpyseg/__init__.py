"""numpyseg: SA-UNetv2 retinal-vessel segmentation in NumPy + numba, forward and backward by hand.

`set_backend("reference" | "fast")`, `get_backend()` and the context manager
`backend(name)` choose between the plain-NumPy and the numba implementation of every
layer (numpyseg.backends; the environment variable NUMPYSEG_BACKEND sets it at import).
"""

from numpyseg.backends import backend, get_backend, set_backend

__version__ = "0.1.0"
__all__ = ["backend", "get_backend", "set_backend", "__version__"]
