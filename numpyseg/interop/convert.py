"""`numpyseg export --format`: one entry point for every conversion.

    format   source                          writes
    npz      a twin's .pt state dict         numpyseg weights (.npz)     (PyTorch -> numpyseg)
    onnx     weights .npz or a run folder    an ONNX model (.onnx)
    torch    weights .npz or a run folder    the twin's state dict (.pt)

(`--format npz` from a run folder is the plain `numpyseg export`, with the run's
record: numpyseg.training.export.)
"""

from __future__ import annotations

from pathlib import Path

from numpyseg.errors import ConfigError

SUFFIXES = {"npz": ".npz", "onnx": ".onnx", "torch": ".pt"}


def is_torch_file(source) -> bool:
    """Whether `source` names a PyTorch state dict (.pt / .pth) rather than numpyseg weights."""
    return Path(source).suffix.lower() in (".pt", ".pth")


def check_output(out, fmt: str, overwrite: bool = False) -> Path:
    """The output path, checked: the format's suffix, and no existing file unless `overwrite`.

    Raises:
        ConfigError: unknown format, wrong suffix, or the file exists.
    """
    if fmt not in SUFFIXES:
        raise ConfigError(f"--format must be one of {', '.join(SUFFIXES)}, got {fmt!r}")
    out = Path(out)
    if out.suffix.lower() != SUFFIXES[fmt]:
        raise ConfigError(f"--format {fmt} writes a {SUFFIXES[fmt]} file, got --out {out}")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists: choose another --out or remove it first")
    return out


def export_as(source, out, fmt: str, *, which: str = "best", overwrite: bool = False) -> Path:
    """Convert the weights in `source` to format `fmt`, written to `out`; returns the path.

    `which` picks a run folder's 'best' or 'last' checkpoint.

    Raises:
        ConfigError: bad format/suffix, existing output, a missing optional package.
        CheckpointError: the source cannot be read.
    """
    out = check_output(out, fmt, overwrite)
    if fmt == "onnx":
        from numpyseg.interop.onnx_export import export_onnx

        return export_onnx(source, out, which)
    if fmt == "torch":
        from numpyseg.interop.torch_bridge import export_torch

        return export_torch(source, out, which)
    if not is_torch_file(source):
        raise ConfigError(f"--format npz converts a PyTorch state dict (.pt or .pth), got {source}")
    from numpyseg.interop.torch_bridge import import_torch

    return import_torch(source, out)
