"""Execute the tutorial chapters and write what their code printed back into them.

Every chapter is a Markdown file ``tutorials/NN_title.md``.  Its ```python blocks are
executed in order in one namespace (working directory: tutorials/, matplotlib's Agg
backend), and the text each block prints is written into the ```text block that
immediately follows it (separated from it by one blank line).  So the Markdown on the
code-hosting site always shows real output, and the test suite runs the very same code.

    python tutorials/run.py                 # every chapter, full mode, rewrite the .md files
    python tutorials/run.py 02 07           # only chapters 02 and 07
    python tutorials/run.py --short 10      # short mode (what the tests run)
    python tutorials/run.py --check         # run each chapter in the mode its page was
                                            # produced in and compare the fresh outputs
                                            # with the page's; rewrite nothing (exit 1 on
                                            # a difference, one line per differing line)

Conventions inside a chapter:

* ```python blocks run; a block whose info string is ``python norun`` is only shown.
* The output block of a python block is the ```text block right after it; the runner
  adds, replaces or (when nothing was printed) removes it.  A ```text block that is
  not output must be separated from the code above it by prose.
* The chapter reads two environment variables the runner sets:
  NUMPYSEG_TUTORIAL_SHORT ("1": short mode) and NUMPYSEG_TUTORIAL_FIGURES (the folder
  its figures go to, "figures" by default).
* A line starting with "> Outputs on this page" is rewritten to say which mode and
  command produced the outputs and how long the code ran ("in about 3 s"); that
  line is the one source of a chapter's run time (tutorials/README.md's table is
  checked against it by the test suite).

Checking (--check).  Each output line is compared with the page's: the text with
runs of spaces collapsed must be equal, and every number must agree to a relative
tolerance (--rtol, 1e-6) plus an absolute one (--atol, 1e-9).  Parts of a line that
change from run to run are masked on both sides before comparing: a number with a
time or rate unit ("0.8 s", "12 ms", "31 img/s", "4 min"), absolute paths and dates.
A chapter marks the rest itself with an HTML comment (invisible on the rendered
page) in the prose before a python block; it applies to that block's output:

    <!-- volatile: REGEX -->     output lines matching REGEX (re.search) are skipped
    <!-- volatile -->            the whole output of the block is skipped
    <!-- tolerance: 1e-3 -->     numbers of this block's output agree to 1e-3 (relative
                                 and absolute), e.g. float32 sums whose last digits
                                 depend on the CPU's register tile
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
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
RTOL, ATOL = 1e-6, 1e-9  # default tolerances of --check
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|\b(?:nan|inf)\b")
UNIT = r"(?:s|ms|µs|us|ns|min|h|img/s|images/s|steps/s|it/s|[KMGT]?FLOP/s|[KMG]i?B/s)"
# masked on both sides before comparing: timings and rates, absolute paths, dates and clock times
VOLATILE_TOKENS = (
    re.compile(r"(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?\s?" + UNIT + r"(?![\w/])"),
    re.compile(r"(?<![\w.])(?:[A-Za-z]:\\|/)(?:[\w.-]+[/\\])+[\w.-]*"),
    re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?|\b\d{2}:\d{2}:\d{2}\b"),
)
MARKER = re.compile(r"^\s*<!--\s*(volatile|tolerance)\s*(?::\s*(.*?))?\s*-->\s*$")


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


def about(seconds: float) -> str:
    """A run time as the status line states it: 'about 3 s', 'about 25 s', 'about 4 min'."""
    if seconds < 9.5:
        return f"about {max(1, round(seconds))} s"
    if seconds < 57.5:
        return f"about {5 * round(seconds / 5)} s"
    return f"about {max(1, round(seconds / 60))} min"


def run_time(text: str) -> str | None:
    """The run time the status line of a chapter states ('about 3 s'), or None."""
    match = re.search(re.escape(STATUS_PREFIX) + r".* in (about \d+ (?:s|min))\.\s*$", text, re.M)
    return match.group(1) if match else None


def chapters(selection: list[str] | None = None) -> list[Path]:
    """The chapter files, in order; `selection` holds numbers ('2', '02'), names or .md paths."""
    found = sorted(p for p in HERE.glob("[0-9][0-9]_*.md"))
    if not selection:
        return found
    chosen = []
    for item in selection:
        if Path(item).suffix == ".md" and Path(item).is_file():  # a chapter file elsewhere
            chosen.append(Path(item).resolve())
            continue
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


# ------------------------------------------------------------------ checking
@dataclass
class Expectation:
    """What the page says a python block prints, and how to compare it."""

    block: int  # 1-based number of the python block in the chapter
    line: int  # Markdown line of the block's opening fence
    lines: list[str]  # the committed output (empty: the block prints nothing)
    volatile: list[re.Pattern] = field(default_factory=list)  # output lines to skip
    whole_block_volatile: bool = False
    tolerance: float | None = None  # overrides rtol and atol for this block


def page_mode(text: str) -> tuple[bool | None, list[str]]:
    """(short?, optional inputs) the page's status line names; (None, []) without one."""
    for line in text.split("\n"):
        if line.startswith(STATUS_PREFIX):
            short = "short mode" in line
            return short, [name for name in OPTIONAL_INPUTS if f"{name} set" in line]
    return None, []


def expectations(text: str) -> list[Expectation]:
    """The committed output of every runnable block of a chapter, with its markers."""
    items = parse(text)
    found, pending = [], []
    for k, item in enumerate(items):
        if isinstance(item, str):
            match = MARKER.match(item)
            if match:
                pending.append(match.groups())
            continue
        if not is_runnable(item):
            continue
        out = output_block_after(items, k)
        expectation = Expectation(len(found) + 1, item.start + 1, items[out].lines if out is not None else [])
        for kind, argument in pending:
            if kind == "tolerance":
                expectation.tolerance = float(argument)
            elif argument:
                expectation.volatile.append(re.compile(argument))
            else:
                expectation.whole_block_volatile = True
        pending = []
        found.append(expectation)
    return found


def _skipped(line: str, volatile: list[re.Pattern]) -> bool:
    return any(pattern.search(line) for pattern in volatile)


def _mask(line: str) -> str:
    for pattern in VOLATILE_TOKENS:
        line = pattern.sub("<volatile>", line)
    return line


def _skeleton(line: str) -> tuple[str, list[str]]:
    """A line's text with its numbers replaced by '#' and spaces collapsed, and the numbers."""
    numbers = NUMBER.findall(line)
    text = " ".join(NUMBER.sub("#", line).split())
    return text, numbers


def lines_agree(expected: str, fresh: str, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Same text (spaces collapsed, volatile parts masked) and numbers within the tolerances."""
    text_e, num_e = _skeleton(_mask(expected))
    text_f, num_f = _skeleton(_mask(fresh))
    if text_e != text_f or len(num_e) != len(num_f):
        return False
    for a, b in zip(num_e, num_f):
        a, b = float(a), float(b)
        if a == b or (math.isnan(a) and math.isnan(b)):
            continue
        if not abs(a - b) <= atol + rtol * max(abs(a), abs(b)):
            return False
    return True


def compare_outputs(name: str, expected: list[Expectation], fresh: list[str],
                    rtol: float = RTOL, atol: float = ATOL) -> list[str]:
    """One line per output line that differs: chapter, block, expected and fresh line."""
    report = []
    if len(expected) != len(fresh):
        return [f"{name}: the page has {len(expected)} python blocks, the run gave {len(fresh)} outputs"]
    for exp, out in zip(expected, fresh):
        if exp.whole_block_volatile:
            continue
        want = [line for line in exp.lines if not _skipped(line, exp.volatile)]
        got = [line for line in out.split("\n") if not _skipped(line, exp.volatile)] if out else []
        r, a = (exp.tolerance, exp.tolerance) if exp.tolerance is not None else (rtol, atol)
        where = f"{name} block {exp.block} (line {exp.line})"
        for i in range(max(len(want), len(got))):
            w = want[i] if i < len(want) else None
            g = got[i] if i < len(got) else None
            if w is None or g is None or not lines_agree(w, g, r, a):
                shown_w = "nothing" if w is None else repr(w.strip())
                shown_g = "nothing" if g is None else repr(g.strip())
                report.append(f"{where} output line {i + 1}: expected {shown_w}, got {shown_g}")
    return report


def check_chapter(path, *, rtol: float = RTOL, atol: float = ATOL, figures_dir=None,
                  echo: bool = False) -> tuple[list[str], ChapterResult | None]:
    """Run a chapter in the mode its page was produced in and compare its outputs with the page's.

    Returns:
        (report, result): one line per difference (empty: the page is up to date), and
        the run's ChapterResult.  When the page was produced with an optional input
        (NUMPYSEG_DRIVE, ...) that is not set here, the chapter is only run and the
        report holds a single line starting with "not compared".

    Raises:
        ChapterError: a block raised.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    short, inputs = page_mode(text)
    missing = [name for name in inputs if not os.environ.get(name)]
    # inputs the page was produced without are hidden from the run, so that it does the same
    hidden = [name for name in OPTIONAL_INPUTS if name not in inputs]
    saved = {name: os.environ.pop(name) for name in hidden if name in os.environ}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_chapter(path, short=bool(short), figures_dir=figures_dir or tmp, echo=echo)
    finally:
        os.environ.update(saved)
    if missing:
        return [f"not compared: {path.name} was produced with {' and '.join(missing)} set, "
                "which is not set here"], result
    return compare_outputs(path.name, expectations(text), result.outputs, rtol, atol), result


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
            items[i] = f"{STATUS_PREFIX} were produced by `{command}` ({mode}) in {about(seconds)}."
    markdown = render(items)
    if write and markdown != text:
        path.write_text(markdown, encoding="utf-8")
    return ChapterResult(path, seconds, outputs, FIGURE_LINK.findall(markdown), markdown)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter numbers (e.g. 02 7) or file names")
    parser.add_argument("--short", action="store_true", help="short mode, as in the test suite")
    parser.add_argument("--check", action="store_true",
                        help="rewrite nothing: run each chapter in the mode its page names and compare "
                             "the outputs with the page's (with --short: short mode, only run)")
    parser.add_argument("--rtol", type=float, default=RTOL, help=f"--check: relative tolerance ({RTOL:g})")
    parser.add_argument("--atol", type=float, default=ATOL, help=f"--check: absolute tolerance ({ATOL:g})")
    parser.add_argument("--quiet", action="store_true", help="do not echo the outputs")
    args = parser.parse_args(argv)
    failures = 0
    compare = args.check and not args.short
    with tempfile.TemporaryDirectory() as tmp:
        for path in chapters(args.chapters):
            if compare:
                short = bool(page_mode(path.read_text(encoding="utf-8"))[0])
            else:
                short = args.short
            print(f"== {path.name} ({'short' if short else 'full'} mode)", flush=True)
            report: list[str] = []
            try:
                if compare:
                    report, result = check_chapter(path, rtol=args.rtol, atol=args.atol,
                                                   figures_dir=Path(tmp), echo=not args.quiet)
                else:
                    result = run_chapter(path, short=short, write=not args.check,
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
            if report and report[0].startswith("not compared"):
                print(report[0], file=sys.stderr)
            elif report:
                failures += 1
                print("\n".join(report), file=sys.stderr)
            state = (f", {len(report)} stale output lines" if report and compare
                     and not report[0].startswith("not compared") else "")
            print(f"-- {path.name}: {result.seconds:.1f} s, {len(result.figures)} figures{state}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
