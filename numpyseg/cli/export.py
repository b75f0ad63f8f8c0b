"""`numpyseg export`: keep a training run's weights, with the record of how they were made.

Example (how numpyseg/weights/sa_unetv2_drive.npz is made):

    numpyseg export runs/drive --out numpyseg/weights/sa_unetv2_drive.npz

writes the weights without the optimiser state (about 1 MB), sa_unetv2_drive.md
(the exact training command, seed, data split, wall time and validation figures)
and sa_unetv2_drive_curves.png (the training curves).
"""

from __future__ import annotations

HELP = "export a training run's best weights (no optimiser state) with a record of the run"


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by numpyseg train")
    parser.add_argument("--out", required=True, metavar="NPZ", help="the weights file to write (.npz)")
    parser.add_argument("--last", action="store_true",
                        help="export the last epoch instead of the best one")


def run(args) -> int:
    from numpyseg.training.export import export_run

    summary = export_run(args.run_dir, args.out, "last" if args.last else "best")
    figures = ", ".join(f"{k.replace('val_', '')} {v:.4f}" for k, v in summary["validation"].items())
    print(f"epoch {summary['epoch']} of {summary['epochs_run']} ({figures}) -> {', '.join(summary['written'])}")
    return 0
