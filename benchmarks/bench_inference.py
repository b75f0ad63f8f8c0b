"""Reproduce the README's speed table: numpyseg vs PyTorch, ONNX Runtime and OpenVINO on SA-UNetv2.

    python benchmarks/bench_inference.py                 # full run (a few minutes)
    python benchmarks/bench_inference.py --quick         # small smoke run
    python benchmarks/bench_inference.py --conv          # per-Conv2d-shape timings
    python benchmarks/bench_inference.py --json out.json # also keep the numbers

The same command as `numpyseg benchmark`, with the same options (see
numpyseg/devtools/benchmark.py for what is measured and how).  Run it on an otherwise idle
machine: the engines are timed alternately, so their ratios survive some background
load, but the absolute times do not.
"""

import sys

from numpyseg.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
