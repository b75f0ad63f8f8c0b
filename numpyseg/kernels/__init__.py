"""numba kernels: the implementation of the layers' `<op>_forward_fast` / `<op>_backward_fast`.

Each operation's plain-NumPy reference sits beside its fast version in its layer module
(numpyseg/layers/*.py); in the "reference" backend (numpyseg.backends) none of these
kernels runs.

`TILE_VARIANT` names the register-tile shape the convolution kernels use on
this CPU ('avx512', 'avx2' or 'portable'; see numpyseg.kernels.tiles).

numba compiles a kernel to machine code the first time it is called, and with
`cache=True` stores the result beside the source (``__pycache__/*.nbi, *.nbc``)
so later processes load it in milliseconds.  Two things here make that first
time visible and safe:

- the first compilation of a numpyseg kernel in a process prints one line on
  stderr (it can take tens of seconds once after installing); set
  NUMPYSEG_QUIET_COMPILE=1 to silence it;
- numba's cache notices when a kernel's own file changes, not when a function
  it inlines from another file does, so at import the kernels' cache is
  cleared whenever any kernel source differs from the one it was built from.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from numba.core import event

from numpyseg.kernels.tiles import TILE_VARIANT, instruction_set  # noqa: F401

_FOLDER = Path(__file__).resolve().parent


def _sources_digest() -> str:
    """SHA-256 of every kernel source file (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(_FOLDER.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def refresh_stale_cache(cache: Path = _FOLDER / "__pycache__") -> bool:
    """Delete numba's cached kernels if any kernel source changed since they were built.

    The digest of the sources is kept in `cache`/kernels.sources; returns True
    when old cache files were removed.  A read-only install is left alone.
    """
    stamp = cache / "kernels.sources"
    current = _sources_digest()
    try:
        if stamp.read_text() == current:
            return False
    except OSError:
        pass
    removed = False
    try:
        cache.mkdir(exist_ok=True)
        for path in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            path.unlink()
            removed = True
        stamp.write_text(current)
    except OSError:
        return removed
    return removed


class CompileNotice(event.Listener):
    """Prints one line on stderr when numba starts compiling the first numpyseg kernel of the process."""

    def __init__(self, stream=None):
        self.stream = stream
        self.shown = False

    def on_start(self, ev):
        dispatcher = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
        if self.shown or not module.startswith("numpyseg.") or os.environ.get("NUMPYSEG_QUIET_COMPILE"):
            return
        self.shown = True
        print(f"numpyseg: compiling the numba kernels for this CPU ({instruction_set()}, '{TILE_VARIANT}' tiles); "
              f"this happens once, later runs load them from the cache", file=self.stream or sys.stderr, flush=True)

    def on_end(self, ev):
        pass


if os.environ.get("NUMBA_CACHE_DIR") is None:
    refresh_stale_cache()
event.register("numba:compile", CompileNotice())
