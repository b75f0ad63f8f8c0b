"""`numpyseg evaluate`: score a trained model on a dataset's test images.

Protocol of the spec: each image is zero-padded (DRIVE to 592 x 592, STARE to
704 x 704, others to a multiple of 8), predicted whole, and the probability map
cropped back to the image's size.  An image whose field of view (the dataset's
FOV mask) differs by more than 15 % from the one the weights were trained at is
first resized to that scale and its probabilities resampled back to the label's
grid (--rescale, see numpyseg.prediction).  --tta averages the 8 flips and
quarter turns.  The map is thresholded at --threshold (0.5) and scored per
image -- Acc, Sen, Spe, F1, IoU, MCC against the label and ROC AUC on the
probabilities -- over the whole image and inside the FOV mask.  The table
shows the means over images.

    numpyseg evaluate --weights runs/drive/best.npz --dataset drive --data-root ../shared/data/DRIVE
    numpyseg evaluate --weights W --dataset drive --data-root R --per-image --json scores.json
"""

from __future__ import annotations

import math

from numpyseg.cli.predict import add_progress_argument, add_rescale_arguments
from numpyseg.prediction import resolve_weights

HELP = "score a model on a dataset: Acc, Sen, Spe, F1, IoU, MCC, AUC (whole image and inside the FOV)"

COLUMNS = (("accuracy", "Acc"), ("sensitivity", "Sen"), ("specificity", "Spe"), ("f1", "F1"),
           ("iou", "IoU"), ("mcc", "MCC"), ("auc", "AUC"))
REGIONS = (("whole", "whole image"), ("fov", "inside FOV"))


def add_arguments(parser):
    parser.add_argument("--weights", metavar="W",
                        help="checkpoint (.npz) to evaluate (default: the shipped "
                             "numpyseg/weights/sa_unetv2_drive.npz, when present)")
    parser.add_argument("--dataset", choices=["drive", "stare", "chase", "folder", "synthetic"], default="drive",
                        help="dataset to score on (default drive)")
    parser.add_argument("--data-root", metavar="DIR",
                        help="the dataset folder (for folder: DIR[/SPLIT]/images, labels, optional masks)")
    parser.add_argument("--images", metavar="DIR", help="--dataset folder: the images")
    parser.add_argument("--labels", metavar="DIR", help="--dataset folder: the labels (matched by name)")
    parser.add_argument("--masks", metavar="DIR", help="--dataset folder: FOV masks (default: derived)")
    parser.add_argument("--split", default=None,
                        help="split to score: test (default), training, or all (STARE: numpyseg's held-out "
                             "split, see numpyseg.data.datasets.STARE_TEST)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="probability threshold for the binary scores, between 0 and 1 (default 0.5)")
    parser.add_argument("--per-image", action="store_true", help="also print one row per image")
    parser.add_argument("--json", metavar="FILE", help="write every score (means and per image) as JSON")
    parser.add_argument("--limit", type=int, metavar="N", help="score only the first N images")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per forward pass, for images predicted at their own scale without "
                             "--tta (default 1)")
    add_rescale_arguments(parser)
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average over the 8 flips and quarter turns (8x slower)")
    add_progress_argument(parser)
    parser.add_argument("--synthetic-count", type=int, default=8,
                        help="--dataset synthetic: number of test images (default 8)")
    parser.add_argument("--synthetic-size", type=int, default=128,
                        help="--dataset synthetic: image side (default 128)")
    parser.add_argument("--seed", type=int, default=0,
                        help="--dataset synthetic: seed (the test split uses its own images)")


def _cell(value) -> str:
    return "   -  " if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def format_table(result: dict, per_image: bool = False) -> str:
    """The mean scores (and optionally per-image rows) as aligned text."""
    header = f"{'':<14}" + "".join(f"{label:>8}" for _, label in COLUMNS)
    lines = [header]
    for region, title in REGIONS:
        if region in result:
            mean = result[region]["mean"]
            lines.append(f"{title:<14}" + "".join(f"{_cell(mean[k]):>8}" for k, _ in COLUMNS))
    if per_image:
        for region, title in REGIONS:
            if region not in result:
                continue
            columns = "".join(f"{label:>8}" for _, label in COLUMNS)
            lines += ["", f"per image, {title}:", f"{'image':<14}{columns}"]
            for row in result[region]["per_image"]:
                lines.append(f"{str(row.get('name', '')):<14.14}" +
                             "".join(f"{_cell(row[k]):>8}" for k, _ in COLUMNS))
    return "\n".join(lines)


def check_arguments(args) -> None:
    """Validate the numeric options, and that --json replaces nothing but an earlier score file.

    Raises:
        ConfigError: one line naming the option and its allowed range.
    """
    from numpyseg.atomic import is_json_with_keys, refuse_to_overwrite
    from numpyseg.evaluation import SCORE_KEYS
    from numpyseg.training.config import MAX_BATCH_SIZE, MAX_SYNTHETIC_COUNT, MAX_SYNTHETIC_SIZE
    from numpyseg.validate import check_int, check_threshold

    check_threshold(args.threshold)
    if args.limit is not None:
        check_int("--limit", args.limit)
    check_int("--batch-size", args.batch_size, high=MAX_BATCH_SIZE)
    if args.dataset == "synthetic":
        check_int("--synthetic-count", args.synthetic_count, high=MAX_SYNTHETIC_COUNT)
        check_int("--synthetic-size", args.synthetic_size, low=16, high=MAX_SYNTHETIC_SIZE)
        check_int("--seed", args.seed, low=0)
    if args.json:
        refuse_to_overwrite(args.json, "--json", lambda path: is_json_with_keys(path, SCORE_KEYS),
                            "a score file written by numpyseg evaluate")


def run(args) -> int:
    from numpyseg.cli.predict import progress_printer
    from numpyseg.evaluation import evaluate, load_scored_samples, score_document, write_scores
    from numpyseg.prediction import load_trained

    check_arguments(args)
    weights = resolve_weights(args.weights)
    trained = load_trained(weights, args.fov_diameter)
    samples = load_scored_samples(args.dataset, args.data_root, args.split, images=args.images, labels=args.labels,
                                  masks=args.masks, synthetic_count=args.synthetic_count,
                                  synthetic_size=args.synthetic_size, seed=args.seed, limit=args.limit)
    result = evaluate(trained, samples, args.dataset, threshold=args.threshold, rescale=args.rescale,
                      tta=args.tta, batch_size=args.batch_size, progress=progress_printer(args.quiet))

    split = args.split or "test"
    pad = result.pad_size
    pad_text = f"padded to {pad[0]}x{pad[1]}" if pad else "padded to multiples of 8"
    scale_text = f", {result.rescaled} resized to the trained FOV scale" if result.rescaled else ""
    tta_text = ", test-time augmentation" if args.tta else ""
    print(f"{trained.checkpoint.config.get('arch', 'model')} ({weights}) on {args.dataset} {split}: "
          f"{len(samples)} images {pad_text}{scale_text}{tta_text}, threshold {args.threshold:g}, "
          f"{result.seconds_per_image:.2f} s/image")
    print(format_table(result.scores, args.per_image))
    if args.json:
        write_scores(args.json, score_document(result, trained, weights, dataset=args.dataset, split=split,
                                               threshold=args.threshold, rescale=args.rescale, tta=args.tta))
        print(f"scores written to {args.json}")
    return 0
