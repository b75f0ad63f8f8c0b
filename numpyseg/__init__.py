"""numpyseg: SA-UNetv2 retinal-vessel segmentation in NumPy + numba, forward and backward by hand.

`set_backend("reference" | "fast")`, `get_backend()` and the context manager
`backend(name)` choose between the plain-NumPy and the numba implementation of every
layer (numpyseg.backends, which reads the environment variable NUMPYSEG_BACKEND when
it is first imported: by the layers, or by the first use of these three names).
"""

__version__ = "0.1.0"
__all__ = ["backend", "get_backend", "set_backend", "__version__"]


def __getattr__(name):
    # Imported on first use, so that `import numpyseg` alone (the command line parsing its
    # options, say) never fails: a bad NUMPYSEG_BACKEND is reported where it matters, as
    # a one-line ConfigError the command line prints and exits 2 on.
    if name in ("backend", "get_backend", "set_backend"):
        from numpyseg import backends

        return getattr(backends, name)
    raise AttributeError(f"module 'numpyseg' has no attribute '{name}'")
