"""`numpyseg train`: train SA-UNetv2 (or SA-UNet) on a dataset, with checkpoints and logs.

Examples:

    numpyseg train                                   # synthetic fundus images, a first run
    numpyseg train --dataset drive --data-root ../shared/data/DRIVE --out runs/drive \\
        --patch-size 128 --batch-size 8 --epochs 150 --time-limit 20
    numpyseg train --out runs/drive --resume         # continue after Ctrl-C / a time limit

The run folder gets last.npz (every epoch, and on Ctrl-C), best.npz (best epoch by
--monitor), history.csv, history.json and curves.png.  The start-up steps (reading
the dataset, the validation split, the first step) are announced on stderr;
--quiet silences them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "train a vessel-segmentation model (checkpoints, logs and curves in --out)"

_S = argparse.SUPPRESS  # options not given on the command line stay absent: see run()


def add_arguments(parser):
    from numpyseg.training.config import ARCHS, DATASETS, MONITORS, SCHEDULES, TrainConfig

    d = TrainConfig.__dataclass_fields__

    def default(name):
        return d[name].default

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default=_S,
                      help="training data (default: synthetic, procedural fundus images)")
    data.add_argument("--data-root", default=_S, metavar="DIR",
                      help="the dataset folder (drive, stare, chase; for folder: DIR/images, DIR/labels, "
                           "optional DIR/masks)")
    data.add_argument("--images", default=_S, metavar="DIR", help="--dataset folder: the images")
    data.add_argument("--labels", default=_S, metavar="DIR", help="--dataset folder: the labels (matched by name)")
    data.add_argument("--masks", default=_S, metavar="DIR",
                      help="--dataset folder: FOV masks (default: derived from each image)")
    data.add_argument("--synthetic-count", type=int, default=_S, metavar="N",
                      help=f"--dataset synthetic: number of images (default {default('synthetic_count')})")
    data.add_argument("--synthetic-size", type=int, default=_S, metavar="PX",
                      help=f"--dataset synthetic: image side (default {default('synthetic_size')})")
    data.add_argument("--val-fraction", type=float, default=_S,
                      help=f"fraction of the training images held out for validation, chosen by --seed "
                           f"(default {default('val_fraction')}; at least one image)")
    data.add_argument("--val-count", type=int, default=_S, metavar="N",
                      help="number of training images held out for validation (overrides --val-fraction; "
                           "0: no validation)")

    run = parser.add_argument_group("run")
    run.add_argument("--out", default="runs/train", metavar="RUN_DIR",
                     help="run folder for checkpoints and logs (default runs/train)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run saved in RUN_DIR/last.npz (same epoch counter, optimiser, "
                          "schedules and random states; only --epochs, --time-limit, --log-every and "
                          "data paths may change)")
    run.add_argument("--overwrite", action="store_true",
                     help="start a new run even if RUN_DIR already holds one")
    run.add_argument("--quiet", action="store_true",
                     help="print no start-up progress messages on stderr (reading the data, the first step)")
    run.add_argument("--epochs", type=int, default=_S, help=f"number of epochs (default {default('epochs')})")
    run.add_argument("--time-limit", type=float, default=_S, metavar="MINUTES",
                     help="stop cleanly after the epoch during which this much wall time (this session) "
                          "has passed; continue later with --resume")
    run.add_argument("--log-every", type=int, default=_S, metavar="STEPS",
                     help="progress line every STEPS steps within an epoch (default: about 10 per epoch "
                          "for epochs of 20 steps or more)")
    run.add_argument("--seed", type=int, default=_S,
                     help="seeds the initialisation, DropBlock, the validation split, shuffling, crops and "
                          "augmentation: the same seed gives the same weights (default 0)")

    batches = parser.add_argument_group("batches")
    batches.add_argument("--batch-size", type=int, default=_S,
                         help=f"images or patches per step (default {default('batch_size')}; the authors: 8)")
    batches.add_argument("--patch-size", type=int, default=_S, metavar="PX",
                         help="train on random PX x PX patches (a multiple of 8); 0 = whole images padded "
                              "as the authors did (592 for DRIVE) (default 0)")
    batches.add_argument("--steps-per-epoch", type=int, default=_S, metavar="N",
                         help="steps per epoch (default: one pass over the images, or for patches enough "
                              "steps to cover the images' area once)")
    batches.add_argument("--no-augment", dest="augment", action="store_false", default=_S,
                         help="no augmentation at all (patches are still cropped at random)")
    batches.add_argument("--no-flip", dest="flip", action="store_false", default=_S,
                         help="no random flips")
    batches.add_argument("--no-rot90", dest="rot90", action="store_false", default=_S,
                         help="no random quarter turns")
    batches.add_argument("--rotate", type=float, default=_S, metavar="DEG",
                         help=f"random rotation up to +-DEG degrees (default {default('rotate')}; 0 = off)")
    batches.add_argument("--brightness", type=float, default=_S,
                         help=f"random brightness factor 1 +- this (default {default('brightness')})")
    batches.add_argument("--contrast", type=float, default=_S,
                         help=f"random contrast factor 1 +- this (default {default('contrast')})")
    batches.add_argument("--gamma", type=float, default=_S,
                         help=f"random gamma exp(+-this) (default {default('gamma')})")

    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=ARCHS, default=_S, help="architecture (default sa_unetv2)")
    model.add_argument("--base-channels", type=int, default=_S,
                       help=f"start width c: widths c, 2c, 3c, 4c (default {default('base_channels')})")
    model.add_argument("--dropblock-rate", type=float, default=_S,
                       help=f"DropBlock rate (default {default('dropblock_rate')})")
    model.add_argument("--block-size", type=int, default=_S,
                       help=f"DropBlock block size (default {default('block_size')})")

    optim = parser.add_argument_group("loss and optimiser")
    optim.add_argument("--lr", type=float, default=_S, help=f"Adam learning rate (default {default('lr')})")
    optim.add_argument("--bce-weight", type=float, default=_S, help="weight of BCE in the loss (default 0.5)")
    optim.add_argument("--mcc-weight", type=float, default=_S, help="weight of 1 - soft MCC (default 0.5)")
    optim.add_argument("--pos-weight", default=_S, metavar="W",
                       help="BCE weight of vessel pixels: a number, or 'balanced' (#background / #vessel "
                            "of each batch) (default 1)")
    optim.add_argument("--loss-fov", action="store_true", default=_S,
                       help="leave pixels outside the field of view out of the loss too (padding is always "
                            "left out)")
    optim.add_argument("--schedule", choices=SCHEDULES, default=_S,
                       help="learning-rate schedule: 'plateau' (ReduceLROnPlateau on the validation loss) or "
                            "'cosine' (cosine decay from --lr to --min-lr over --epochs; the length is fixed when the run "
                            "starts, so a resume with more --epochs goes on at --min-lr) (default plateau)")
    optim.add_argument("--warmup-epochs", type=int, default=_S, metavar="EPOCHS",
                       help="--schedule cosine: linear warm-up over this many epochs (default 0)")
    optim.add_argument("--ema", type=float, default=_S, metavar="DECAY",
                       help="keep an exponential moving average of the weights with this decay (e.g. "
                            "0.995); validation, best.npz and the exported weights use the average "
                            "(default 0: off)")
    optim.add_argument("--patience-lr", type=int, default=_S, metavar="EPOCHS",
                       help="ReduceLROnPlateau on the validation loss: halve the rate after this many "
                            f"epochs without improvement, down to --min-lr (default {default('patience_lr')})")
    optim.add_argument("--lr-factor", type=float, default=_S, help="ReduceLROnPlateau factor (default 0.5)")
    optim.add_argument("--min-lr", type=float, default=_S, help="the lowest learning rate of either schedule (default 1e-6)")
    optim.add_argument("--early-stop", type=int, default=_S, metavar="EPOCHS",
                       help="stop after this many epochs without a better validation loss "
                            f"(default {default('early_stop')}; 0 = never)")
    optim.add_argument("--monitor", choices=sorted(MONITORS), default=_S,
                       help="metric that chooses best.npz: val_loss (lower is better) or a validation "
                            "score inside the FOV (higher is better) (default val_f1; train_loss when there "
                            "is no validation split)")


_NOT_CONFIG = {"command", "run", "out", "resume", "overwrite", "argv", "quiet"}


def run(args) -> int:
    from numpyseg.cli.predict import progress_printer
    from numpyseg.training.config import TrainConfig, merge_for_resume
    from numpyseg.training.state import LAST, check_run_folder, saved_run
    from numpyseg.training.trainer import Trainer

    given = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    out = Path(args.out)
    last = out / LAST
    check_run_folder(out, resume=args.resume, overwrite=args.overwrite)
    if args.resume:
        saved, done = saved_run(out)
        config = merge_for_resume(saved, given)
        if done >= config.epochs:
            print(f"the run in {out} has already finished {done} epochs; pass --epochs N "
                  f"(N > {done}) to train further")
            return 0
    else:
        config = TrainConfig(**given)

    import shlex

    command = "numpyseg " + shlex.join(args.argv) if getattr(args, "argv", None) else None
    trainer = Trainer(config, out, resume=args.resume, command=command, progress=progress_printer(args.quiet))
    print(trainer.describe(), flush=True)
    if args.resume:
        print(f"resuming {last} at {trainer.position()}", flush=True)
    result = trainer.fit()
    if result.status == "interrupted":
        print(f"numpyseg train: {result.message}", file=sys.stderr, flush=True)
        return 130
    print(result.message, flush=True)
    return 0
