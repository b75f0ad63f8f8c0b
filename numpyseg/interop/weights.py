"""Which weights a path names, and the one-line error for a missing optional package.

A path given to `numpyseg export --format ...` is either a weights file (.npz: a
checkpoint, e.g. the shipped numpyseg/weights/sa_unetv2_drive.npz) or a run folder
written by `numpyseg train`, whose best.npz (or last.npz) is taken.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from numpyseg.errors import CheckpointError, ConfigError


def weights_path(source, which: str = "best") -> Path:
    """The checkpoint file `source` names: itself, or RUN_DIR/best.npz for a run folder.

    Args:
        source: a weights .npz or a run folder.
        which: for a run folder, 'best' (best.npz) or 'last' (last.npz).

    Raises:
        CheckpointError: the path does not exist, or the folder holds no best.npz.
    """
    from numpyseg.training.state import BEST, LAST

    source = Path(source)
    if source.is_dir():
        name = LAST if which == "last" else BEST
        if not (source / name).is_file():
            raise CheckpointError(f"run folder {source} has no {name}: give a weights .npz or a folder "
                                  f"written by numpyseg train")
        return source / name
    if not source.exists():
        raise CheckpointError(f"weights {source} not found: give a weights .npz or a run folder")
    return source


def load_weights(source, which: str = "best"):
    """(model, checkpoint) for a weights .npz or a run folder (see weights_path), the model in eval mode."""
    from numpyseg.inference import load_model

    return load_model(weights_path(source, which))


def require(module: str, extra: str):
    """Import an optional package, or raise ConfigError naming the extra that installs it.

    Args:
        module: the import name, e.g. 'onnx'.
        extra: the numpyseg extra that provides it, e.g. 'onnx' (pip install numpyseg[onnx]).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"this needs the Python package '{module}': "
                          f"pip install 'numpyseg[{extra}]'") from None
