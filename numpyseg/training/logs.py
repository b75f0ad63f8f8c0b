"""The run folder's logs: history.csv, history.json and curves.png, all written atomically.

A training run keeps its history as a list of one dict per finished epoch
(epoch, steps, train_loss, val_loss, val_f1, val_auc, lr, ...).  After every
epoch the three files are rewritten in full from that list, so they always
agree with each other and with the checkpoint that holds the same list (a
resumed run continues the list from its checkpoint, whatever the files held).

Every file is written to a temporary file in the same folder and renamed over
the destination (`os.replace`), so a reader or an interruption never sees a
half-written log or image.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from numpyseg.atomic import atomic_write_bytes

#: Columns of history.csv, in order; keys a record lacks are left empty.
CSV_COLUMNS = ("epoch", "steps", "train_loss", "val_loss", "val_acc", "val_sen", "val_spe", "val_f1",
               "val_iou", "val_mcc", "val_auc", "lr", "images_per_s", "epoch_time_s", "elapsed_s",
               "best")


def _json_value(value):
    """NaN/inf are not JSON: store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_history_json(path, history: list[dict], info: dict | None = None) -> Path:
    """{**info, "history": [...]} as indented JSON (NaN/inf written as null)."""
    document = {k: _json_value(v) for k, v in (info or {}).items()}
    document["history"] = [{k: _json_value(v) for k, v in record.items()} for record in history]
    return atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode())


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def write_history_csv(path, history: list[dict]) -> Path:
    """One row per epoch with the columns of CSV_COLUMNS (floats at full precision)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in history:
        writer.writerow([_csv_cell(record.get(column)) for column in CSV_COLUMNS])
    return atomic_write_bytes(path, buffer.getvalue().encode())


def read_history_csv(path) -> list[dict]:
    """history.csv back as a list of dicts of strings (empty cells dropped)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _series(history, key):
    xs, ys = [], []
    for record in history:
        value = record.get(key)
        if value is not None and isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(record["epoch"])
            ys.append(value)
    return xs, ys


def plot_curves(path, history: list[dict], monitor: str | None = None, title: str = "") -> Path | None:
    """Training curves as a PNG: losses, validation metrics, learning rate.

    Uses matplotlib's Agg canvas directly (no pyplot, no display needed).
    Returns None (and writes nothing) when the history is empty.
    """
    if not history:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(12, 3.8), dpi=100)
    FigureCanvasAgg(figure)
    ax_loss, ax_metric, ax_lr = figure.subplots(1, 3)

    for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        xs, ys = _series(history, key)
        if xs:
            ax_loss.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("loss (BCE + soft-MCC)")
    ax_loss.legend(loc="upper right", fontsize=8)
    ax_loss.grid(alpha=0.3)

    for key, label in (("val_f1", "F1"), ("val_auc", "AUC"), ("val_mcc", "MCC"), ("val_sen", "Sen")):
        xs, ys = _series(history, key)
        if xs:
            ax_metric.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
    best = [r["epoch"] for r in history if r.get("best")]
    if best:
        ax_metric.axvline(best[-1], color="gray", linestyle=":", label=f"best ({monitor or 'monitor'})")
    ax_metric.set_xlabel("epoch")
    ax_metric.set_title("validation metrics (inside FOV)")
    ax_metric.set_ylim(0.0, 1.0)
    if ax_metric.lines:
        ax_metric.legend(loc="lower right", fontsize=8)
    ax_metric.grid(alpha=0.3)

    xs, ys = _series(history, "lr")
    if xs:
        ax_lr.plot(xs, ys, drawstyle="steps-post")
        if min(ys) > 0:
            ax_lr.set_yscale("log")
    ax_lr.set_xlabel("epoch")
    ax_lr.set_title("learning rate")
    ax_lr.grid(alpha=0.3)

    for ax in (ax_loss, ax_metric, ax_lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())
