"""`numpyseg export`: keep a training run's weights, with the record of how they were made.

Example (how numpyseg/weights/sa_unetv2_drive.npz is made):

    numpyseg export runs/drive --out numpyseg/weights/sa_unetv2_drive.npz

writes the weights without the optimiser state (about 1 MB), sa_unetv2_drive.md
(the exact training command, seed, data split, wall time and validation figures)
and sa_unetv2_drive_curves.png (the training curves).

To other tools (SOURCE: a run folder or any weights .npz, the shipped ones included):

    numpyseg export SOURCE --format onnx --out sa_unetv2.onnx    an ONNX model
    numpyseg export SOURCE --format torch --out sa_unetv2.pt     the PyTorch twin's state dict
    numpyseg export sa_unetv2.pt --format npz --out back.npz     and back to numpyseg weights
"""

from __future__ import annotations

HELP = ("export a training run's best weights (no optimiser state) with a record of the run; "
        "--format onnx/torch: weights to ONNX or PyTorch, and back")


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by numpyseg train (with "
                        "--format: also a weights .npz, or a PyTorch .pt for --format npz)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the file to write (.npz; .onnx for --format onnx, .pt for --format torch)")
    parser.add_argument("--format", choices=["npz", "onnx", "torch"], default=None,
                        help="npz: numpyseg weights (from a run folder, or from a PyTorch .pt); onnx: an "
                             "ONNX model (needs numpyseg[onnx]); torch: a state dict of the PyTorch twin "
                             "(needs numpyseg[parity])")
    parser.add_argument("--last", action="store_true",
                        help="export the last epoch instead of the best one")


def run(args) -> int:
    from numpyseg.interop.convert import export_as, is_torch_file
    from numpyseg.training.export import export_run

    if args.format in ("onnx", "torch") or (args.format == "npz" and is_torch_file(args.run_dir)):
        written = export_as(args.run_dir, args.out, args.format, which="last" if args.last else "best",
                            overwrite=getattr(args, "overwrite", False))
        print(f"{args.run_dir} -> {written}")
        return 0
    summary = export_run(args.run_dir, args.out, "last" if args.last else "best")
    figures = ", ".join(f"{k.replace('val_', '')} {v:.4f}" for k, v in summary["validation"].items())
    print(f"epoch {summary['epoch']} of {summary['epochs_run']} ({figures}) -> {', '.join(summary['written'])}")
    return 0
