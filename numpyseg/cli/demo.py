"""`numpyseg demo`: segment the shipped fundus photograph and draw a figure.

The photograph (numpyseg/assets/retina.jpg, CC0, see assets/README.md) is
already resized so its field of view is as wide as DRIVE's.  The figure shows
the photograph, the vessel probability map and the thresholded vessels over
the photograph; the probability map is also written beside it as a PNG.
"""

from __future__ import annotations

import time
from pathlib import Path

from numpyseg.cli.predict import add_progress_argument, add_rescale_arguments

HELP = "segment the shipped fundus photograph and write a figure (image, probabilities, overlay)"

DEMO_IMAGE = Path(__file__).resolve().parent.parent / "assets" / "retina.jpg"


def add_arguments(parser):
    parser.add_argument("--weights", metavar="W",
                        help="checkpoint (.npz) (default: the shipped numpyseg/weights/sa_unetv2_drive.npz)")
    parser.add_argument("--image", default=str(DEMO_IMAGE), metavar="IMAGE",
                        help="fundus photograph (default: the shipped CC0 retina photograph)")
    parser.add_argument("--out", default="numpyseg_demo.png", metavar="PNG",
                        help="figure to write (default numpyseg_demo.png)")
    parser.add_argument("--threshold", type=float, default=0.5, help="vessel threshold, between 0 and 1 (default 0.5)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the figure and its _prob.png if they exist (default: refuse)")
    add_rescale_arguments(parser)
    add_progress_argument(parser)


def run(args) -> int:
    from numpyseg.cli.predict import progress_printer
    from numpyseg.data.io import read_image, write_png
    from numpyseg.errors import ConfigError
    from numpyseg.prediction import check_outputs_free, load_trained, segment, segmentation_figure, write_figure
    from numpyseg.validate import check_threshold

    check_threshold(args.threshold)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {out}")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist: create it or choose another --out")
    prob_path = out.with_name(out.stem + "_prob.png")
    check_outputs_free([out, prob_path], args.overwrite)
    start = time.monotonic()
    trained = load_trained(args.weights, args.fov_diameter)
    image = read_image(args.image)
    result = segment(args.image, trained, threshold=args.threshold, rescale=args.rescale,
                     progress=progress_printer(args.quiet))
    seconds = time.monotonic() - start

    write_figure(out, segmentation_figure(image, result, Path(args.image).name))
    write_png(prob_path, result.probability)
    print(f"{args.image}: {image.shape[1]}x{image.shape[0]}, vessels {result.mask.mean() * 100:.1f}% of pixels, "
          f"{seconds:.1f} s -> {out}, {prob_path}")
    return 0
