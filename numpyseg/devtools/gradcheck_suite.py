"""The one table of small test inputs per operation, and the gradient checks built from it.

`OPS` maps each operation to an `OpSpec`: the layer (float64, with random affine
parameters so that no gradient is trivially zero) and the shapes of its inputs.
Everything that exercises the operations on small inputs reads this table:

- `numpyseg gradcheck` (`LAYER_CHECKS`, `MODEL_CHECKS` below),
- tests/test_backends.py (the plain-NumPy reference and the fast path of every
  operation give the same outputs and gradients, and the reference passes the
  gradient check too),
- tests/test_no_jit.py (the same comparison with numba's JIT off).

Inputs are random standard normal; max-pool inputs are a scaled permutation (no
ties, no two values closer than 1e-2); DropBlock runs in training mode with a
frozen mask.  The convolution shapes are chosen so that the kernels' register tiles
(8 pixels x 16 or 32 channels) and their border code both run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from numpyseg.devtools.gradcheck import GradcheckReport, check_function, check_module


@dataclass(frozen=True)
class OpSpec:
    """One operation's small test case.

    Attributes:
        label: the name `numpyseg gradcheck` prints.
        layer: rng -> the layer, float64, parameters drawn from rng.
        shapes: the shapes of the forward inputs, (N, H, W, C) each.
        distinct: inputs without ties (a permutation times 1e-2) instead of normal draws.
    """

    label: str
    layer: Callable[[np.random.Generator], object]
    shapes: tuple[tuple[int, int, int, int], ...]
    distinct: bool = False

    def make(self, seed: int = 0):
        """(layer, inputs) for `seed`: the layer in float64 and its float64 inputs."""
        rng = np.random.default_rng(seed)
        layer = self.layer(rng).to(np.float64)
        if self.distinct:
            inputs = [rng.permutation(int(np.prod(s))).reshape(s) * 1e-2 for s in self.shapes]
        else:
            inputs = [rng.standard_normal(s) for s in self.shapes]
        return layer, inputs


def _with_random_affine(layer, rng):
    """Random weight (gamma) and bias (beta) or conv bias: no gradient is trivially zero."""
    for name in ("weight", "bias"):
        p = getattr(layer, name, None)
        if p is not None and (name == "bias" or p.data.ndim == 1):
            p.data = rng.standard_normal(p.data.shape)
    return layer


def _conv(rng):
    from numpyseg.layers.conv import Conv2d

    return _with_random_affine(Conv2d(8, 32, 3, rng=rng), rng)


def _conv_transpose(rng):
    from numpyseg.layers.conv_transpose import ConvTranspose2d

    return _with_random_affine(ConvTranspose2d(8, 16, 3, rng=rng), rng)


def _maxpool(rng):
    from numpyseg.layers.pool import MaxPool2d

    return MaxPool2d()


def _groupnorm(rng):
    from numpyseg.layers.norm import GroupNorm

    return _with_random_affine(GroupNorm(16, 8), rng)


def _groupnorm_silu(rng):
    from numpyseg.layers.norm import GroupNormSiLU

    return _with_random_affine(GroupNormSiLU(16, 8), rng)


def _batchnorm(rng):
    from numpyseg.layers.norm import BatchNorm2d

    return _with_random_affine(BatchNorm2d(6), rng)


def _activation(cls_name):
    def build(rng):
        from numpyseg.layers import activations

        return getattr(activations, cls_name)()

    return build


def _dropblock(rng):
    from numpyseg.layers.dropblock import DropBlock2d

    layer = DropBlock2d(0.3, 3, rng=rng)
    layer.freeze_mask = True  # one mask for every perturbed forward pass
    return layer


def _spatial_attention(rng):
    from numpyseg.layers.attention import SpatialAttention

    return SpatialAttention(7, rng=rng)


def _csa(rng):
    from numpyseg.layers.attention import CrossScaleSpatialAttention

    return CrossScaleSpatialAttention(7, rng=rng)


def _concat(rng):
    from numpyseg.layers.concat import Concat

    return Concat()


#: operation -> its small test case (the spec every test of the operation uses)
OPS: dict[str, OpSpec] = {
    "conv2d": OpSpec("Conv2d 3x3", _conv, ((2, 5, 10, 8),)),
    "conv_transpose2d": OpSpec("ConvTranspose2d 3x3 s2", _conv_transpose, ((2, 3, 10, 8),)),
    "maxpool2d": OpSpec("MaxPool2d 2x2", _maxpool, ((2, 6, 8, 3),), distinct=True),
    "groupnorm": OpSpec("GroupNorm", _groupnorm, ((2, 5, 4, 16),)),
    "groupnorm_silu": OpSpec("GroupNorm + SiLU (fused)", _groupnorm_silu, ((2, 5, 4, 16),)),
    "batchnorm": OpSpec("BatchNorm2d (train)", _batchnorm, ((3, 4, 5, 6),)),
    "silu": OpSpec("SiLU", _activation("SiLU"), ((2, 4, 5, 3),)),
    "relu": OpSpec("ReLU", _activation("ReLU"), ((2, 4, 5, 3),)),
    "sigmoid": OpSpec("Sigmoid", _activation("Sigmoid"), ((2, 4, 5, 3),)),
    "dropblock": OpSpec("DropBlock2d (frozen mask)", _dropblock, ((2, 9, 10, 3),)),
    "spatial_attention": OpSpec("SpatialAttention", _spatial_attention, ((2, 8, 9, 4),)),
    "cross_scale_attention": OpSpec("CrossScaleSpatialAttention", _csa, ((2, 8, 9, 4), (2, 8, 9, 3))),
    "concat": OpSpec("Concat", _concat, ((2, 3, 4, 2), (2, 3, 4, 5))),
}

#: the loss's small test case: logits, 0/1 target and 0/1 mask of this shape, pos_weight 3
LOSS_SHAPE = (2, 6, 7, 1)


def loss_inputs(seed: int = 0):
    """(logits, target, mask) float64 of LOSS_SHAPE for the loss checks."""
    r = np.random.default_rng(seed)
    logits = r.standard_normal(LOSS_SHAPE) * 2
    target = (r.random(LOSS_SHAPE) < 0.3).astype(np.float64)
    mask = (r.random(LOSS_SHAPE) < 0.8).astype(np.float64)
    return logits, target, mask


def _layer_check(spec: OpSpec):
    def check(seed) -> GradcheckReport:
        return check_module(*spec.make(seed))

    return check


def _loss(seed):
    from numpyseg.losses import bce_mcc_loss

    logits, target, mask = loss_inputs(seed)
    _, grad = bce_mcc_loss(logits, target, mask=mask, pos_weight=3.0)
    return check_function(lambda z: bce_mcc_loss(z, target, mask=mask, pos_weight=3.0)[0],
                          [grad], [logits])


#: the model checks' configuration: two channels per GroupNorm group, so no conv bias is
#: cancelled exactly; input_grad: the image gradient, which training skips, is checked too
MODEL_CONFIG = {"base_channels": 16, "dropblock_rate": 0.0, "input_grad": True}
#: 32x32: the bottleneck is 4x4, so every tap of the 7x7 attention kernel is used
MODEL_INPUT_SHAPE = (2, 32, 32, 3)


def model_case(arch: str, seed: int = 0):
    """(model, input) float64 for the whole-model checks of `arch`."""
    from numpyseg.models import build_model

    model = build_model({"arch": arch, "seed": seed, **MODEL_CONFIG}).to(np.float64)
    # v1 in eval mode: in training mode a conv bias just before BatchNorm has an
    # exactly zero gradient (BatchNorm removes per-channel constants)
    model.train(arch == "sa_unetv2")
    return model, np.random.default_rng(seed).standard_normal(MODEL_INPUT_SHAPE)


def _model(arch):
    def check(seed) -> GradcheckReport:
        model, x = model_case(arch, seed)
        return check_module(model, [x], max_entries=6, directions=2)

    return check


LAYER_CHECKS = [(spec.label, _layer_check(spec)) for spec in OPS.values()] + [
    ("Loss 0.5 WBCE + 0.5 MCC (masked)", _loss),
]

MODEL_CHECKS = [
    ("SAUNetV2 (c=16, every parameter)", _model("sa_unetv2")),
    ("SAUNet v1 (c=16, every parameter)", _model("sa_unet")),
]
