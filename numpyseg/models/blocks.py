"""The convolution block the U-Nets are made of, and a pair of them.

ConvBlock:  x -> Conv 3x3 'same' -> DropBlock -> Norm -> Activation
            (SA-UNetv2: GroupNorm(8, eps 1e-3) + SiLU; SA-UNet v1: BatchNorm + ReLU)

In SA-UNetv2 GroupNorm and SiLU run as one fused layer, GroupNormSiLU (the same
function, parameters and parameter names, in one pass over memory); `fused=False`
builds them as two layers, which the tests check gives the same results.

Its backward is the chain rule read backwards: each child's backward takes the
gradient of its output and returns the gradient of its input.

References:
    C. Guo, M. Szemenyei, Y. Yi, W. Wang, B. Chen, C. Fan, "SA-UNet: spatial attention
    U-Net for retinal vessel segmentation", ICPR 2020, arXiv:2004.03696 (conv, DropBlock,
    BatchNorm, ReLU); C. Guo et al., "SA-UNetv2", arXiv:2509.11774, 2025 (GroupNorm, SiLU).
"""

from __future__ import annotations

from numpyseg.layers.activations import ReLU, SiLU
from numpyseg.layers.conv import Conv2d
from numpyseg.layers.dropblock import DropBlock2d
from numpyseg.layers.module import Module
from numpyseg.layers.norm import BatchNorm2d, GroupNorm, GroupNormSiLU


class ConvBlock(Module):
    """Conv 3x3 -> DropBlock -> Norm -> Act.  (N, H, W, C_in) -> (N, H, W, C_out).

    Why GroupNorm + SiLU are fused: as two layers, GroupNorm writes z = gamma * xhat + beta
    to memory, SiLU reads z back and writes y, and each keeps its input for the backward
    (x and z, two activation-sized arrays per block).  Fused, z is computed, passed
    through SiLU and dropped while still in registers: one pass over memory instead of
    three, and only x and the (N, G) statistics are cached; the backward recomputes z.
    BatchNorm + ReLU (SA-UNet v1) stay two layers.

    Args:
        norm: 'group' (GroupNorm with `groups` groups, SiLU) or 'batch' (BatchNorm, ReLU).
        fused: with norm 'group', run GroupNorm + SiLU as the fused GroupNormSiLU layer
            (self.norm; self.act is then None).  Same parameters and names either way
            (`norm.weight`, `norm.bias`), so state dicts load into both forms; False
            builds GroupNorm and SiLU as two layers.
    """

    def __init__(self, in_channels, out_channels, *, dropblock_rate=0.15, block_size=7,
                 norm="group", groups=8, fused=True, rng=None):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, 3, rng=rng)
        self.drop = DropBlock2d(dropblock_rate, block_size, rng=rng)
        if norm == "group" and fused:
            self.norm, self.act = GroupNormSiLU(out_channels, groups, eps=1e-3), None
        elif norm == "group":
            self.norm, self.act = GroupNorm(out_channels, groups, eps=1e-3), SiLU()
        elif norm == "batch":
            self.norm, self.act = BatchNorm2d(out_channels, eps=1e-3), ReLU()
        else:
            raise ValueError(f"norm must be 'group' or 'batch', got {norm!r}")

    def forward(self, x):
        out = self.norm(self.drop(self.conv(x)))
        return out if self.act is None else self.act(out)

    def backward(self, dout):
        if self.act is not None:
            dout = self.act.backward(dout)
        return self.conv.backward(self.drop.backward(self.norm.backward(dout)))


class DoubleBlock(Module):
    """Two ConvBlocks: C_in -> C_out -> C_out (one U-Net stage)."""

    def __init__(self, in_channels, out_channels, **block_options):
        super().__init__()
        self.block1 = ConvBlock(in_channels, out_channels, **block_options)
        self.block2 = ConvBlock(out_channels, out_channels, **block_options)

    def forward(self, x):
        return self.block2(self.block1(x))

    def backward(self, dout):
        return self.block1.backward(self.block2.backward(dout))
