"""`numpyseg` command line: one sub-command per module in numpyseg/cli/.

Each sub-command module has `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`.

Error policy: every problem a user can fix ends the command with one line,
`numpyseg <command>: error: ...`, and exit status 2, never a traceback:

    NumpysegError (and other ValueErrors)  its one-line message (numpyseg/errors.py)
    OSError                                the file it concerns and the reason
    MemoryError                            what to make smaller (`memory_hint`)

Ctrl-C prints `interrupted` and exits 130 (training saves its state first and
says how to resume).
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
    from numpyseg import __version__

    parser.add_argument("--version", action="version", version=f"numpyseg {__version__}")
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


def one_line(error: BaseException) -> str:
    """The first line of an error's message; an OSError as 'FILE: reason'."""
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or error}"
    else:
        text = str(error)
    return text.splitlines()[0] if text.strip() else type(error).__name__


def memory_hint(args) -> str:
    """What to make smaller after a MemoryError, from the options this command has."""
    if hasattr(args, "tile"):
        return "predict large images in tiles with --tile PX (e.g. --tile 512)"
    if hasattr(args, "patch_size") or args.command == "train":
        return "lower --batch-size or train on patches with a smaller --patch-size (e.g. --patch-size 128)"
    if hasattr(args, "batch_size"):
        return "lower --batch-size, or predict large images in tiles (numpyseg predict --tile PX)"
    return "use smaller images or sizes, or close other programs"


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
    prefix = f"numpyseg {args.command}: error:"
    try:
        with _warnings_as_lines(args.command):
            return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"numpyseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:  # NumpysegError is a ValueError
        print(f"{prefix} {one_line(error)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prefix} out of memory: {memory_hint(args)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
