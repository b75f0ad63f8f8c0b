"""Checkpoints: model weights, optimiser state and metadata in one .npz file.

Layout of the file (a zip of .npy arrays, readable with np.load(allow_pickle=False)):

    model/<param or buffer name>   e.g. 'model/enc1.conv1.weight'   Module.state_dict()
    optim/<key>                    e.g. 'optim/m.enc1.conv1.weight'  Optimizer.state_dict()
    meta                           uint8 array: UTF-8 JSON
                                   {"format": "numpyseg-checkpoint", "version": 1,
                                    "config": {...architecture...}, "epoch": 12, "extra": {...},
                                    "fov_diameter": 540.0}

"fov_diameter" (optional) is the field-of-view diameter, in pixels, of the images
the weights were trained on (see numpyseg.prediction): prediction rescales a
photograph whose field of view differs from it.  Checkpoints written before it
existed have none; numpyseg.prediction then assumes DRIVE's.

Format versions.  save_checkpoint (the only writer: training, export, import) always
writes FORMAT_VERSION.  load_checkpoint reads every version from 1 up to FORMAT_VERSION
(a later change of the layout keeps reading the earlier ones) and refuses a newer
one, written by a later numpyseg, with a one-line error saying to upgrade.

Nothing is pickled, so loading a checkpoint cannot run code.  The file is written
atomically: into a temporary file in the same folder, flushed and fsync'ed, then
renamed over the target with os.replace (atomic on POSIX and Windows), so a crash or
a full disk mid-write leaves either the old checkpoint or the new one, never half a
file.

Every problem found while loading or restoring (missing file, truncated or corrupt
zip, bad JSON, a format version newer than this numpyseg reads, a NaN or infinite
model weight, missing or
misshapen array, a different architecture) raises CheckpointError, a ValueError whose one-line message names the
file and the problem.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numpyseg.atomic import atomic_write
from numpyseg.errors import CheckpointError  # noqa: F401  (re-exported)

FORMAT_NAME = "numpyseg-checkpoint"
FORMAT_VERSION = 1
_MODEL, _OPTIM, _META = "model/", "optim/", "meta"





@dataclass
class Checkpoint:
    """The contents of a checkpoint file.

    Attributes:
        model_state: {name: array} for Module.load_state_dict.
        optim_state: {key: array} for Optimizer.load_state_dict ({} if none was saved).
        config: the architecture config saved with the model.
        epoch: the epoch the checkpoint was written after.
        extra: free-form JSON data (e.g. scheduler / early-stopping state, metrics).
        version: the file format version.
        path: the file it was read from (used in error messages).
        fov_diameter: the field-of-view diameter (pixels) of the training images, or
            None when the checkpoint does not record it (older checkpoints).
    """

    model_state: dict[str, np.ndarray]
    optim_state: dict[str, np.ndarray]
    config: dict
    epoch: int
    extra: dict = field(default_factory=dict)
    version: int = FORMAT_VERSION
    path: str = "<memory>"
    fov_diameter: float | None = None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _positive_number(value) -> bool:
    """True for a finite number > 0 (bool excluded)."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and bool(np.isfinite(value)) and value > 0)


def _json_default(value):
    """Let numpy scalars and arrays in config/extra become JSON numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _normalise(obj):
    """obj as it reads back from JSON (tuples -> lists, numpy scalars -> Python)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _write_npz(fileobj, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays as an uncompressed .npz into an open binary file."""
    np.savez(fileobj, **arrays)


def save_checkpoint(path, model, optimizer=None, *, config: dict, epoch: int,
                    extra: dict | None = None, fov_diameter: float | None = None) -> Path:
    """Write model (and optimiser) state plus metadata to one .npz file, atomically.

    Args:
        path: the file to write (used as given; '.npz' is not appended).
        model: a Module (its state_dict() is saved).
        optimizer: an optimiser with state_dict(), or None.
        config: the architecture config (JSON-serialisable dict) that rebuilds the model.
        epoch: the number of the epoch just finished.
        extra: optional JSON-serialisable dict (scheduler state, metrics, ...).
        fov_diameter: the field-of-view diameter (pixels) of the training images, or
            None to record none.

    Returns:
        The path written.

    Raises:
        ValueError: config / extra are not JSON-serialisable dicts; fov_diameter is
            not a positive number.
    """
    path = Path(path)
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise ValueError(f"extra must be a dict or None, got {type(extra).__name__}")
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": config,
            "epoch": int(epoch), "extra": extra or {}}
    if fov_diameter is not None:
        if not _positive_number(fov_diameter):
            raise ValueError(f"checkpoint fov_diameter must be a positive number of pixels, got {fov_diameter!r}")
        meta["fov_diameter"] = float(fov_diameter)
    try:
        text = json.dumps(meta, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint config/extra are not JSON-serialisable: {_one_line(exc)}") from None

    arrays = {_MODEL + k: np.asarray(v) for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({_OPTIM + k: np.asarray(v) for k, v in optimizer.state_dict().items()})
    arrays[_META] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    return atomic_write(path, lambda f: _write_npz(f, arrays), durable=True)


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint (np.load with allow_pickle=False).

    Raises:
        CheckpointError: one line naming the file and the problem (missing, truncated
            or corrupt file, bad metadata, other format version, a model parameter
            holding NaN or infinite values: see `first_non_finite`).
    """
    name = str(path)

    def fail(problem: str):
        return CheckpointError(_one_line(f"checkpoint {name}: {problem}"))

    if os.path.isdir(path):
        raise fail(f"is a folder: name a checkpoint file in it, e.g. {os.path.join(name, 'best.npz')}")
    if not os.path.isfile(path):
        raise fail("file not found")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise fail(f"cannot be opened ({exc.strerror or exc})") from None
    if not head:
        raise fail("file is empty")
    if head != b"PK\x03\x04":  # every .npz is a zip, whose first local header starts so
        raise fail("not an .npz file (no zip header)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}  # reads (and CRC-checks) each member
    except zipfile.BadZipFile as exc:
        raise fail(f"not a valid .npz (truncated or corrupt zip: {exc})") from None
    except Exception as exc:  # damaged members surface as ValueError, EOFError, zlib.error, ...
        raise fail(f"cannot be read ({type(exc).__name__}: {exc})") from None

    if _META not in arrays:
        raise fail(f"has no '{_META}' entry (not a numpyseg checkpoint)")
    try:
        meta = json.loads(arrays.pop(_META).astype(np.uint8).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise fail(f"bad metadata JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise fail("metadata does not describe a numpyseg checkpoint")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise fail(f"bad format version {version!r} in its metadata")
    if version > FORMAT_VERSION:
        raise fail(f"format version {version} is newer than this numpyseg reads (up to {FORMAT_VERSION}): "
                   f"upgrade numpyseg (pip install --upgrade numpyseg)")
    for key in ("config", "epoch", "extra"):
        if key not in meta:
            raise fail(f"metadata has no '{key}'")
    if not isinstance(meta["config"], dict) or not isinstance(meta["extra"], dict):
        raise fail("metadata 'config' and 'extra' must be JSON objects")

    fov_diameter = meta.get("fov_diameter")
    if fov_diameter is not None and not _positive_number(fov_diameter):
        raise fail(f"metadata 'fov_diameter' must be a positive number of pixels, got {fov_diameter!r}")

    model_state, optim_state = {}, {}
    for key, value in arrays.items():
        if key.startswith(_MODEL):
            model_state[key[len(_MODEL):]] = value
        elif key.startswith(_OPTIM):
            optim_state[key[len(_OPTIM):]] = value
        else:
            raise fail(f"unexpected entry '{key}'")
    problem = first_non_finite(model_state)
    if problem is not None:
        raise fail(problem)
    return Checkpoint(model_state=model_state, optim_state=optim_state, config=meta["config"],
                      epoch=int(meta["epoch"]), extra=meta["extra"], version=version, path=name,
                      fov_diameter=None if fov_diameter is None else float(fov_diameter))


def first_non_finite(state: dict[str, np.ndarray]) -> str | None:
    """Describe the first parameter (in file order) holding NaN or infinite values, or None.

    A model with such a weight predicts nonsense (e.g. no vessel anywhere)
    without failing, so `load_checkpoint` refuses it.  Integer arrays are
    always finite and skipped.
    """
    for name, value in state.items():
        value = np.asarray(value)
        if value.dtype.kind in "fc":
            bad = value.size - int(np.count_nonzero(np.isfinite(value)))
            if bad:
                return (f"parameter '{name}' holds {bad} NaN or infinite values of {value.size}: the "
                        f"checkpoint is damaged (a diverged run?); use an earlier checkpoint")
    return None


def config_difference(saved: dict, current: dict) -> str | None:
    """The first key (sorted) whose value differs between two configs, or None."""
    saved, current = _normalise(saved), _normalise(current)
    missing = object()
    for key in sorted(set(saved) | set(current)):
        if saved.get(key, missing) != current.get(key, missing):
            return key
    return None


def restore(model, checkpoint, optimizer=None) -> Checkpoint:
    """Load a checkpoint's states into `model` (and `optimizer`); all or nothing.

    If the model has a `config` dict attribute it must equal the checkpoint's config
    (compared as JSON, so tuples and lists match).

    Args:
        model: the Module to fill.
        checkpoint: a Checkpoint, or a path to load one from.
        optimizer: an optimiser to fill from the saved optimiser state, or None.

    Returns:
        The Checkpoint (for its epoch, config and extra).

    Raises:
        CheckpointError: one line naming the file and the differing config key, the
            missing / unexpected / misshapen entry, or a missing optimiser state.
            On error neither the model nor the optimiser is changed.
    """
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)

    def fail(problem: str):
        return CheckpointError(_one_line(f"checkpoint {checkpoint.path}: {problem}"))

    current = getattr(model, "config", None)
    if isinstance(current, dict):
        key = config_difference(checkpoint.config, current)
        if key is not None:
            saved_v = _normalise(checkpoint.config).get(key, "<absent>")
            model_v = _normalise(current).get(key, "<absent>")
            raise fail(f"architecture config differs at '{key}': checkpoint has {saved_v!r}, "
                       f"model has {model_v!r}")
    if optimizer is not None and not checkpoint.optim_state:
        raise fail("has no optimiser state")

    backup = model.state_dict()
    try:
        model.load_state_dict(checkpoint.model_state)
    except ValueError as exc:
        raise fail(f"model {exc}") from None
    if optimizer is not None:
        try:
            optimizer.load_state_dict(checkpoint.optim_state)
        except ValueError as exc:
            model.load_state_dict(backup)
            raise fail(f"optimiser {exc}") from None
    return checkpoint
