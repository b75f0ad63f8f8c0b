"""The errors numpyseg raises for problems a user can fix.

Every one is a `NumpysegError` (itself a ValueError) whose message is one line
that names the problem (the file, the option, the value) and says what to do.
The command line prints that line as ``numpyseg <command>: error: ...`` and
exits with status 2; a Python user catches `NumpysegError` (or one of the
kinds below).
"""

from __future__ import annotations


class NumpysegError(ValueError):
    """Base class: a problem with the user's input, files or options (one-line message)."""


class DataError(NumpysegError):
    """A dataset file or folder cannot be used; the message is one line naming it."""


class CheckpointError(NumpysegError):
    """A checkpoint cannot be read or does not fit the model / optimiser."""


class TrainingDiverged(NumpysegError):
    """The loss, the logits, the weights or the optimiser state became NaN or infinite."""


class ConfigError(NumpysegError):
    """An option or configuration value is out of range or inconsistent."""


class NumpysegWarning(UserWarning):
    """A result the user should look at before trusting it (e.g. no field of view found).

    Issued with `warnings.warn`; the command line prints it as one line,
    ``numpyseg <command>: warning: ...``, on stderr.
    """
