"""Stopping a training run cleanly on Ctrl-C or SIGTERM.

The first Ctrl-C (SIGINT) or SIGTERM (sent by `timeout`, job schedulers, `kill`)
asks the loop to stop at the end of the current step; the trainer then saves
last.npz and `fit` returns with status 'interrupted' and a message saying how to
resume.  A second signal quits at once without saving (last.npz from the
previous epoch stays).  A process killed outright (kill -9) can leave a
half-written temporary checkpoint; the next `fit` in that folder deletes it
(numpyseg.atomic.remove_stale_temporaries).
"""

from __future__ import annotations

import signal
import threading


class InterruptGuard:
    """While active, the first SIGINT/SIGTERM only sets `requested`; a second raises KeyboardInterrupt.

    SIGTERM is what `timeout`, job schedulers and a plain `kill` send: it is
    treated like Ctrl-C, so the step in progress finishes and last.npz is saved.
    Handlers are installed only in the main thread (elsewhere Python forbids it)
    and only for the signals this platform has (Windows has no usable SIGTERM);
    where none is installed, Ctrl-C keeps its default behaviour (a
    KeyboardInterrupt, which the trainer handles as well).
    """

    def __init__(self, log):
        self.requested = False
        self.forced = False
        self.signal_name = None
        self._log = log
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self._log(f"{self.signal_name}: stopping after this step and saving last.npz (send it again to "
                  f"quit without saving)")

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in ("SIGINT", "SIGTERM"):
            number = getattr(signal, name, None)
            if number is None:
                continue
            try:
                self._previous[number] = signal.signal(number, self._handler)
            except (OSError, ValueError, RuntimeError):  # not settable here: keep the default
                continue
        return self

    def __exit__(self, *exc):
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}
        return False
