"""numba kernels, each beside its plain-NumPy reference.

`TILE_VARIANT` names the register-tile shape the convolution kernels use on
this CPU ('avx512', 'avx2' or 'portable'; see numpyseg.kernels.tiles).
"""

from numpyseg.kernels.tiles import TILE_VARIANT  # noqa: F401
