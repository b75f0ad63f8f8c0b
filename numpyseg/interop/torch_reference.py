"""The same networks written in PyTorch, for parity tests and the speed benchmark.

Optional: needs `pip install numpyseg[parity]`.  The PyTorch modules carry the
same dotted names as the NumPy ones (``enc1.block1.conv.weight``), so weights are
copied by name; only the layouts differ:

    Conv2d weight           NumPy HWIO (kh, kw, in, out)   ->  torch (out, in, kh, kw)
    ConvTranspose2d weight  NumPy (kh, kw, out, in)        ->  torch (in, out, kh, kw)

both are `w.transpose(3, 2, 0, 1)`.  Activations are NCHW in torch, NHWC here.
"""

from __future__ import annotations

import numpy as np

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("numpyseg.interop.torch_reference needs PyTorch: pip install numpyseg[parity]") from error


class TorchDropBlock(nn.Module):
    """DropBlock with the seed-and-expand construction (training only)."""

    def __init__(self, rate, block_size):
        super().__init__()
        self.rate, self.block_size = rate, block_size

    def forward(self, x):
        if not self.training or self.rate == 0:
            return x
        n, c, h, w = x.shape
        b = min(self.block_size, h, w)
        gamma = self.rate / b**2 * (h * w) / ((h - b + 1) * (w - b + 1))
        valid = torch.zeros(1, 1, h, w, dtype=x.dtype, device=x.device)
        valid[..., b // 2: h - (b - 1) // 2, b // 2: w - (b - 1) // 2] = 1
        seeds = (torch.rand(n, c, h, w, device=x.device) < gamma).to(x.dtype) * valid
        dropped = F.max_pool2d(seeds, b, stride=1, padding=b // 2)[..., :h, :w]
        mask = 1 - dropped
        return x * mask * (mask.numel() / mask.sum().clamp(min=1))


class TorchConvBlock(nn.Module):
    def __init__(self, cin, cout, rate, block_size, norm):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.drop = TorchDropBlock(rate, block_size)
        if norm == "group":
            self.norm, self.act = nn.GroupNorm(8, cout, eps=1e-3), nn.SiLU()
        else:
            self.norm, self.act = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01), nn.ReLU()

    def forward(self, x):
        return self.act(self.norm(self.drop(self.conv(x))))


class TorchDoubleBlock(nn.Module):
    def __init__(self, cin, cout, rate, block_size, norm):
        super().__init__()
        self.block1 = TorchConvBlock(cin, cout, rate, block_size, norm)
        self.block2 = TorchConvBlock(cout, cout, rate, block_size, norm)

    def forward(self, x):
        return self.block2(self.block1(x))


class TorchSpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        a = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv(a))


class TorchCSA(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, enc, dec):
        a = torch.cat([enc.mean(1, keepdim=True), dec.mean(1, keepdim=True)], 1)
        return enc * torch.sigmoid(self.conv(a))


class TorchUp(nn.Module):
    """Keras 'same' stride-2 transposed conv: padding 0, keep the first 2H x 2W."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2)

    def forward(self, x):
        h, w = x.shape[2:]
        return self.conv(x)[:, :, : 2 * h, : 2 * w]


class TorchUNet3(nn.Module):
    """PyTorch twin of numpyseg.models.unet.UNet3 (NCHW)."""

    def __init__(self, widths, in_channels=3, norm="group", cross_scale_attention=True,
                 dropblock_rate=0.15, block_size=7):
        super().__init__()
        c1, c2, c3, c4 = widths
        o = (dropblock_rate, block_size, norm)
        self.enc1, self.enc2, self.enc3 = (TorchDoubleBlock(in_channels, c1, *o),
                                           TorchDoubleBlock(c1, c2, *o), TorchDoubleBlock(c2, c3, *o))
        self.bottleneck1 = TorchConvBlock(c3, c4, *o)
        self.attention = TorchSpatialAttention()
        self.bottleneck2 = TorchConvBlock(c4, c4, *o)
        self.up3, self.up2, self.up1 = TorchUp(c4, c3), TorchUp(c3, c2), TorchUp(c2, c1)
        csa = TorchCSA if cross_scale_attention else (lambda: None)
        self.csa3, self.csa2, self.csa1 = csa(), csa(), csa()
        self.dec3 = TorchDoubleBlock(2 * c3, c3, *o)
        self.dec2 = TorchDoubleBlock(2 * c2, c2, *o)
        self.dec1 = TorchDoubleBlock(2 * c1, c1, *o)
        self.head = nn.Conv2d(c1, 1, 1)

    @staticmethod
    def _skip(csa, enc, up):
        return torch.cat([up, csa(enc, up) if csa is not None else enc], 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        b = self.bottleneck2(self.attention(self.bottleneck1(F.max_pool2d(e3, 2))))
        d3 = self.dec3(self._skip(self.csa3, e3, self.up3(b)))
        d2 = self.dec2(self._skip(self.csa2, e2, self.up2(d3)))
        d1 = self.dec1(self._skip(self.csa1, e1, self.up1(d2)))
        return self.head(d1)


def bce_mcc_loss(logits, target, mask, bce_weight=0.5, mcc_weight=0.5, pos_weight=1.0):
    """numpyseg.losses.bce_mcc_loss in PyTorch: bce_weight * WBCE + mcc_weight * (1 - soft MCC).

    Args:
        logits, target, mask: tensors of one shape (target and mask in [0, 1]).
        pos_weight: the positive-class weight w of the BCE (a number).
    Returns:
        The scalar loss tensor.  BCE is the masked mean of
        (1 - y + w y) softplus(z) - w y z; MCC uses the soft counts over the whole batch
        and eps 1e-7 (formulas: numpyseg.losses.bce and numpyseg.losses.mcc).
    """
    w = torch.as_tensor(float(pos_weight), dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=mask, pos_weight=w,
                                             reduction="sum") / mask.sum().clamp(min=1)
    p = torch.sigmoid(logits)
    tp, tn = (mask * p * target).sum(), (mask * (1 - p) * (1 - target)).sum()
    fp, fn = (mask * p * (1 - target)).sum(), (mask * (1 - p) * target).sum()
    a = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    # D = sqrt(A), with the gradient through it taken as 0 at A = 0 (as numpyseg.losses.mcc
    # does: N = 0 there), not 0 * inf = NaN, e.g. on a patch without vessels
    d = torch.where(a > 0, torch.sqrt(torch.where(a > 0, a, torch.ones_like(a))), torch.zeros_like(a))
    mcc = (tp * tn - fp * fn) / (d + 1e-7)
    return bce_weight * bce + mcc_weight * (1 - mcc)


def torch_name(numpy_name: str) -> str:
    """Map a numpyseg parameter name to the twin's: transposed convs sit one level down."""
    for up in ("up1", "up2", "up3"):
        if numpy_name.startswith(up + "."):
            return f"{up}.conv.{numpy_name[len(up) + 1:]}"
    return numpy_name


def torch_twin(model) -> TorchUNet3:
    """A PyTorch copy of a numpyseg UNet3 (SAUNetV2 or SAUNet) with the same weights."""
    cfg = model.config
    c = cfg["base_channels"]
    widths = (c, 2 * c, 3 * c, 4 * c) if cfg["arch"] == "sa_unetv2" else (c, 2 * c, 4 * c, 8 * c)
    twin = TorchUNet3(widths, in_channels=cfg["in_channels"],
                      norm="group" if cfg["arch"] == "sa_unetv2" else "batch",
                      cross_scale_attention=cfg["arch"] == "sa_unetv2",
                      dropblock_rate=cfg["dropblock_rate"], block_size=cfg["block_size"])
    load_into_torch(twin, model.state_dict())
    return twin


def load_into_torch(twin: nn.Module, state: dict[str, np.ndarray]) -> None:
    """Copy a numpyseg state dict into the twin, transposing 4-D kernels."""
    target = twin.state_dict()
    for name, value in state.items():
        value = np.asarray(value)
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        key = torch_name(name)
        target[key] = torch.from_numpy(np.ascontiguousarray(value)).to(target[key].dtype)
    twin.load_state_dict(target)


def torch_grads_as_numpy(twin: nn.Module, model) -> dict[str, np.ndarray]:
    """The twin's parameter gradients in numpyseg names and layouts."""
    params = dict(twin.named_parameters())
    grads = {}
    for name, _ in model.named_parameters():
        g = params[torch_name(name)].grad.detach().numpy()
        grads[name] = g.transpose(2, 3, 1, 0) if g.ndim == 4 else g
    return grads
