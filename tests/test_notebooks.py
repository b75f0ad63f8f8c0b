"""The committed tutorial notebooks are what jupytext makes of the Markdown chapters today."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def _load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, TUTORIALS / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _cells(path: Path) -> list[tuple[str, str]]:
    """(cell type, source) of every cell of a notebook file."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(c["cell_type"], "".join(c["source"])) for c in cells]


def test_notebooks_are_in_sync_with_the_markdown(tmp_path):
    pytest.importorskip("jupytext", reason="jupytext not installed (pip install -e .[notebooks])")
    notebooks = _load("tutorial_notebooks", "notebooks.py")
    runner = _load("tutorial_runner_for_notebooks", "run.py")
    fresh = notebooks.write_notebooks(tmp_path)
    chapters = runner.chapters()
    assert [p.stem for p in fresh] == [p.stem for p in chapters]
    for chapter, path in zip(chapters, fresh):
        committed = TUTORIALS / path.name
        assert committed.is_file(), f"{path.name} missing: run python tutorials/notebooks.py"
        assert _cells(committed) == _cells(path), \
            f"{committed.name} differs from {chapter.name}: run python tutorials/notebooks.py {chapter.name[:2]}"
        # every python block of the chapter, in order, is a code cell (and nothing else is)
        blocks = ["\n".join(item.lines) for item in runner.parse(chapter.read_text(encoding="utf-8"))
                  if runner.is_runnable(item)]
        assert [src for kind, src in _cells(committed) if kind == "code"] == blocks, chapter.name


def test_no_notebook_without_a_chapter():
    chapters = {p.stem for p in TUTORIALS.glob("[0-9][0-9]_*.md")}
    assert {p.stem for p in TUTORIALS.glob("*.ipynb")} == chapters
