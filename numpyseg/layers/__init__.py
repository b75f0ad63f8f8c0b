"""The layer library: each layer a Module with a hand-written forward and backward."""

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
