"""The layer library: each layer a Module with a hand-written forward and backward."""

from numpyseg.layers.conv import Conv2d
from numpyseg.layers.module import Module, Parameter, no_grad

__all__ = ["Module", "Parameter", "no_grad", "Conv2d"]
