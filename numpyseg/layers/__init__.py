"""The layer library: each layer a Module with a hand-written forward and backward.

One operation, one place, two names.  Each operation lives in its layer module, which
holds, in this order: the math (the module docstring: forward, backward, sources),
the plain-NumPy implementation and the fast one, and the Module:

    <op>_forward_reference(...) -> (out, cache)      plain NumPy, the formulas as written
    <op>_backward_reference(dout, cache) -> grads
    <op>_forward_fast(...) -> (out, cache)           numba kernels (numpyseg/kernels/*.py,
    <op>_backward_fast(dout, cache) -> grads         with the per-CPU register tiles inside)

    module             <op>
    conv.py            conv2d                  (im2col + GEMM | direct kernels)
    conv_transpose.py  conv_transpose2d        (GEMM + strided col2im | direct kernels)
    pool.py            maxpool2d
    norm.py            groupnorm, groupnorm_silu, batchnorm
    activations.py     sigmoid, silu, relu     (and `sigmoid(x)`, the one stable sigmoid)
    dropblock.py       dropblock               (and expand_seeds_reference / _fast, the mask)
    attention.py       spatial_attention, cross_scale_attention (one gate convolution:
                       conv2d_*_reference in NumPy, a row kernel inside the fast passes)

An operation without a kernel (ReLU) has the same function under both names;
BatchNorm's fast version is the same NumPy in the input's dtype, in place.  The loss
(numpyseg.losses) and Concat are plain NumPy in both modes.  A cache belongs to the
implementation that made it: pass it to the backward of the same pair.

The backend.  A layer's `forward` runs the pair of the active backend and its
`backward` the matching backward: `numpyseg.set_backend("reference" | "fast")`,
`numpyseg.backend(name)` for a block, or NUMPYSEG_BACKEND at import
(numpyseg.backends).  In "reference" mode the whole network, the loss and inference
run in plain NumPy and no numba kernel executes; "fast" (the default) is what training
uses.  The small test inputs of every operation are in numpyseg.devtools.gradcheck_suite.OPS.
"""

from numpyseg.layers.activations import ReLU, Sigmoid, SiLU
from numpyseg.layers.attention import CrossScaleSpatialAttention, SpatialAttention
from numpyseg.layers.concat import Concat
from numpyseg.layers.conv import Conv2d
from numpyseg.layers.conv_transpose import ConvTranspose2d
from numpyseg.layers.dropblock import DropBlock2d
from numpyseg.layers.module import Module, Parameter, no_grad
from numpyseg.layers.norm import BatchNorm2d, GroupNorm, GroupNormSiLU
from numpyseg.layers.pool import MaxPool2d

__all__ = ["Module", "Parameter", "no_grad", "Conv2d", "ConvTranspose2d", "MaxPool2d",
           "GroupNorm", "GroupNormSiLU", "BatchNorm2d", "SiLU", "ReLU", "Sigmoid", "DropBlock2d",
           "SpatialAttention", "CrossScaleSpatialAttention", "Concat"]
