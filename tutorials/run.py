"""Execute the tutorial chapters and write what their code printed back into them.

Every chapter is a Markdown file ``tutorials/NN_title.md``.  Its ```python blocks are
executed in order in one namespace (working directory: tutorials/, matplotlib's Agg
backend), and the text each block prints is written into the ```text block that
immediately follows it (separated from it by one blank line).  So the Markdown on the
code-hosting site always shows real output, and the test suite runs the very same code.

    python tutorials/run.py                 # every chapter, full mode, rewrite the .md files
    python tutorials/run.py 02 07           # only chapters 02 and 07
    python tutorials/run.py --short 10      # short mode (what the tests run)
    python tutorials/run.py --check         # execute only: no file is rewritten,
                                            # figures go to a temporary folder

Conventions inside a chapter:

* ```python blocks run; a block whose info string is ``python norun`` is only shown.
* The output block of a python block is the ```text block right after it; the runner
  adds, replaces or (when nothing was printed) removes it.  A ```text block that is
  not output must be separated from the code above it by prose.
* The chapter reads two environment variables the runner sets:
  NUMPYSEG_TUTORIAL_SHORT ("1": short mode) and NUMPYSEG_TUTORIAL_FIGURES (the folder
  its figures go to, "figures" by default).
* A line starting with "> Outputs on this page" is rewritten to say which mode and
  command produced the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIGURE_LINK = re.compile(r"!\[[^\]]*\]\((figures/[^)\s]+)\)")
STATUS_PREFIX = "> Outputs on this page"
SHORT_ENV = "NUMPYSEG_TUTORIAL_SHORT"
FIGURES_ENV = "NUMPYSEG_TUTORIAL_FIGURES"
OPTIONAL_INPUTS = ("NUMPYSEG_DRIVE", "NUMPYSEG_WEIGHTS")  # data a chapter may use when present


class ChapterError(RuntimeError):
    """A code block of a chapter raised; the message names the chapter file and line."""


@dataclass
class Block:
    """A fenced block: its info string, the lines inside it and its position."""

    info: str
    lines: list[str]
    start: int  # index of the opening fence line in the file


@dataclass
class ChapterResult:
    path: Path
    seconds: float
    outputs: list[str]
    figures: list[str] = field(default_factory=list)  # figure paths the chapter links to
    markdown: str = ""  # the chapter with fresh outputs


def chapters(selection: list[str] | None = None) -> list[Path]:
    """The chapter files, in order; `selection` holds numbers ('2', '02') or file names."""
    found = sorted(p for p in HERE.glob("[0-9][0-9]_*.md"))
    if not selection:
        return found
    chosen = []
    for item in selection:
        key = item.zfill(2) if item.isdigit() else item
        match = [p for p in found if p.name.startswith(key + "_") or p.name == key or p.stem == key]
        if not match:
            raise SystemExit(f"no chapter matches {item!r} (have: {', '.join(p.name for p in found)})")
        chosen.extend(m for m in match if m not in chosen)
    return chosen


def parse(text: str) -> list[object]:
    """Split Markdown into a list of str (prose lines) and Block (fenced blocks)."""
    lines = text.split("\n")
    items: list[object] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```") and line.strip() != "```":
            info = line[3:].strip()
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            if j == len(lines):
                raise ValueError(f"unclosed code fence opened at line {i + 1}")
            items.append(Block(info, lines[i + 1 : j], i))
            i = j + 1
        else:
            items.append(line)
            i += 1
    return items


def is_runnable(item: object) -> bool:
    return isinstance(item, Block) and item.info.split()[:1] == ["python"] and "norun" not in item.info.split()


def output_block_after(items: list[object], k: int) -> int | None:
    """Index of the output block of python block items[k]: one blank line, then ```text."""
    if k + 2 < len(items) and items[k + 1] == "" and isinstance(items[k + 2], Block) \
            and items[k + 2].info == "text":
        return k + 2
    return None


def render(items: list[object]) -> str:
    out = []
    for item in items:
        if isinstance(item, Block):
            out.append("```" + item.info)
            out.extend(item.lines)
            out.append("```")
        else:
            out.append(item)
    return "\n".join(out)


def _clean(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r", "").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@contextlib.contextmanager
def _environment(short: bool, figures_dir: Path):
    """cwd = tutorials/, the two tutorial variables set, Agg backend; restored afterwards."""
    saved = {k: os.environ.get(k) for k in (SHORT_ENV, FIGURES_ENV, "MPLBACKEND")}
    old_cwd = os.getcwd()
    os.environ[SHORT_ENV] = "1" if short else "0"
    os.environ[FIGURES_ENV] = str(figures_dir)
    os.environ["MPLBACKEND"] = "Agg"
    import matplotlib

    matplotlib.use("Agg")
    os.chdir(HERE)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import matplotlib.pyplot as plt

        plt.close("all")


def run_chapter(path, *, short: bool = False, figures_dir=None, write: bool = False,
                echo: bool = False) -> ChapterResult:
    """Execute one chapter.

    Args:
        path: the chapter's Markdown file.
        short: short mode (NUMPYSEG_TUTORIAL_SHORT=1), as the tests run it.
        figures_dir: where the chapter writes its figures (default tutorials/figures).
        write: rewrite the Markdown file with the fresh outputs.
        echo: print each block's output as it runs.

    Returns:
        A ChapterResult (time taken, outputs, linked figures, the refreshed Markdown).

    Raises:
        ChapterError: a block raised; the message holds the traceback with line numbers
            of the Markdown file.
    """
    path = Path(path).resolve()
    figures_dir = Path(figures_dir).resolve() if figures_dir else HERE / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8")
    items = parse(text)
    namespace: dict = {"__name__": "__main__", "__file__": str(path)}
    outputs: list[str] = []
    started = time.perf_counter()
    with _environment(short, figures_dir):
        k = 0
        while k < len(items):
            item = items[k]
            if not is_runnable(item):
                k += 1
                continue
            # leading newlines make traceback line numbers those of the Markdown file
            source = "\n" * (item.start + 1) + "\n".join(item.lines) + "\n"
            buffer = io.StringIO()
            try:
                code = compile(source, str(path), "exec")
                with contextlib.redirect_stdout(buffer):
                    exec(code, namespace)
            except Exception as error:  # noqa: BLE001 - re-raised with the chapter's context
                tb = traceback.format_exc()
                raise ChapterError(
                    f"{path.name}: the code block at line {item.start + 1} raised "
                    f"{type(error).__name__}: {error}\n{buffer.getvalue()}\n{tb}"
                ) from error
            printed = _clean(buffer.getvalue())
            outputs.append("\n".join(printed))
            if echo and printed:
                print("\n".join(printed))
            existing = output_block_after(items, k)
            if printed:
                block = Block("text", printed, -1)
                if existing is None:
                    items[k + 1 : k + 1] = ["", block]
                else:
                    items[existing] = block
                k += 3
            else:
                if existing is not None:
                    del items[k + 1 : k + 3]
                k += 1
    seconds = time.perf_counter() - started
    mode = "short mode, NUMPYSEG_TUTORIAL_SHORT=1" if short else "full mode"
    # say which optional inputs the chapter found, if it reads them
    used = [name for name in OPTIONAL_INPUTS if os.environ.get(name) and name in text]
    if used:
        mode += ", with " + " and ".join(f"{name} set" for name in used)
    command = f"python tutorials/run.py {'--short ' if short else ''}{path.name[:2]}"
    for i, item in enumerate(items):
        if isinstance(item, str) and item.startswith(STATUS_PREFIX):
            items[i] = f"{STATUS_PREFIX} were produced by `{command}` ({mode})."
    markdown = render(items)
    if write and markdown != text:
        path.write_text(markdown, encoding="utf-8")
    return ChapterResult(path, seconds, outputs, FIGURE_LINK.findall(markdown), markdown)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter numbers (e.g. 02 7) or file names")
    parser.add_argument("--short", action="store_true", help="short mode, as in the test suite")
    parser.add_argument("--check", action="store_true",
                        help="only execute: rewrite nothing, write figures to a temporary folder")
    parser.add_argument("--quiet", action="store_true", help="do not echo the outputs")
    args = parser.parse_args(argv)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in chapters(args.chapters):
            print(f"== {path.name} ({'short' if args.short else 'full'} mode)", flush=True)
            try:
                result = run_chapter(path, short=args.short, write=not args.check,
                                     figures_dir=Path(tmp) if args.check else None,
                                     echo=not args.quiet)
            except ChapterError as error:
                failures += 1
                print(error, file=sys.stderr)
                continue
            where = Path(tmp) if args.check else HERE / "figures"
            missing = [f for f in result.figures if not (where / Path(f).name).is_file()]
            if missing:
                failures += 1
                print(f"{path.name}: linked figures not produced: {', '.join(missing)}", file=sys.stderr)
            print(f"-- {path.name}: {result.seconds:.1f} s, {len(result.figures)} figures", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
