"""numpyseg weights <-> a state dict of the PyTorch twin (numpyseg.interop.torch_reference).

Optional: needs PyTorch (`pip install numpyseg[parity]`).

    numpyseg export runs/drive --format torch --out sa_unetv2.pt    numpyseg -> PyTorch
    numpyseg export sa_unetv2.pt --format npz --out weights.npz     PyTorch -> numpyseg

The .pt file is a plain state dict (parameter name -> tensor) of TorchUNet3, loadable
with `torch.load(path, weights_only=True)` and `twin.load_state_dict(...)`.  The names
are numpyseg's, except that the transposed convolutions sit one level down
(`up1.weight` -> `up1.conv.weight`, see torch_reference.torch_name); 4-D kernels are
transposed from numpyseg's HWIO to PyTorch's OIHW (transposed convs: (kh, kw, out, in)
-> (in, out, kh, kw)), both `w.transpose(3, 2, 0, 1)`, and back with
`w.transpose(2, 3, 1, 0)`.  BatchNorm's `num_batches_tracked` (SA-UNet v1) has no
numpyseg counterpart: it is written as 0 and ignored on the way back.

A state dict does not say which architecture it belongs to; on the way back it is
read from the shapes: cross-scale attention weights (csa1.conv.weight) mean SA-UNetv2,
their absence SA-UNet; the first convolution's kernel (C, C_in, 3, 3) gives
base_channels C and in_channels C_in.  DropBlock's rate and block size (training
only) cannot be seen in the weights; they take the given values (default: the spec's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from numpyseg.errors import CheckpointError
from numpyseg.interop.weights import load_weights, require


def _torch_reference():
    """numpyseg.interop.torch_reference, or ConfigError naming the extra to install."""
    require("torch", "parity")
    from numpyseg.interop import torch_reference

    return torch_reference


def torch_state_dict(model) -> dict:
    """The state dict of the PyTorch twin of a numpyseg UNet3 (tensors, PyTorch names and layouts)."""
    return _torch_reference().torch_twin(model).state_dict()


def config_from_torch_state(state: dict, *, dropblock_rate: float = 0.15, block_size: int = 7) -> dict:
    """The numpyseg model config a twin's state dict belongs to (see the module docstring).

    Raises:
        CheckpointError: the state dict has no first convolution kernel of rank 4.
    """
    first = state.get("enc1.block1.conv.weight")
    if first is None or len(first.shape) != 4:
        raise CheckpointError("not a state dict of the numpyseg PyTorch twin: no 4-D 'enc1.block1.conv.weight'")
    return {"arch": "sa_unetv2" if "csa1.conv.weight" in state else "sa_unet",
            "base_channels": int(first.shape[0]), "dropblock_rate": float(dropblock_rate),
            "block_size": int(block_size), "in_channels": int(first.shape[1])}


def numpy_state(state: dict, model) -> dict[str, np.ndarray]:
    """A twin's state dict in numpyseg's names and layouts, for `model.load_state_dict`.

    Raises:
        CheckpointError: an entry the model needs is missing, or one is left over.
    """
    torch_name = _torch_reference().torch_name
    wanted = {torch_name(name): name for name in model.state_dict()}
    extra = sorted(k for k in state if k not in wanted and not k.endswith("num_batches_tracked"))
    missing = sorted(k for k in wanted if k not in state)
    if missing or extra:
        raise CheckpointError(f"state dict does not fit {model.config['arch']}: missing {missing[:3]}, "
                              f"unexpected {extra[:3]}")
    arrays = {}
    for key, name in wanted.items():
        value = state[key].detach().cpu().numpy().astype(np.float32)
        arrays[name] = np.ascontiguousarray(value.transpose(2, 3, 1, 0) if value.ndim == 4 else value)
    return arrays


def load_torch_state(path) -> dict:
    """Read a .pt state dict safely (weights_only: no code runs); tensors on the CPU.

    Raises:
        CheckpointError: missing file, not a state dict.
    """
    torch = require("torch", "parity")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"state dict {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch's own errors
        raise CheckpointError(f"state dict {path} cannot be read ({type(error).__name__}: "
                              f"{' '.join(str(error).split())[:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict (name -> tensor)")
    return state


def export_torch(source, out, which: str = "best") -> Path:
    """Write the twin's state dict of the weights in `source` (an .npz or a run folder) to `out` (.pt)."""
    torch = require("torch", "parity")
    model, _ = load_weights(source, which)
    state = torch_state_dict(model)
    from numpyseg.atomic import atomic_write

    return atomic_write(Path(out), lambda f: torch.save(state, f))


def model_from_torch(path, *, dropblock_rate: float = 0.15, block_size: int = 7):
    """A numpyseg model (eval mode) holding the weights of a twin's .pt state dict."""
    from numpyseg.models.unet import build_model

    state = load_torch_state(path)
    model = build_model(config_from_torch_state(state, dropblock_rate=dropblock_rate, block_size=block_size))
    model.load_state_dict(numpy_state(state, model))
    model.eval()
    return model


def import_torch(path, out, *, dropblock_rate: float = 0.15, block_size: int = 7) -> Path:
    """Write a twin's .pt state dict as numpyseg weights (.npz, no optimiser state).

    The file loads everywhere numpyseg takes weights (`predict`, `evaluate`, `demo`);
    its `extra["imported_from"]` names the .pt file (its name only).
    """
    from numpyseg.checkpoint import save_checkpoint

    model = model_from_torch(path, dropblock_rate=dropblock_rate, block_size=block_size)
    return save_checkpoint(Path(out), model, None, config=model.config, epoch=0,
                           extra={"imported_from": Path(path).name})
