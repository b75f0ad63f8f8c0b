"""The errors numpyseg raises for problems a user can fix.

Every one is a `NumpysegError` (itself a ValueError) whose message is one line
that names the problem (the file, the option, the value) and says what to do.
The command line prints that line as ``numpyseg <command>: error: ...`` and
exits with status 2; a Python user catches `NumpysegError` (or one of the
kinds below).

Problems that do not stop the work but change how it is done (a label that is
not binary, a value range guessed from the data, images missing from a split)
are warnings of class `NumpysegWarning` (a UserWarning), issued with
`warnings.warn`, so they reach stderr and a Python user can filter them.
"""

from __future__ import annotations


class NumpysegError(ValueError):
    """Base class: a problem with the user's input, files or options (one-line message)."""


class DataError(NumpysegError):
    """A dataset file or folder cannot be used; the message is one line naming it."""


class CheckpointError(NumpysegError):
    """A checkpoint cannot be read or does not fit the model / optimiser."""


class TrainingDiverged(NumpysegError):
    """The loss, the logits, the weights or the optimiser state became NaN or infinite, or
    the loss exploded (over 100 times the run's first loss); no checkpoint holds that state."""


class ConfigError(NumpysegError):
    """An option or configuration value is out of range or inconsistent."""


class NumpysegWarning(UserWarning):
    """A result the user should look at before trusting it (e.g. no field of view found).

    Issued with `warnings.warn`; the command line prints it as one line,
    ``numpyseg <command>: warning: ...``, on stderr.
    """


class DataWarning(NumpysegWarning):
    """A file was read by a rule chosen from its data, or looks implausible, or a split is incomplete."""
