"""numpyseg: SA-UNetv2 retinal-vessel segmentation in NumPy + numba, forward and backward by hand."""

__version__ = "0.1.0"
