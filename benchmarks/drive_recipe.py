"""Evidence for the DRIVE training recipe, from training runs' own files (no test images).

    python benchmarks/drive_recipe.py RUN_DIR [RUN_DIR ...] --data-root path/to/DRIVE

For each run folder written by `numpyseg train`:

* the validation curve against wall time (F1 and AUC inside the FOV), so runs with
  different batch shapes are compared at equal CPU time;
* for the best checkpoint, F1 on the run's own validation images at thresholds
  0.30 ... 0.70: the protocol thresholds at 0.5, so the loss's `pos_weight` should put
  the F1-optimal threshold near 0.5 (if it lies well below, more weight on vessels
  would help; well above, less).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def curve(run: Path, every_minutes: float = 10.0) -> list[str]:
    history = json.loads((run / "history.json").read_text())["history"]
    lines, next_mark = [], every_minutes
    for i, row in enumerate(history):
        minutes = row["elapsed_s"] / 60
        if minutes >= next_mark or i == len(history) - 1:
            lines.append(f"  {minutes:6.1f} min  epoch {row['epoch']:4d}  val F1 {row['val_f1']:.4f}  "
                         f"AUC {row['val_auc']:.4f}  lr {row['lr']:.1e}")
            next_mark = (minutes // every_minutes + 1) * every_minutes
    return lines


def threshold_sweep(run: Path, data_root: str, thresholds) -> list[str]:
    from numpyseg.data.datasets import load_dataset
    from numpyseg.inference import load_model, predict_proba
    from numpyseg.metrics.segmentation import evaluate_dataset

    val_names = set(json.loads((run / "history.json").read_text())["val_images"])
    samples = [s for s in load_dataset("drive", data_root, "training") if s.name in val_names]
    model, checkpoint = load_model(run / "best.npz")
    probs = predict_proba(model, [s.image for s in samples], pad_size=(592, 592))
    lines = [f"  best.npz (epoch {checkpoint.epoch}), {len(samples)} validation images, inside the FOV:"]
    for t in thresholds:
        scores = evaluate_dataset(probs, [s.label for s in samples], [s.fov for s in samples], threshold=t)
        mean = scores["fov"]["mean"]
        lines.append(f"    threshold {t:.2f}  F1 {mean['f1']:.4f}  Sen {mean['sensitivity']:.4f}  "
                     f"Spe {mean['specificity']:.4f}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--data-root", help="DRIVE folder (for the threshold sweep; skipped without it)")
    args = parser.parse_args(argv)
    for run in map(Path, args.runs):
        if not (run / "history.json").is_file():
            print(f"{run}: not a numpyseg run folder (no history.json)", file=sys.stderr)
            return 2
        config = json.loads((run / "history.json").read_text())["run"]
        print(f"{run}: patch {config['patch_size'] or 'whole image'}, batch {config['batch_size']}, "
              f"pos_weight {config['pos_weight']}")
        print("\n".join(curve(run)))
        if args.data_root:
            print("\n".join(threshold_sweep(run, args.data_root, np.arange(0.30, 0.71, 0.05))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
