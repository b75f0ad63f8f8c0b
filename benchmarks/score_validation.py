"""Score weights on a training run's validation images: plain and with test-time augmentation.

    python benchmarks/score_validation.py --dataset drive --data-root path/to/DRIVE \
        --run path/to/run_dir  WEIGHTS.npz [WEIGHTS.npz ...]  [--json scores.json]

The validation images are the training images the run held out (read from the run's
last.npz), or those named with --names.  Every weights file is scored on the same
images, the authors' way (threshold 0.5, mean over images), over the whole image and
inside the field of view, with a single pass and with --tta: so new weights are
compared with the shipped ones without touching the test images.  Also prints the
run's validation curve of the raw weights beside their moving average, when the run
kept one (--ema).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEYS = ("accuracy", "sensitivity", "specificity", "f1", "auc")


def validation_names(run_dir: Path) -> list[str]:
    from numpyseg.checkpoint import load_checkpoint

    return list(load_checkpoint(run_dir / "last.npz").extra["val_images"])


def score(weights: str, samples, dataset: str, tta: bool) -> dict:
    from numpyseg.inference import dataset_pad_size
    from numpyseg.metrics.segmentation import evaluate_dataset
    from numpyseg.prediction import load_trained, predict_samples

    trained = load_trained(weights)
    pad = dataset_pad_size(dataset, [s.shape for s in samples])
    probs, _ = predict_samples(trained, samples, pad_size=pad, tta=tta)
    result = evaluate_dataset(probs, [s.label for s in samples], [s.fov for s in samples])
    return {region: {k: result[region]["mean"][k] for k in KEYS} for region in ("whole", "fov")}


def average_worth(run_dir: Path) -> str | None:
    """The last epochs' validation F1 of the raw weights and of their moving average."""
    history = json.loads((run_dir / "history.json").read_text())["history"]
    rows = [r for r in history if "raw_val_f1" in r]
    if not rows:
        return None
    best_raw = max(rows, key=lambda r: r["raw_val_f1"])
    best_avg = max(rows, key=lambda r: r["val_f1"])
    last = rows[-1]
    return (f"validation F1 (FOV): best raw {best_raw['raw_val_f1']:.4f} (epoch {best_raw['epoch']}), best average "
            f"{best_avg['val_f1']:.4f} (epoch {best_avg['epoch']}); last epoch raw {last['raw_val_f1']:.4f}, "
            f"average {last['val_f1']:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", help="weights or checkpoint files (.npz)")
    parser.add_argument("--dataset", default="drive", choices=("drive", "stare", "chase"))
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--run", type=Path, help="the run folder whose validation images to use")
    parser.add_argument("--names", help="comma-separated image names (instead of --run)")
    parser.add_argument("--no-tta", action="store_true", help="single pass only")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args(argv)

    from numpyseg.data.datasets import load_dataset

    if args.names:
        names = [n.strip() for n in args.names.split(",") if n.strip()]
    elif args.run:
        names = validation_names(args.run)
    else:
        parser.error("give --run RUN_DIR or --names A,B,...")
    samples = [s for s in load_dataset(args.dataset, args.data_root, "training") if s.name in names]
    if len(samples) != len(names):
        found = {s.name for s in samples}
        parser.error(f"not among the {args.dataset} training images: {', '.join(n for n in names if n not in found)}")
    print(f"{len(samples)} {args.dataset} validation images: {', '.join(names)}")
    table = {}
    header = f"{'weights':<40}{'pass':>7}{'region':>7}" + "".join(f"{k[:4]:>8}" for k in KEYS)
    print(header)
    for weights in args.weights:
        for tta in ((False,) if args.no_tta else (False, True)):
            scores = score(weights, samples, args.dataset, tta)
            table[f"{weights} {'tta' if tta else 'plain'}"] = scores
            for region in ("whole", "fov"):
                print(f"{Path(weights).parent.name + '/' + Path(weights).name:<40.40}{'tta' if tta else 'plain':>7}"
                      f"{region:>7}" + "".join(f"{scores[region][k]:>8.4f}" for k in KEYS), flush=True)
    if args.run and (args.run / "history.json").exists():
        worth = average_worth(args.run)
        if worth:
            print(worth)
    if args.json:
        args.json.write_text(json.dumps({"images": names, "scores": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
