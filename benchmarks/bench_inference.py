"""Reproduce the README's speed table: numpyseg vs PyTorch on SA-UNetv2 at 592x592.

    python benchmarks/bench_inference.py                 # full run (a few minutes)
    python benchmarks/bench_inference.py --quick         # small smoke run
    python benchmarks/bench_inference.py --conv          # per-Conv2d-shape timings
    python benchmarks/bench_inference.py --json out.json # also keep the numbers

Same options as `numpyseg benchmark` (see numpyseg/benchmark.py for what is
measured and how).  Run it on an otherwise idle machine: numpyseg and PyTorch
are timed alternately, so their ratio survives some background load, but the
absolute times do not.
"""

import sys

from numpyseg.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
