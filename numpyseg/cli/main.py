"""`numpyseg` command line: one sub-command per module in numpyseg/cli/.

Each sub-command module has `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`.  Errors a user can fix (a missing folder, a bad image, a
corrupt checkpoint) are ValueErrors/OSErrors with a one-line message: they are
printed as `numpyseg <command>: error: ...` and the exit code is 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from contextlib import contextmanager

COMMANDS = ["gradcheck", "summary", "train", "evaluate", "predict", "demo", "export", "benchmark"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numpyseg",
        description="SA-UNetv2 retinal-vessel segmentation in NumPy + numba.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"numpyseg.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"numpyseg.cli.{name}":
                raise
            continue  # a command whose module is not present in this build
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


@contextmanager
def _warnings_as_lines(command: str):
    """Print numpyseg warnings as `numpyseg <command>: warning: ...` on stderr (others as usual)."""
    from numpyseg.errors import NumpysegWarning

    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, NumpysegWarning):
            print(f"numpyseg {command}: warning: {message}", file=sys.stderr, flush=True)
        else:
            original(message, category, filename, lineno, file, line)
    with warnings.catch_warnings():   # restores the filters and showwarning on exit
        warnings.simplefilter("always", NumpysegWarning)
        warnings.showwarning = show
        yield


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for run records
    try:
        with _warnings_as_lines(args.command):
            return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"numpyseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"numpyseg {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
