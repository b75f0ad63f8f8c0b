"""The kernels' on-disk cache is rebuilt when any kernel source changes, and the first
compilation in a process is announced once on stderr."""

import io
from types import SimpleNamespace

from numpyseg import kernels


def test_stale_cache_is_removed_when_a_source_changes(tmp_path):
    (tmp_path / "conv_direct.conv_forward_avx2-1.py311.nbi").write_bytes(b"index")
    (tmp_path / "conv_direct.conv_forward_avx2-1.py311.1.nbc").write_bytes(b"code")
    (tmp_path / "kernels.sources").write_text("digest of older sources")
    assert kernels.refresh_stale_cache(tmp_path)
    assert not list(tmp_path.glob("*.nb?"))
    assert (tmp_path / "kernels.sources").read_text() == kernels._sources_digest()
    # the sources have not changed since: cache files compiled now are kept
    (tmp_path / "tiles.x-1.py311.nbi").write_bytes(b"index")
    assert not kernels.refresh_stale_cache(tmp_path)
    assert (tmp_path / "tiles.x-1.py311.nbi").exists()


def _compile_event(module):
    dispatcher = SimpleNamespace(py_func=SimpleNamespace(__module__=module))
    return SimpleNamespace(data={"dispatcher": dispatcher})


def test_first_kernel_compilation_is_announced_once(monkeypatch):
    monkeypatch.delenv("NUMPYSEG_QUIET_COMPILE", raising=False)
    stream = io.StringIO()
    notice = kernels.CompileNotice(stream)
    notice.on_start(_compile_event("someone_else"))  # a user's own numba function: not ours to announce
    assert stream.getvalue() == ""
    notice.on_start(_compile_event("numpyseg.kernels.conv_direct"))
    notice.on_start(_compile_event("numpyseg.kernels.transpose"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("numpyseg: compiling the numba kernels for this CPU")
    assert kernels.TILE_VARIANT in lines[0]


def test_compile_notice_can_be_silenced(monkeypatch):
    monkeypatch.setenv("NUMPYSEG_QUIET_COMPILE", "1")
    stream = io.StringIO()
    kernels.CompileNotice(stream).on_start(_compile_event("numpyseg.kernels.pool"))
    assert stream.getvalue() == ""
