"""The gradient checks that `numpyseg gradcheck` runs: one per layer, loss and model.

Each entry is (name, check(seed) -> GradcheckReport).  Inputs are small, random,
float64; the upstream gradient is random; max-pool inputs have no ties; DropBlock
runs in training mode with a frozen mask.
"""

from __future__ import annotations

import numpy as np

from numpyseg.gradcheck import GradcheckReport, check_function, check_module


def _rng(seed):
    return np.random.default_rng(seed)


def _conv(seed):
    from numpyseg.layers.conv import Conv2d

    r = _rng(seed)
    layer = Conv2d(3, 4, 3, rng=r)
    layer.bias.data = r.standard_normal(4)
    return check_module(layer, [r.standard_normal((2, 5, 6, 3))])


def _conv_transpose(seed):
    from numpyseg.layers.conv_transpose import ConvTranspose2d

    r = _rng(seed)
    layer = ConvTranspose2d(4, 3, 3, rng=r)
    layer.bias.data = r.standard_normal(3)
    return check_module(layer, [r.standard_normal((2, 3, 4, 4))])


def _maxpool(seed):
    from numpyseg.layers.pool import MaxPool2d

    r = _rng(seed)
    # a permutation: all values distinct and at least 1e-2 apart, so no ties
    x = r.permutation(2 * 6 * 8 * 3).reshape(2, 6, 8, 3) * 1e-2
    return check_module(MaxPool2d(), [x])


def _groupnorm(seed):
    from numpyseg.layers.norm import GroupNorm

    r = _rng(seed)
    layer = GroupNorm(16, 8)
    layer.weight.data = r.standard_normal(16)
    layer.bias.data = r.standard_normal(16)
    return check_module(layer, [r.standard_normal((2, 5, 4, 16))])


def _groupnorm_silu(seed):
    from numpyseg.layers.norm import GroupNormSiLU

    r = _rng(seed)
    layer = GroupNormSiLU(16, 8)
    layer.weight.data = r.standard_normal(16)
    layer.bias.data = r.standard_normal(16)
    return check_module(layer, [r.standard_normal((2, 5, 4, 16))])


def _batchnorm(seed):
    from numpyseg.layers.norm import BatchNorm2d

    r = _rng(seed)
    layer = BatchNorm2d(6)
    layer.weight.data = r.standard_normal(6)
    layer.bias.data = r.standard_normal(6)
    return check_module(layer, [r.standard_normal((3, 4, 5, 6))])


def _activation(cls_name):
    def check(seed):
        from numpyseg.layers import activations

        return check_module(getattr(activations, cls_name)(), [_rng(seed).standard_normal((2, 4, 5, 3))])

    return check


def _dropblock(seed):
    from numpyseg.layers.dropblock import DropBlock2d

    r = _rng(seed)
    layer = DropBlock2d(0.3, 3, rng=r)
    layer.freeze_mask = True  # one mask for every perturbed forward pass
    return check_module(layer, [r.standard_normal((2, 9, 10, 3))])


def _spatial_attention(seed):
    from numpyseg.layers.attention import SpatialAttention

    r = _rng(seed)
    # distinct channel values so the channel max has no ties
    x = r.standard_normal((2, 8, 9, 4))
    return check_module(SpatialAttention(7, rng=r), [x])


def _csa(seed):
    from numpyseg.layers.attention import CrossScaleSpatialAttention

    r = _rng(seed)
    enc, dec = r.standard_normal((2, 8, 9, 4)), r.standard_normal((2, 8, 9, 3))
    return check_module(CrossScaleSpatialAttention(7, rng=r), [enc, dec])


def _concat(seed):
    from numpyseg.layers.concat import Concat

    r = _rng(seed)
    return check_module(Concat(), [r.standard_normal((2, 3, 4, 2)), r.standard_normal((2, 3, 4, 5))])


def _loss(seed):
    from numpyseg.losses import bce_mcc_loss

    r = _rng(seed)
    logits = r.standard_normal((2, 6, 7, 1)) * 2
    target = (r.random((2, 6, 7, 1)) < 0.3).astype(np.float64)
    mask = (r.random((2, 6, 7, 1)) < 0.8).astype(np.float64)
    _, grad = bce_mcc_loss(logits, target, mask=mask, pos_weight=3.0)
    return check_function(lambda z: bce_mcc_loss(z, target, mask=mask, pos_weight=3.0)[0],
                          [grad], [logits])


def _model(arch):
    def check(seed) -> GradcheckReport:
        from numpyseg.models import build_model

        # two channels per GroupNorm group, so no conv bias is cancelled exactly;
        # input_grad: the image gradient, which training skips, is checked too
        model = build_model({"arch": arch, "base_channels": 16, "dropblock_rate": 0.0, "seed": seed,
                             "input_grad": True})
        # v1 in eval mode: in training mode a conv bias just before BatchNorm has an
        # exactly zero gradient (BatchNorm removes per-channel constants)
        model.train(arch == "sa_unetv2")
        # 32x32: the bottleneck is 4x4, so every tap of the 7x7 attention kernel is used
        x = _rng(seed).standard_normal((2, 32, 32, 3))
        return check_module(model, [x], max_entries=6, directions=2)

    return check


LAYER_CHECKS = [
    ("Conv2d 3x3", _conv),
    ("ConvTranspose2d 3x3 s2", _conv_transpose),
    ("MaxPool2d 2x2", _maxpool),
    ("GroupNorm", _groupnorm),
    ("GroupNorm + SiLU (fused)", _groupnorm_silu),
    ("BatchNorm2d (train)", _batchnorm),
    ("SiLU", _activation("SiLU")),
    ("ReLU", _activation("ReLU")),
    ("Sigmoid", _activation("Sigmoid")),
    ("DropBlock2d (frozen mask)", _dropblock),
    ("SpatialAttention", _spatial_attention),
    ("CrossScaleSpatialAttention", _csa),
    ("Concat", _concat),
    ("Loss 0.5 WBCE + 0.5 MCC (masked)", _loss),
]

MODEL_CHECKS = [
    ("SAUNetV2 (c=16, every parameter)", _model("sa_unetv2")),
    ("SAUNet v1 (c=16, every parameter)", _model("sa_unet")),
]
