"""`numpyseg predict`: segment the vessels of fundus photographs.

A command-line front end to `numpyseg.prediction.segment` (see there for the
pipeline).  For every IMAGE (PNG, JPEG, TIFF, PPM, GIF, ...; grayscale, RGBA and
16-bit are converted to RGB in [0, 1]) these files are written into --out, all of
one image or none of them (`numpyseg.prediction.write_outputs`):

    <stem>_prob.png     8-bit gray, round(255 * probability): for viewing
    <stem>_prob.npy     float32 (H, W), the exact probabilities: for scoring (numpy.load)
    <stem>_mask.png     binary, 255 where probability >= --threshold, else 0
    <stem>_overlay.png  the image with vessel pixels tinted green
    <stem>_errors.png   with --label: error map against the label
                        white = true positive   (vessel found)
                        red   = false positive  (vessel predicted, none in the label)
                        blue  = false negative  (vessel in the label, missed)
                        black = true negative
    <stem>_explain.png  with --explain: the attention gate maps over the photograph
    <stem>_explain.npz  with --explain: the gate maps, float32, keys 'attention'
                        (bottleneck, 1/8 size), 'csa3' (1/4), 'csa2' (1/2), 'csa1' (1/1)

An existing output file is not replaced unless --overwrite is given.  By default
an image whose field of view is more than 15 % larger or smaller than the one
the weights were trained at is resized to that scale first (--rescale off to
turn it off).  The --explain maps are those of the network's input: the image at
that scale, zero-padded at the bottom and right to a multiple of 8 (see
`numpyseg.prediction.Explanation`); they cannot be combined with --tile or --tta.
Progress goes to stderr (--quiet silences it).

    numpyseg predict photo.jpg --weights runs/drive/best.npz --out predictions
    numpyseg predict 01_test.tif --label 01_manual1.gif --out out --tta
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HELP = "segment vessels in fundus images: probability map, binary mask, overlay (and error map)"


def add_rescale_arguments(parser) -> None:
    """--rescale, --resize-fov, --fov-diameter: shared by predict, evaluate and demo."""
    parser.add_argument("--rescale", choices=["auto", "always", "off"], default="auto",
                        help="resize each image so its field of view is as large as the training images' "
                             "before predicting: auto (default) when it differs by more than 15%%, always, "
                             "or off; outputs keep the input's size")
    parser.add_argument("--resize-fov", dest="rescale", action="store_const", const="always",
                        help="same as --rescale always")
    parser.add_argument("--no-rescale", dest="rescale", action="store_const", const="off",
                        help="same as --rescale off")
    parser.add_argument("--fov-diameter", type=float, default=None, metavar="PX",
                        help="the training FOV diameter to rescale to (default: the one the weights "
                             "record; DRIVE's 540 px for weights that record none)")


def add_progress_argument(parser) -> None:
    parser.add_argument("--quiet", action="store_true", help="print no progress messages on stderr")


def progress_printer(quiet: bool):
    """None when quiet, else a callback printing each progress message as a line on stderr."""
    if quiet:
        return None

    def show(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)
    return show


def add_arguments(parser):
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="fundus image files")
    parser.add_argument("--weights", metavar="W",
                        help="checkpoint (.npz) (default: the shipped numpyseg/weights/sa_unetv2_drive.npz, "
                             "when present)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="probability threshold of the binary mask (default 0.5)")
    parser.add_argument("--label", action="append", default=None, metavar="L",
                        help="vessel label of an IMAGE, for an error map; give one --label per IMAGE, in order")
    add_rescale_arguments(parser)
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="predict in PX x PX blocks (a multiple of 8) to bound memory; the result is "
                             "the same as whole-image prediction (default: whole image)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average over the 8 flips and quarter turns (8x slower)")
    parser.add_argument("--explain", action="store_true",
                        help="also write the attention gate maps: a figure <stem>_explain.png and the arrays "
                             "<stem>_explain.npz (not with --tile or --tta)")
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist already")
    add_progress_argument(parser)


def run(args) -> int:
    from numpyseg.data.io import image_stem, read_label
    from numpyseg.errors import ConfigError
    from numpyseg.metrics.segmentation import segmentation_metrics
    from numpyseg.prediction import check_explainable, check_inputs, load_trained, segment, write_outputs
    from numpyseg.inference import check_tile
    from numpyseg.validate import check_threshold

    check_threshold(args.threshold)
    if args.label is not None and len(args.label) != len(args.images):
        raise ConfigError(f"got {len(args.images)} images but {len(args.label)} --label files: give one "
                          f"--label per IMAGE, in the same order")
    if args.tile is not None:
        check_tile(args.tile)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    trained = load_trained(args.weights, args.fov_diameter)
    if args.explain:
        check_explainable(trained.model, args.tile, args.tta)
    check_inputs(args.images, args.label, out, args.overwrite, args.explain)
    progress = progress_printer(args.quiet)

    for i, path in enumerate(args.images):
        start = time.monotonic()
        if progress is not None and len(args.images) > 1:
            progress(f"image {i + 1}/{len(args.images)}: {path}")
        result = segment(path, trained, threshold=args.threshold, tile=args.tile, rescale=args.rescale,
                         tta=args.tta, progress=progress, explain=args.explain)
        label = read_label(args.label[i]) if args.label else None
        stem = image_stem(path)
        written = write_outputs(result, out, stem, label, overwrite=args.overwrite)
        summary = ""
        if label is not None:
            m = segmentation_metrics(result.probability, label, None, args.threshold)
            summary = (f"  vs {Path(args.label[i]).name}: F1 {m['f1']:.4f} Sen {m['sensitivity']:.4f} "
                       f"Spe {m['specificity']:.4f} AUC {m['auc']:.4f}")
        height, width = result.probability.shape
        rescaled = f", FOV rescaled x{result.scale:.3f}" if result.scale != 1.0 else ""
        suffixes = ",".join(p.name[len(stem):] for p in written.values())
        print(f"{path}: {width}x{height}{rescaled}, vessels {100.0 * result.mask.mean():.1f}% of "
              f"pixels, {time.monotonic() - start:.2f} s -> {out / stem}{{{suffixes}}}{summary}", flush=True)
    return 0
