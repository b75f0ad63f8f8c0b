"""Write every tutorial chapter as a Jupyter notebook, converted from its Markdown by jupytext.

    python tutorials/notebooks.py              # rewrite tutorials/NN_title.ipynb from NN_title.md
    python tutorials/notebooks.py 02 07        # only some chapters
    python tutorials/notebooks.py --out DIR    # write them elsewhere (the sync test does this)

Needs jupytext (`pip install -e .[notebooks]`).  The Markdown chapters stay the source:
edit a chapter's .md, run `python tutorials/run.py NN` to refresh its outputs, then this
script to refresh its notebook.

jupytext turns each ```python block into a code cell and the prose between them,
the ```text blocks of recorded output included, into Markdown cells.  The notebooks
sit beside the chapters, so they run exactly as `run.py` runs a chapter: working
directory tutorials/, figures into tutorials/figures/, whose images the Markdown
cells show.  Two things are added to what jupytext writes, so that regenerating an
unchanged chapter gives an unchanged file: the cell ids are numbered ("cell-000",
...) instead of random, and the notebook names the usual Python 3 kernel.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import chapters  # noqa: E402  (tutorials/run.py, beside this file)

KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _jupytext():
    try:
        import jupytext
    except ImportError:
        raise SystemExit("this script needs jupytext: pip install -e .[notebooks]") from None
    return jupytext


def notebook(markdown_path):
    """The notebook (an nbformat NotebookNode) of one chapter's Markdown file."""
    jupytext = _jupytext()
    nb = jupytext.reads(Path(markdown_path).read_text(encoding="utf-8"), fmt="md")
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    nb.metadata["kernelspec"] = dict(KERNEL)
    return nb


def write_notebooks(out_dir=HERE, selection=None) -> list[Path]:
    """Write NN_title.ipynb into `out_dir` for each chosen chapter; returns the paths written."""
    jupytext = _jupytext()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in chapters(selection):
        target = out_dir / (path.stem + ".ipynb")
        text = jupytext.writes(notebook(path), fmt="ipynb")
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter numbers (e.g. 02 7) or file names")
    parser.add_argument("--out", default=str(HERE), help="folder to write into (default: tutorials/)")
    args = parser.parse_args(argv)
    for path in write_notebooks(args.out, args.chapters):
        print(path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
