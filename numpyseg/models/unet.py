"""SA-UNetv2 and its predecessor SA-UNet, assembled from the layer library.

Both are three-level U-Nets (input sizes: multiples of 8), NHWC in, logits out:

    enc1 ─────────────────────────────────────────────── skip1 ─ dec1 ─ head
      └ pool1 ─ enc2 ─────────────────────── skip2 ─ dec2 ─ up1 ┘
                  └ pool2 ─ enc3 ─── skip3 ─ dec3 ─ up2 ┘
                              └ pool3 ─ bottleneck ─ up3 ┘

    bottleneck = ConvBlock -> SpatialAttention -> ConvBlock
    skip (v2)  = concat[up, CSA(enc, up)]     cross-scale spatial attention
    skip (v1)  = concat[up, enc]              a plain U-Net skip

Every forward step has its backward step, taken in the opposite order; where a
tensor feeds two consumers (an encoder output goes to the pool *and* to the skip;
an up-sampled tensor goes to the concat *and* to the CSA), the two gradients add.

The gradient with respect to the image.  `backward` returns dL/dx, as every layer's
backward does (the whole-model gradient check checks it; saliency maps use it).
Training needs dL/dparameters only, and the first convolution (enc1.block1.conv)
would spend a whole extra convolution on dL/dx (16 -> 3 channels over the full
592 x 592 image), so the trainer sets `model.input_grad = False`: that convolution
then skips it (`Conv2d.needs_input_grad = False`), `backward` returns None, and the
parameter gradients are unchanged.

Looking inside.  `with model.recording_gates(): model(x)` makes every attention
layer keep the gate map of that forward pass; `model.gate_maps()` then returns
them by layer name (bottleneck 'attention', then 'csa3', 'csa2', 'csa1').

References:
    O. Ronneberger, P. Fischer, T. Brox, "U-Net: convolutional networks for biomedical
    image segmentation", MICCAI 2015, arXiv:1505.04597.
    C. Guo, M. Szemenyei, Y. Yi, W. Wang, B. Chen, C. Fan, "SA-UNet: spatial attention
    U-Net for retinal vessel segmentation", ICPR 2020, arXiv:2004.03696.
    C. Guo, A. N. Christensen, A. B. Dahl, Y. Yi, M. R. Hannemose, "SA-UNetv2: rethinking
    spatial attention U-Net for retinal vessel segmentation", arXiv:2509.11774, 2025.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from numpyseg.layers.attention import CrossScaleSpatialAttention, SpatialAttention
from numpyseg.layers.concat import Concat
from numpyseg.layers.conv import Conv2d
from numpyseg.layers.conv_transpose import ConvTranspose2d
from numpyseg.layers.module import Module, check_input
from numpyseg.layers.pool import MaxPool2d
from numpyseg.models.blocks import ConvBlock, DoubleBlock
from numpyseg.errors import ConfigError
from numpyseg.validate import check_int, check_number

#: GroupNorm's number of groups in SA-UNetv2 (every width must be a multiple of it).
GROUPS = 8
#: The largest start width accepted: 16x the default, already ~66 million parameters.
MAX_BASE_CHANNELS = 256
#: Upper bounds that keep a mistyped value from allocating the machine's memory.
MAX_BLOCK_SIZE, MAX_IN_CHANNELS = 64, 64


def check_model_options(arch: str, base_channels, dropblock_rate, block_size, in_channels) -> dict:
    """Validate the values of a model config (from the command line or a checkpoint).

    base_channels: an integer from 1 to MAX_BASE_CHANNELS; for SA-UNetv2 a multiple of
    GROUPS, since its widths c, 2c, 3c, 4c are each split into 8 GroupNorm groups
    (3c divisible by 8 needs c divisible by 8).  dropblock_rate in [0, 1); block_size
    and in_channels positive integers below their bounds.

    Returns:
        The values converted: {'base_channels': int, 'dropblock_rate': float,
        'block_size': int, 'in_channels': int}.
    Raises:
        ConfigError: one line naming the first bad value.
    """
    multiple = GROUPS if arch == "sa_unetv2" else 1
    return {
        "base_channels": check_int(f"{arch} base_channels (--base-channels)", base_channels, low=multiple,
                                   high=MAX_BASE_CHANNELS, multiple=multiple),
        "dropblock_rate": check_number("dropblock_rate (--dropblock-rate)", dropblock_rate, low=0.0, high=1.0,
                                       high_open=True),
        "block_size": check_int("block_size (--block-size)", block_size, high=MAX_BLOCK_SIZE),
        "in_channels": check_int("in_channels", in_channels, high=MAX_IN_CHANNELS),
    }


class UNet3(Module):
    """A three-level U-Net with spatial attention at the bottleneck.

    Args:
        widths: channels of (enc1, enc2, enc3, bottleneck).
        norm: 'group' (GroupNorm + SiLU) or 'batch' (BatchNorm + ReLU).
        cross_scale_attention: CSA on the skips (v2) or plain skips (v1).
        seed: seeds the initialisation and the DropBlock masks.
        input_grad: whether backward returns dL/dx for the image (False: returns None
            and skips that work; see the module docstring).  Also the attribute
            `input_grad`, which can be changed at any time.

    Shapes: (N, H, W, in_channels) -> logits (N, H, W, 1), H and W multiples of 8.
    """

    def __init__(self, widths, *, in_channels=3, norm="group", cross_scale_attention=True,
                 dropblock_rate=0.15, block_size=7, seed=0, input_grad=True):
        super().__init__()
        rng = np.random.default_rng(seed)
        c1, c2, c3, c4 = widths
        opts = dict(dropblock_rate=dropblock_rate, block_size=block_size, norm=norm, rng=rng)
        self.in_channels = in_channels
        self.use_csa = cross_scale_attention
        # Attributes are assigned in forward order, so parameters() follows the forward pass.
        self.enc1 = DoubleBlock(in_channels, c1, **opts)
        self.input_grad = input_grad  # the first convolution's needs_input_grad
        self.pool1 = MaxPool2d()
        self.enc2 = DoubleBlock(c1, c2, **opts)
        self.pool2 = MaxPool2d()
        self.enc3 = DoubleBlock(c2, c3, **opts)
        self.pool3 = MaxPool2d()
        self.bottleneck1 = ConvBlock(c3, c4, **opts)
        self.attention = SpatialAttention(7, rng=rng)
        self.bottleneck2 = ConvBlock(c4, c4, **opts)
        self.up3 = ConvTranspose2d(c4, c3, 3, rng=rng)
        self.csa3 = CrossScaleSpatialAttention(7, rng=rng) if cross_scale_attention else None
        self.cat3 = Concat()
        self.dec3 = DoubleBlock(2 * c3, c3, **opts)
        self.up2 = ConvTranspose2d(c3, c2, 3, rng=rng)
        self.csa2 = CrossScaleSpatialAttention(7, rng=rng) if cross_scale_attention else None
        self.cat2 = Concat()
        self.dec2 = DoubleBlock(2 * c2, c2, **opts)
        self.up1 = ConvTranspose2d(c2, c1, 3, rng=rng)
        self.csa1 = CrossScaleSpatialAttention(7, rng=rng) if cross_scale_attention else None
        self.cat1 = Concat()
        self.dec1 = DoubleBlock(2 * c1, c1, **opts)
        self.head = Conv2d(c1, 1, 1, rng=rng)
        # (name, down-sampling factor, channels) of each row of summary()
        self._rows = [("enc1", 1, c1), ("pool1", 2, c1), ("enc2", 2, c2), ("pool2", 4, c2),
                      ("enc3", 4, c3), ("pool3", 8, c3), ("bottleneck1", 8, c4),
                      ("attention", 8, c4), ("bottleneck2", 8, c4),
                      ("up3", 4, c3), ("csa3", 4, c3), ("cat3", 4, 2 * c3), ("dec3", 4, c3),
                      ("up2", 2, c2), ("csa2", 2, c2), ("cat2", 2, 2 * c2), ("dec2", 2, c2),
                      ("up1", 1, c1), ("csa1", 1, c1), ("cat1", 1, 2 * c1), ("dec1", 1, c1),
                      ("head", 1, 1)]

    @property
    def input_grad(self) -> bool:
        """Whether backward computes and returns dL/dx for the image (else None)."""
        return self.enc1.block1.conv.needs_input_grad

    @input_grad.setter
    def input_grad(self, value: bool) -> None:
        self.enc1.block1.conv.needs_input_grad = bool(value)

    # ---------------------------------------------------------- gate maps
    #: The attention layers, coarsest first, with their down-sampling factor.
    ATTENTION_LAYERS = (("attention", 8), ("csa3", 4), ("csa2", 2), ("csa1", 1))

    def attention_layers(self) -> dict:
        """{name: layer} of the model's attention layers (SA-UNet has only 'attention')."""
        return {name: getattr(self, name) for name, _ in self.ATTENTION_LAYERS if getattr(self, name) is not None}

    @contextmanager
    def recording_gates(self):
        """Within the block, every attention layer keeps its gate s of each forward pass (`gate_maps`).

        Outside it nothing is recorded, at no cost (see numpyseg.layers.attention).
        """
        layers = self.attention_layers().values()
        for layer in layers:
            layer.record_gate = True
        try:
            yield self
        finally:
            for layer in layers:
                layer.record_gate = False

    def gate_maps(self) -> dict:
        """{layer name: gate s (N, H/f, W/f) float32 in (0, 1)} of the last forward pass recorded.

        f is the layer's down-sampling factor (ATTENTION_LAYERS); layers with no
        recorded gate are left out.
        """
        return {name: layer.gate for name, layer in self.attention_layers().items() if layer.gate is not None}

    # ---------------------------------------------------------------- forward
    def _skip(self, csa, cat, enc, up):
        """concat[up, CSA(enc, up)] (v2) or concat[up, enc] (v1)."""
        return cat(up, csa(enc, up) if csa is not None else enc)

    def forward(self, x):
        check_input(type(self).__name__, x, self.in_channels)
        if x.shape[1] % 8 or x.shape[2] % 8:
            raise ValueError(
                f"{type(self).__name__} needs H and W divisible by 8 (three 2x2 poolings), "
                f"got {x.shape[1]}x{x.shape[2]}: pad the image first"
            )
        skips = [self.enc1(x)]
        skips.append(self.enc2(self.pool1(skips[-1])))
        skips.append(self.enc3(self.pool2(skips[-1])))
        d = self.bottleneck2(self.attention(self.bottleneck1(self.pool3(skips[-1]))))
        # Each skip is popped, so that once its concatenation is built nothing here holds
        # it or the up-sampled map: at 592x592 this keeps about 75 MB fewer arrays alive
        # while the full-resolution decoder runs.
        d = self.dec3(self._skip(self.csa3, self.cat3, skips.pop(), self.up3(d)))
        d = self.dec2(self._skip(self.csa2, self.cat2, skips.pop(), self.up2(d)))
        d = self.dec1(self._skip(self.csa1, self.cat1, skips.pop(), self.up1(d)))
        return self.head(d)

    # --------------------------------------------------------------- backward
    def _skip_backward(self, csa, cat, dout):
        """Gradients (d_enc, d_up) of a skip: `up` feeds the concat and the CSA."""
        d_up, d_second = cat.backward(dout)
        if csa is None:
            return d_second, d_up
        d_enc, d_up_from_csa = csa.backward(d_second)
        return d_enc, d_up + d_up_from_csa

    def backward(self, dout):
        """dout: dL/dlogits (N, H, W, 1).  Fills every Parameter.grad; returns dL/dx (None unless input_grad)."""
        d = self.dec1.backward(self.head.backward(dout))
        d_e1, d_u1 = self._skip_backward(self.csa1, self.cat1, d)
        d = self.dec2.backward(self.up1.backward(d_u1))
        d_e2, d_u2 = self._skip_backward(self.csa2, self.cat2, d)
        d = self.dec3.backward(self.up2.backward(d_u2))
        d_e3, d_u3 = self._skip_backward(self.csa3, self.cat3, d)
        d = self.bottleneck2.backward(self.up3.backward(d_u3))
        d = self.bottleneck1.backward(self.attention.backward(d))
        # each encoder output went to the next pool and to its skip: add both gradients
        d = self.enc3.backward(self.pool3.backward(d) + d_e3)
        d = self.enc2.backward(self.pool2.backward(d) + d_e2)
        return self.enc1.backward(self.pool1.backward(d) + d_e1)

    # ------------------------------------------------------ receptive field
    def receptive_radius(self) -> int:
        """How far (input pixels) an output logit can see: the halo tiled inference needs.

        Once the normalisation statistics are fixed (BatchNorm in eval mode, GroupNorm
        with the whole image's statistics), every layer is local, and logit (i, j)
        depends only on input pixels within this Chebyshev distance of (i, j).  Walking
        the forward pass with r the radius so far and s the current down-sampling factor:

            k x k convolution at scale s      r += (k // 2) * s
            2 x 2 max-pool                    r += s, then s *= 2
            3 x 3 stride-2 transposed conv    r += s (one coarse pixel each side), then s /= 2
            spatial / cross-scale attention   r += (7 // 2) * s   (its 7 x 7 gate convolution)

        For the three-level U-Nets this gives 110 with CSA on the skips (SA-UNetv2)
        and 89 without (SA-UNet).  Returns an int (pixels).
        """
        r, s = 0, 1
        block = 2 * (3 // 2)          # a DoubleBlock: two 3 x 3 convolutions
        gate = self.attention.conv.kernel_size // 2
        for _ in range(3):            # enc1..enc3, each followed by its pool
            r += block * s + s
            s *= 2
        r += (3 // 2) * s + gate * s + (3 // 2) * s   # bottleneck1, attention, bottleneck2
        for csa in (self.csa3, self.csa2, self.csa1):
            r += s                    # the transposed convolution up to the finer scale
            s //= 2
            if csa is not None:
                r += (csa.conv.kernel_size // 2) * s
            r += block * s            # the decoder's DoubleBlock
        return r

    # ---------------------------------------------------------------- summary
    def summary(self, input_size=(592, 592), batch=None) -> str:
        """A Keras-style table: layer, output shape, parameters, and the total."""
        h, w = input_size
        lines = [f"Model: {type(self).__name__}", "-" * 68,
                 f"{'Layer (type)':<38}{'Output shape':<20}{'Params':>10}", "=" * 68]
        nb = "None" if batch is None else str(batch)
        lines.append(f"{'input':<38}{f'({nb}, {h}, {w}, {self.in_channels})':<20}{0:>10,}")
        for name, factor, channels in self._rows:
            module = getattr(self, name)
            if module is None:
                continue
            count = module.num_parameters()
            shape = f"({nb}, {h // factor}, {w // factor}, {channels})"
            lines.append(f"{f'{name} ({type(module).__name__})':<38}{shape:<20}{count:>10,}")
        lines += ["=" * 68, f"Total params: {self.num_parameters():,}", "-" * 68]
        return "\n".join(lines)


class SAUNetV2(UNet3):
    """SA-UNetv2: widths c, 2c, 3c, 4c; GroupNorm + SiLU; CSA on every skip.

    With the defaults it has exactly 260,521 parameters.
    """

    def __init__(self, base_channels=16, dropblock_rate=0.15, block_size=7, in_channels=3, seed=0,
                 input_grad=True):
        checked = check_model_options("sa_unetv2", base_channels, dropblock_rate, block_size, in_channels)
        c, dropblock_rate, block_size, in_channels = (checked["base_channels"], checked["dropblock_rate"],
                                                      checked["block_size"], checked["in_channels"])
        super().__init__((c, 2 * c, 3 * c, 4 * c), in_channels=in_channels, norm="group",
                         cross_scale_attention=True, dropblock_rate=dropblock_rate,
                         block_size=block_size, seed=seed, input_grad=input_grad)
        self.config = {"arch": "sa_unetv2", "base_channels": c, "dropblock_rate": dropblock_rate,
                       "block_size": block_size, "in_channels": in_channels}


class SAUNet(UNet3):
    """SA-UNet (v1): widths c, 2c, 4c, 8c; BatchNorm + ReLU; plain skips."""

    def __init__(self, base_channels=16, dropblock_rate=0.15, block_size=7, in_channels=3, seed=0,
                 input_grad=True):
        checked = check_model_options("sa_unet", base_channels, dropblock_rate, block_size, in_channels)
        c, dropblock_rate, block_size, in_channels = (checked["base_channels"], checked["dropblock_rate"],
                                                      checked["block_size"], checked["in_channels"])
        super().__init__((c, 2 * c, 4 * c, 8 * c), in_channels=in_channels, norm="batch",
                         cross_scale_attention=False, dropblock_rate=dropblock_rate,
                         block_size=block_size, seed=seed, input_grad=input_grad)
        self.config = {"arch": "sa_unet", "base_channels": c, "dropblock_rate": dropblock_rate,
                       "block_size": block_size, "in_channels": in_channels}


ARCHITECTURES = {"sa_unetv2": SAUNetV2, "sa_unet": SAUNet}


def build_model(config: dict) -> UNet3:
    """Build a model from its `config` dict (as stored in a checkpoint).

    Keys other than 'arch' are constructor arguments, so {"input_grad": False} is
    accepted too (it is not part of the stored config: it does not change the model).

    Raises:
        ConfigError: an unknown architecture or a value out of range (see
            `check_model_options`).
    """
    options = dict(config)
    arch = options.pop("arch", None)
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**options)
