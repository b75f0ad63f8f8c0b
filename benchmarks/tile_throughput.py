"""Static throughput of each register-tile variant on CPU models, by LLVM's llvm-mca.

A tile variant can only be timed on a CPU that has its instruction set, but its
machine code can be compiled for any CPU model and its inner loop simulated by
llvm-mca (a cycle-level model of the CPU's ports and latencies).  For every tile
variant, this script compiles the convolution forward kernel and the
weight-gradient kernel in a fresh process for a target CPU (numba's
NUMBA_CPU_NAME / NUMBA_CPU_FEATURES), finds the tile's inner loop (the basic
block with the most independent FMA accumulators), and reports per CPU model:
the loop's vector registers spilled to the stack, its cycles per iteration and
its float32 FLOPs per cycle against the model's peak.

    python benchmarks/tile_throughput.py                     # AVX2 targets: haswell, skylake, znver2, alderlake
    python benchmarks/tile_throughput.py --target avx512 --models skylake-avx512,znver4

Needs llvm-mca (Debian/Ubuntu: apt-get install llvm).  Figures are a model's
estimate, not a measurement: compare variants with them, measure with
`numpyseg benchmark` on the real CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# What numba is told to compile for (a CPU name and its feature list).
TARGETS = {
    "avx2": ("haswell", "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,"
                        "+pclmul,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,-avx512f,"
                        "-avx512bw,-avx512dq,-avx512vl,-avx512cd"),
    "avx512": ("skylake-avx512", "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,"
                                 "+movbe,+pclmul,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,"
                                 "+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd,+evex512,-prefer-256-bit"),
}

_CHILD = r"""
import json, sys
import numpy as np
from numpyseg.kernels import conv_direct as cd
variant = sys.argv[1]
x = np.zeros((1, 24, 40, 16), np.float32)
cd.conv_forward(x, np.zeros((3, 3, 16, 32), np.float32), np.zeros(32, np.float32), variant=variant)
cd.conv_weight_grad(x, np.zeros((1, 24, 40, 32), np.float32), 3, variant=variant)
from numpyseg.kernels.tiles import TILE_SHAPES
width = TILE_SHAPES[variant].width
# the forward driver calls the tile as a separate function, compiled once per tile width: take the full one
asm = {"forward": "\n".join(text for sig, text in cd._forward_tile.inspect_asm().items()
                             if str(sig[-1]) == f"Literal[int]({width})"),
       "weight gradient": "\n".join(cd.CONV_WEIGHT_GRAD[variant].inspect_asm().values())}
print(json.dumps(asm))
"""


def basic_blocks(asm: str) -> list[list[str]]:
    """The instructions of each basic block (ended by a label or a jump), directives dropped."""
    blocks, current = [], []
    for line in asm.splitlines():
        if re.match(r"^\.?L\w+:", line) or re.match(r"^\w[\w.$]*:", line):
            if current:
                blocks.append(current)
            current = []
            continue
        text = line.split("#")[0].strip()
        if text and not text.startswith("."):
            current.append(text)
            if text.startswith("j"):  # a jump ends the block
                blocks.append(current)
                current = []
    if current:
        blocks.append(current)
    return blocks


def tile_loop(asm: str) -> list[str]:
    """The block with the most distinct FMA accumulators (then the most FMAs): the tile's inner loop."""
    def score(block):
        fmas = [i for i in block if i.startswith("vfmadd")]
        accumulators = {re.findall(r"%[xyz]mm\d+", i)[-1] for i in fmas if re.findall(r"%[xyz]mm\d+", i)}
        return len(accumulators), len(fmas)
    return max(basic_blocks(asm), key=score)


def analyse(block: list[str], model: str) -> dict:
    """llvm-mca's cycles per iteration of `block` on CPU `model`, and its FLOPs per cycle."""
    fmas = [i for i in block if i.startswith("vfmadd")]
    lanes = 16 if any("zmm" in i for i in fmas) else 8 if any("ymm" in i for i in fmas) else 4
    result = subprocess.run(["llvm-mca", f"-mcpu={model}", "-iterations=300"], input="\n".join(block),
                            capture_output=True, text=True)
    found = re.search(r"Total Cycles:\s+(\d+)", result.stdout)
    if not found:
        return {"error": (result.stderr.strip().splitlines() or ["llvm-mca failed"])[0]}
    cycles = int(found.group(1)) / 300
    return {"cycles": cycles, "flops_per_cycle": 2 * len(fmas) * lanes / cycles}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(TARGETS), default="avx2", help="instruction set to compile for")
    parser.add_argument("--models", default=None, help="llvm-mca CPU models, comma-separated")
    parser.add_argument("--variants", default="avx512,avx2,portable", help="tile variants to compare")
    args = parser.parse_args(argv)
    if shutil.which("llvm-mca") is None:
        print("tile_throughput: error: llvm-mca not found: install LLVM's tools (e.g. apt-get install llvm)",
              file=sys.stderr)
        return 2
    cpu, features = TARGETS[args.target]
    models = (args.models or ("haswell,skylake,znver2,alderlake" if args.target == "avx2"
                              else "skylake-avx512,icelake-server")).split(",")
    peak = 2 * 2 * (16 if args.target == "avx512" else 8)  # two FMA units x 2 FLOPs x lanes
    print(f"compiled for {cpu} ({args.target}); llvm-mca models: {', '.join(models)}; "
          f"peak {peak} float32 FLOPs per cycle per core")
    print("| variant | kernel | FMAs per iteration | stack accesses | " + " | ".join(models) + " |")
    print("|---|---|---|---|" + "---|" * len(models))
    for variant in args.variants.split(","):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features, NUMBA_CACHE_DIR=cache,
                       NUMPYSEG_QUIET_COMPILE="1", NUMBA_NUM_THREADS="1")
            child = subprocess.run([sys.executable, "-c", _CHILD, variant], env=env, capture_output=True,
                                   text=True, timeout=900)
        if child.returncode != 0:
            print(f"| {variant} | compilation failed: {child.stderr.strip().splitlines()[-1]} |")
            continue
        for kernel, asm in json.loads(child.stdout).items():
            block = tile_loop(asm)
            fmas = sum(i.startswith("vfmadd") for i in block)
            stack = sum("(%rsp)" in i and "mm" in i for i in block)
            cells = []
            for model in models:
                r = analyse(block, model)
                cells.append(r["error"] if "error" in r else
                             f"{r['cycles']:.1f} cycles, {r['flops_per_cycle']:.1f} FLOP/cycle "
                             f"({100 * r['flops_per_cycle'] / peak:.0f} %)")
            print(f"| {variant} | {kernel} | {fmas} | {stack} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
