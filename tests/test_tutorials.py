"""Every tutorial chapter runs (short mode) and produces the figures it shows.

The chapters are executed by tutorials/run.py exactly as `python tutorials/run.py
--short` would, except that nothing is rewritten and the figures go to a temporary
folder; a chapter whose code raises, or that links a figure its code did not write,
fails here.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def _load_runner():
    spec = importlib.util.spec_from_file_location("tutorial_runner", TUTORIALS / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
CHAPTERS = runner.chapters()


def test_there_are_chapters_and_a_readme():
    assert len(CHAPTERS) >= 1
    readme = (TUTORIALS / "README.md").read_text(encoding="utf-8")
    for path in CHAPTERS:
        assert path.name in readme, f"tutorials/README.md does not link {path.name}"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_structure(path):
    """Time estimate and output status at the top; a summary; 2-3 exercises with folded solutions."""
    text = path.read_text(encoding="utf-8")
    head = text[:600]
    assert "**Time:**" in head and runner.STATUS_PREFIX in head, f"{path.name}: no time / status line at the top"
    assert "SHORT = os.environ.get(\"NUMPYSEG_TUTORIAL_SHORT\")" in text, f"{path.name} ignores short mode"
    summary, exercises = text.find("\n## Summary"), text.find("\n## Exercises")
    assert 0 < summary < exercises, f"{path.name}: needs '## Summary' followed by '## Exercises'"
    solutions = text[exercises:].count("<details><summary>Solution</summary>")
    assert 2 <= solutions <= 3, f"{path.name}: {solutions} folded solutions, expected 2 or 3"
    assert text.count("<details>") == text.count("</details>"), f"{path.name}: unbalanced <details>"


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_and_draws_its_figures(path, tmp_path):
    text_before = path.read_text(encoding="utf-8")
    started = time.perf_counter()
    result = runner.run_chapter(path, short=True, figures_dir=tmp_path, write=False)
    elapsed = time.perf_counter() - started
    assert path.read_text(encoding="utf-8") == text_before, "the test run must not rewrite the chapter"
    assert any(result.outputs), f"{path.name} printed nothing"
    for link in result.figures:
        produced = tmp_path / Path(link).name
        assert produced.is_file() and produced.stat().st_size > 1000, f"{path.name}: {link} not drawn"
        # the committed copy exists too, so the page renders on the code-hosting site
        assert (TUTORIALS / link).is_file(), f"{link} is linked but not committed in tutorials/"
    print(f"{path.name}: {elapsed:.1f} s")


def test_runner_rewrites_the_output_block(tmp_path):
    chapter = tmp_path / "99_demo.md"
    chapter.write_text(
        "# Demo\n\n> Outputs on this page\n\n```python\nprint(6 * 7)\n```\n\n```text\nstale\n```\n\n"
        "Text.\n\n```python\nx = 1\n```\n\n```text\nremoved: nothing printed\n```\n\n"
        "```python norun\nraise SystemExit\n```\n\n```python\nprint(x + 1)\n```\n",
        encoding="utf-8",
    )
    result = runner.run_chapter(chapter, figures_dir=tmp_path / "fig", write=True)
    text = chapter.read_text(encoding="utf-8")
    assert "```text\n42\n```" in text and "stale" not in text and "removed" not in text
    assert text.endswith("```python\nprint(x + 1)\n```\n\n```text\n2\n```\n")
    assert "python tutorials/run.py 99" in text
    assert result.outputs == ["42", "", "2"]
    # idempotent: a second run changes nothing
    runner.run_chapter(chapter, figures_dir=tmp_path / "fig", write=True)
    assert chapter.read_text(encoding="utf-8") == text


def test_runner_reports_the_markdown_line_of_an_error(tmp_path):
    chapter = tmp_path / "98_broken.md"
    chapter.write_text("# Broken\n\n```python\na = 1\nb = a / 0\n```\n", encoding="utf-8")
    with pytest.raises(runner.ChapterError, match="line 3") as info:
        runner.run_chapter(chapter, figures_dir=tmp_path)
    assert "line 5" in str(info.value)  # the traceback points at `b = a / 0` in the .md file
