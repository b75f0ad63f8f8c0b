"""Records that name no folder of the machine they were made on.

A run's record (the exported OUT.md, the summary inside OUT.npz, history.json) is
read on other machines, and a path such as /home/ana/data/DRIVE says nothing there
(and tells a reader about someone's disk).  So records keep each path relative: a
folder by its own name (data root /home/ana/data/DRIVE -> DRIVE, run folder
runs/drive -> drive), which is the path relative to the folder that holds it.  The
command in a record then reads `numpyseg train --dataset drive --data-root DRIVE ...
--out drive`: run from the folder holding DRIVE, it trains the same run.

The checkpoints inside a run folder keep the paths as given: `--resume` needs them.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import PurePosixPath, PureWindowsPath

#: TrainConfig fields that hold paths, and the command-line options that take one.
PATH_FIELDS = ("data_root", "images", "labels", "masks")
PATH_OPTIONS = ("--data-root", "--images", "--labels", "--masks", "--out")


def portable_path(path) -> str | None:
    """The last component of a path, POSIX or Windows (None stays None).

    '/data/DRIVE/' -> 'DRIVE', 'C:\\\\data\\\\DRIVE' -> 'DRIVE', 'DRIVE' -> 'DRIVE'.
    """
    if path is None:
        return None
    text = str(path).rstrip("/\\")
    name = (PureWindowsPath(text) if "\\" in text else PurePosixPath(text)).name
    return name or text


def portable_config(config):
    """A copy of a TrainConfig whose path fields hold folder names only."""
    return dataclasses.replace(config, **{f: portable_path(getattr(config, f)) for f in PATH_FIELDS})


def portable_command(command: str | None) -> str | None:
    """A command line whose path options (--data-root DIR, --out=DIR, ...) name folders only."""
    if not command:
        return command
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: keep the words as they are
        words = command.split()
    out = []
    for i, word in enumerate(words):
        option, equals, value = word.partition("=")
        if equals and option in PATH_OPTIONS:
            word = f"{option}={portable_path(value)}"
        elif i > 0 and words[i - 1] in PATH_OPTIONS:
            word = portable_path(word)
        out.append(word)
    return shlex.join(out)
