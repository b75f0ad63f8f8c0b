"""Turn a finished training run into a weights file for `predict`, `evaluate` and `demo`.

A run folder (see numpyseg.training.state) holds best.npz / last.npz, which carry
the Adam moments and everything a resume needs: about three times the size of the
weights.  `export_run` keeps only the model weights, and writes beside them the
record a reader needs to trust them:

    OUT.npz          the weights (a checkpoint without optimiser state), whose
                     `extra["training"]` holds the summary below
    OUT.md           the record: the exact `numpyseg train` command, seed, data and
                     split, wall time, epochs, and the validation figures of the epoch kept
    OUT_curves.png   the run's training curves

The command is rebuilt from the run's stored config (TrainConfig.command_line), so
it is the command that defines the run, whichever way it was typed.  The record names
no folder of the machine: paths are written as folder names, relative to the folder
holding them (numpyseg.training.portable).

Nothing of the user's is overwritten: OUT.npz may replace only an earlier export
(weights with a training record and no optimiser state), never a run's own
checkpoints or any other file, and OUT.md / OUT_curves.png only beside such an
export (`check_export_target`).
"""

from __future__ import annotations

from pathlib import Path

from numpyseg.atomic import atomic_write_bytes, refuse_to_overwrite
from numpyseg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpyseg.errors import ConfigError
from numpyseg.training.config import TrainConfig
from numpyseg.training.portable import portable_command, portable_config, portable_path

VAL_KEYS = ("val_loss", "val_acc", "val_sen", "val_spe", "val_f1", "val_iou", "val_mcc", "val_auc")
CURVE_KEYS = ("epoch", "elapsed_s", "lr", "train_loss", "val_loss", "val_f1", "val_auc")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def training_summary(run_dir, which: str = "best") -> dict:
    """What the record says about a run: config, command, split, time, figures.

    Args:
        run_dir: a folder written by `numpyseg train`.
        which: 'best' (best.npz, the epoch with the best monitored score) or 'last'.
    Raises:
        ConfigError: `which` is neither 'best' nor 'last', or the folder is missing.
        CheckpointError: its checkpoints are missing or not training states.
    """
    run_dir = Path(run_dir)
    if which not in ("best", "last"):
        raise ConfigError(f"which must be 'best' or 'last', got {which!r}")
    if run_dir.is_file():
        raise ConfigError(f"{run_dir} is a file, not a run folder: exporting as npz needs the folder written "
                          f"by numpyseg train; a weights file converts with --format onnx or --format torch")
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} not found: name a folder written by numpyseg train")
    kept = load_checkpoint(run_dir / f"{which}.npz")
    final = load_checkpoint(run_dir / "last.npz")
    for checkpoint in (kept, final):
        if "train_config" not in checkpoint.extra:
            raise CheckpointError(f"checkpoint {checkpoint.path}: not a training state written by numpyseg train")
    config = portable_config(TrainConfig.from_dict(kept.extra["train_config"]))
    history = final.extra.get("history") or []
    record = next((r for r in history if r.get("epoch") == kept.epoch), {})
    return {
        "command": config.command_line(portable_path(run_dir.resolve())),
        "config": config.to_dict(),
        "seed": config.seed,
        "dataset": config.dataset,
        "train_images": kept.extra.get("train_images", []),
        "val_images": kept.extra.get("val_images", []),
        "kept": which,
        "epoch": kept.epoch,
        "epochs_run": final.epoch,
        "monitor": kept.extra.get("monitor"),
        "elapsed_s_at_epoch": float(kept.extra.get("elapsed_s", 0.0)),
        "elapsed_s_total": float(final.extra.get("elapsed_s", 0.0)),
        "validation": {k: record[k] for k in VAL_KEYS if k in record},
        "lr_at_epoch": record.get("lr"),
        "num_parameters": kept.extra.get("num_parameters"),
        "sessions": [dict(s, command=portable_command(s.get("command"))) for s in final.extra.get("sessions", [])],
        # the curve, epoch by epoch, for plots and tutorials (a few kB)
        "history": [{k: row[k] for k in CURVE_KEYS if k in row} for row in history],
    }


def record_markdown(summary: dict, weights_name: str, curves_name: str | None) -> str:
    """The human-readable record written beside the weights."""
    s = summary
    lines = [
        f"# {weights_name}",
        "",
        f"SA-UNetv2 weights ({s['num_parameters']:,} parameters) trained by numpyseg on the CPU, "
        f"exported with `numpyseg export`.",
        "",
        "## Command",
        "",
        "```",
        s["command"],
        "```",
        "",
        f"- seed: {s['seed']}",
        f"- data: {s['dataset']} ({s['config'].get('data_root')}), "
        f"{len(s['train_images'])} training images, {len(s['val_images'])} validation images",
        f"- training images: {', '.join(s['train_images'])}",
        f"- validation images: {', '.join(s['val_images'])}",
        f"- epochs run: {s['epochs_run']}; wall time of the whole run {_minutes(s['elapsed_s_total'])}",
        f"- kept: the {s['kept']} checkpoint, epoch {s['epoch']} (by {s['monitor']}), "
        f"reached after {_minutes(s['elapsed_s_at_epoch'])}",
        "",
        f"## Validation figures at epoch {s['epoch']} (inside the field of view, threshold 0.5)",
        "",
        "| " + " | ".join(k.replace("val_", "") for k in s["validation"]) + " |",
        "|" + "---|" * len(s["validation"]),
        "| " + " | ".join(f"{v:.4f}" for v in s["validation"].values()) + " |",
        "",
    ]
    if s.get("sessions"):
        lines += ["## Sessions (the commands as typed)", ""]
        for i, session in enumerate(s["sessions"], 1):
            lines.append(f"{i}. `{session.get('command') or '(not recorded)'}`: started "
                         f"{session.get('started_utc')} UTC at epoch {session.get('from_epoch', 0) + 1}, "
                         f"after {_minutes(session.get('elapsed_s_before', 0.0))} of training"
                         + (f"; machine: {session['machine']}" if session.get("machine") else ""))
        lines.append("")
    if curves_name:
        lines += ["## Training curves", "", f"![training curves]({curves_name})", ""]
    return "\n".join(lines)


def is_export(path) -> bool:
    """Whether `path` is a weights file written by `export_run` (which may replace it).

    An export is a numpyseg checkpoint with a training record (`extra["training"]`)
    and no optimiser state; a run's last.npz / best.npz carry optimiser state.
    """
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError:
        return False
    return "training" in checkpoint.extra and not checkpoint.optim_state


def companions(out: Path) -> tuple[Path, Path]:
    """(OUT.md, OUT_curves.png): the files written beside the weights OUT.npz."""
    return out.with_suffix(".md"), out.with_name(out.stem + "_curves.png")


def check_export_target(out, option: str = "--out") -> Path:
    """Refuse an export target whose writing would destroy a user's file.

    OUT.npz may exist only as an earlier export (`is_export`); OUT.md and
    OUT_curves.png only beside such an export.  A run's own last.npz / best.npz
    are never exports, so `export RUN --out RUN/last.npz` is refused.

    Returns:
        `out` as a Path.
    Raises:
        ConfigError: one line naming the file in the way.
    """
    out = Path(out)
    what = "a weights file written by numpyseg export"
    refuse_to_overwrite(out, option, is_export, what)
    earlier = out.exists()  # an earlier export: its record and curves go with it
    for companion in companions(out):
        refuse_to_overwrite(companion, option, (lambda path: earlier), f"the record of an earlier export {out}")
    return out


def export_run(run_dir, out, which: str = "best") -> dict:
    """Write OUT.npz (weights only), OUT.md (the record) and OUT_curves.png.

    Args:
        run_dir: a folder written by `numpyseg train`.
        out: the weights file to write (.npz).
        which: 'best' or 'last' checkpoint of the run.
    Returns:
        The training summary (see training_summary), with the paths written.
    Raises:
        ConfigError: `out` is not an .npz, or would overwrite a file that is not an
            earlier export (see `check_export_target`).
        CheckpointError: the run's checkpoints are missing or not training states.
    """
    from numpyseg.inference import load_model

    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out must name an .npz file for the exported weights, got {out}")
    check_export_target(out)
    summary = training_summary(run_dir, which)
    model, checkpoint = load_model(Path(run_dir) / f"{which}.npz")
    save_checkpoint(out, model, None, config=checkpoint.config, epoch=checkpoint.epoch,
                    extra={"training": summary}, fov_diameter=checkpoint.fov_diameter)
    record_out, curves_out = companions(out)
    curves = Path(run_dir) / "curves.png"
    if curves.exists():
        atomic_write_bytes(curves_out, curves.read_bytes())
    else:
        curves_out = None
    markdown = record_markdown(summary, out.name, curves_out.name if curves_out else None)
    atomic_write_bytes(record_out, markdown.encode("utf-8"))
    summary["written"] = [str(p) for p in (out, record_out, curves_out) if p is not None]
    return summary
