"""`numpyseg predict`: segment the vessels of fundus photographs.

For every IMAGE (PNG, JPEG, TIFF, PPM, GIF, ...; grayscale, RGBA and 16-bit are
converted to RGB in [0, 1]) the image is zero-padded to a multiple of 8,
predicted whole, and the probability map cropped back to the input's size.
Written into --out, each atomically (a reader never sees half a file):

    <stem>_prob.png     8-bit gray, round(255 * probability)
    <stem>_mask.png     binary, 255 where probability >= --threshold, else 0
    <stem>_overlay.png  the image with vessel pixels tinted green
    <stem>_errors.png   with --label: error map against the label
                        white = true positive   (vessel found)
                        red   = false positive  (vessel predicted, none in the label)
                        blue  = false negative  (vessel in the label, missed)
                        black = true negative

--resize-fov: a model sees vessels at the scale it was trained on.  The field
of view (the bright disc) of the input is found (`numpyseg.data.fov.derive_fov`),
its diameter d measured as the larger of its width and height, and the image is
resized by 538 / d (DRIVE's FOV diameter measured the same way; --fov-diameter)
before prediction; the probability map is resized back to the input's size
(bilinear), so every output still has the input's size.

    numpyseg predict photo.jpg --weights runs/drive/best.npz --out predictions
    numpyseg predict 01_test.tif --label 01_manual1.gif --weights W --out out
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

HELP = "segment vessels in fundus images: probability map, binary mask, overlay (and error map)"

#: DRIVE's FOV diameter in pixels as `fov_diameter` measures it (537-538 on its images): the training scale.
DRIVE_FOV_DIAMETER = 538.0

OVERLAY_COLOUR = np.array([0.0, 1.0, 0.0], dtype=np.float32)   # green
OVERLAY_ALPHA = 0.6
ERROR_COLOURS = {"tp": (255, 255, 255), "fp": (255, 0, 0), "fn": (0, 0, 255), "tn": (0, 0, 0)}


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
    parser.add_argument("--resize-fov", action="store_true",
                        help="rescale each image so its field of view is as large as DRIVE's before "
                             "predicting (outputs keep the input size)")
    parser.add_argument("--fov-diameter", type=float, default=DRIVE_FOV_DIAMETER, metavar="PX",
                        help=f"target FOV diameter for --resize-fov (default {DRIVE_FOV_DIAMETER:g}, DRIVE)")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="predict very large images in overlapping PX x PX tiles (a multiple of 8) to "
                             "save memory (default: whole image)")


# ------------------------------------------------------------------ pictures


def overlay(image: np.ndarray, mask: np.ndarray, colour=OVERLAY_COLOUR, alpha: float = OVERLAY_ALPHA):
    """image (H, W, 3) in [0, 1] with mask pixels blended towards `colour`: (1 - a) x + a c."""
    out = np.array(image, dtype=np.float32, copy=True)
    m = np.asarray(mask, dtype=bool)
    out[m] = (1.0 - alpha) * out[m] + alpha * np.asarray(colour, dtype=np.float32)
    return out


def error_map(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): TP white, FP red, FN blue, TN black (see ERROR_COLOURS)."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(label) != 0
    out = np.zeros(pred.shape + (3,), dtype=np.uint8)
    out[pred & truth] = ERROR_COLOURS["tp"]
    out[pred & ~truth] = ERROR_COLOURS["fp"]
    out[~pred & truth] = ERROR_COLOURS["fn"]
    return out


def fov_diameter(image: np.ndarray) -> float:
    """Diameter in pixels of the field of view: the larger side of its bounding box.

    The larger side, because some cameras cut the disc at the top and bottom.

    Raises:
        ValueError: no field of view is found (an all-dark image).
    """
    from numpyseg.data.fov import derive_fov

    fov = derive_fov(image).astype(bool)
    rows = np.flatnonzero(fov.any(axis=1))
    cols = np.flatnonzero(fov.any(axis=0))
    if rows.size == 0:
        raise ValueError("no field of view found (is the image all dark?)")
    return float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def resize_map(array: np.ndarray, size, resample: str = "bilinear") -> np.ndarray:
    """Resize (H, W) or (H, W, C) float32 to size (h, w) with Pillow, channel by channel."""
    from PIL import Image

    resampling = getattr(Image, "Resampling", Image)  # Pillow >= 9.1 moved the constants
    filters = {"bilinear": resampling.BILINEAR, "bicubic": resampling.BICUBIC}
    height, width = int(size[0]), int(size[1])
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        return np.asarray(Image.fromarray(np.ascontiguousarray(array)).resize((width, height), filters[resample]),
                          dtype=np.float32)
    channels = [resize_map(array[:, :, c], size, resample) for c in range(array.shape[2])]
    return np.stack(channels, axis=2)


# ---------------------------------------------------------------------- run


def _check_inputs(paths, labels):
    """Read every input once before writing anything: a bad file fails the whole command early."""
    from numpyseg.data.io import DataError, image_stem, read_image, read_label

    stems = {}
    for path in paths:
        stem = image_stem(path)
        if stem in stems:
            raise DataError(f"{stems[stem]} and {path} would write the same outputs {stem}_*.png: rename one")
        stems[stem] = path
    for i, path in enumerate(paths):
        image = read_image(path)
        if labels:
            label = read_label(labels[i])
            if label.shape != image.shape[:2]:
                raise DataError(f"label {labels[i]} is {label.shape[0]}x{label.shape[1]} (HxW) but its image "
                                f"{path} is {image.shape[0]}x{image.shape[1]}")


def predict_image(model, image: np.ndarray, *, resize_fov: bool = False,
                  target_diameter: float = DRIVE_FOV_DIAMETER, tile=None):
    """Probability map (H, W) of one image (H, W, 3), optionally at DRIVE's FOV scale.

    Returns (prob, scale) where scale is the resize factor applied (1.0 if none).
    """
    from numpyseg.inference import predict_proba

    height, width = image.shape[:2]
    scale = 1.0
    if resize_fov:
        scale = target_diameter / fov_diameter(image)
        if abs(scale - 1.0) < 0.02:  # within 2 %: not worth the interpolation
            scale = 1.0
    if scale == 1.0:
        return predict_proba(model, image, tile=tile), 1.0
    size = (max(8, int(round(height * scale))), max(8, int(round(width * scale))))
    small = np.clip(resize_map(image, size, "bicubic"), 0.0, 1.0)
    prob = predict_proba(model, small, tile=tile)
    return np.clip(resize_map(prob, (height, width), "bilinear"), 0.0, 1.0), scale


def run(args) -> int:
    from numpyseg.cli.evaluate import resolve_weights
    from numpyseg.data.io import image_stem, read_image, read_label, write_png
    from numpyseg.inference import load_model
    from numpyseg.metrics.segmentation import segmentation_metrics

    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must lie in [0, 1], got {args.threshold}")
    if args.label is not None and len(args.label) != len(args.images):
        raise ValueError(f"got {len(args.images)} images but {len(args.label)} --label files: give one "
                         f"--label per IMAGE, in the same order")
    if args.tile is not None and (args.tile <= 0 or args.tile % 8):
        raise ValueError(f"--tile must be a positive multiple of 8, got {args.tile}")
    if not args.fov_diameter > 0:
        raise ValueError(f"--fov-diameter must be positive, got {args.fov_diameter}")
    weights = resolve_weights(args.weights)
    model, _ = load_model(weights)
    _check_inputs(args.images, args.label)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")

    for i, path in enumerate(args.images):
        start = time.monotonic()
        image = read_image(path)
        prob, scale = predict_image(model, image, resize_fov=args.resize_fov,
                                    target_diameter=args.fov_diameter, tile=args.tile)
        mask = prob >= args.threshold
        pictures = {"prob": prob, "mask": mask, "overlay": overlay(image, mask)}
        summary = ""
        if args.label:
            label = read_label(args.label[i])
            pictures["errors"] = error_map(mask, label)
            m = segmentation_metrics(prob, label, None, args.threshold)
            summary = (f"  vs {Path(args.label[i]).name}: F1 {m['f1']:.4f} Sen {m['sensitivity']:.4f} "
                       f"Spe {m['specificity']:.4f} AUC {m['auc']:.4f}")
        # Everything is computed before the first file is written; each file is atomic.
        stem = image_stem(path)
        for kind, picture in pictures.items():
            write_png(out / f"{stem}_{kind}.png", picture)
        rescaled = f", FOV rescaled x{scale:.3f}" if scale != 1.0 else ""
        print(f"{path}: {image.shape[1]}x{image.shape[0]}{rescaled}, vessels {100.0 * mask.mean():.1f}% of "
              f"pixels, {time.monotonic() - start:.2f} s -> {out / stem}_{{{','.join(pictures)}}}.png{summary}",
              flush=True)
    return 0
