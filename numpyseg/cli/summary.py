"""`numpyseg summary`: the Keras-style table of a model's layers and parameters."""

HELP = "print the model's layers, output shapes and parameter counts"

MAX_SIZE = 65536  # the table only computes shapes; beyond this a typo is more likely than an image


def add_arguments(parser):
    parser.add_argument("--arch", choices=["sa_unetv2", "sa_unet"], default="sa_unetv2",
                        help="architecture (default: sa_unetv2)")
    parser.add_argument("--base-channels", type=int, default=16, help="start width c (default 16)")
    parser.add_argument("--size", type=int, default=592, help="input height and width (default 592)")


def run(args):
    from numpyseg.models import build_model
    from numpyseg.validate import check_int

    check_int("--size", args.size, low=8, high=MAX_SIZE, multiple=8)
    model = build_model({"arch": args.arch, "base_channels": args.base_channels})
    print(model.summary((args.size, args.size)))
    return 0
