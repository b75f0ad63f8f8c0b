"""Every register-tile variant (numpyseg.kernels.tiles.TILE_SHAPES) against the plain references.

The variants differ only in speed: each must give the reference's numbers on whatever CPU
runs the tests, for the convolution (forward, dx, dW) and the transposed convolution
(forward, dx, dw), at sizes that exercise full tiles, overlapping last tiles, border pixels,
rows narrower than a tile, partial lane blocks and padded channels.
"""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from numpyseg.errors import ConfigError
from numpyseg.kernels import conv_direct, tiles, transpose
from numpyseg.layers.conv import (conv2d_backward_fast, conv2d_backward_reference, conv2d_forward_fast,
                                  conv2d_forward_reference)
from numpyseg.layers.conv_transpose import (conv_transpose2d_backward_fast, conv_transpose2d_backward_reference,
                                            conv_transpose2d_forward_fast, conv_transpose2d_forward_reference)

VARIANTS = sorted(tiles.TILE_SHAPES)

# (N, H, W, C_in, C_out, k): one full tile plus leftovers, C_out = 48 (two blocks then one),
# C_out not a multiple of any lane count, C_in not a multiple of the weight-gradient tile,
# rows narrower than a tile, 5x5 kernels.
CONV_CASES = [(2, 6, 19, 16, 32, 3), (1, 5, 23, 32, 48, 3), (2, 7, 9, 3, 20, 3), (1, 4, 5, 12, 16, 3),
              (1, 6, 14, 9, 17, 5), (2, 3, 30, 16, 64, 3)]
# (N, H, W, C_in, C_out, k, stride)
TRANSPOSE_CASES = [(2, 4, 13, 16, 32, 3, 2), (1, 3, 11, 64, 48, 3, 2), (2, 3, 2, 5, 3, 3, 2),
                   (1, 5, 17, 8, 20, 3, 2), (2, 3, 10, 4, 9, 3, 3)]


def _close(a, b, tol=2e-5):
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv_variant_matches_reference(rng, variant, case):
    n, h, w, c_in, c_out, k = case
    x = rng.standard_normal((n, h, w, c_in)).astype(np.float32)
    wt = rng.standard_normal((k, k, c_in, c_out)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    g = rng.standard_normal((n, h, w, c_out)).astype(np.float32)
    ref, ref_cache = conv2d_forward_reference(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64))
    out, cache = conv2d_forward_fast(x, wt, b, variant=variant)
    _close(out, ref)
    # dx: the convolution of dout with the flipped kernel, dW = cols^T dout, by the variant's kernels
    for got, want in zip(conv2d_backward_fast(g, cache), conv2d_backward_reference(g.astype(np.float64), ref_cache)):
        _close(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=lambda c: "x".join(map(str, c)))
def test_transpose_variant_matches_reference(rng, variant, case):
    n, h, w, c_in, c_out, k, s = case
    x = rng.standard_normal((n, h, w, c_in)).astype(np.float32)
    wt = rng.standard_normal((k, k, c_out, c_in)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    g = rng.standard_normal((n, s * h, s * w, c_out)).astype(np.float32)
    offset = max(k - s, 0) // 2
    ref, ref_cache = conv_transpose2d_forward_reference(x.astype(np.float64), wt.astype(np.float64),
                                                        b.astype(np.float64), s)
    out, cache = conv_transpose2d_forward_fast(x, wt, b, s, variant=variant)
    assert cache[-1] == variant and offset == max(k - s, 0) // 2
    _close(out, ref)
    for got, want in zip(conv_transpose2d_backward_fast(g, cache),
                         conv_transpose2d_backward_reference(g.astype(np.float64), ref_cache)):
        _close(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_entry_points_pass_the_tables_shape(variant):
    # each variant's entry points write its TileShape as constants; the table and the code must agree
    shape = tiles.TILE_SHAPES[variant]
    forward = f"{shape.pixels}, {shape.lanes}, {shape.width})"
    transposed = f"{shape.transpose_pixels}, {shape.lanes})"
    wgrad = f"{shape.wgrad_channels}, {shape.wgrad_width})"
    for kernels, expected in ((conv_direct.CONV_FORWARD, forward), (conv_direct.CONV_WEIGHT_GRAD, wgrad),
                              (transpose.TRANSPOSE_FORWARD, transposed), (transpose.TRANSPOSE_INPUT_GRAD, transposed),
                              (transpose.TRANSPOSE_WEIGHT_GRAD, wgrad)):
        source = inspect.getsource(kernels[variant].py_func)
        assert source.rstrip().endswith(expected), (variant, source)


def test_every_shape_fits_its_register_file():
    registers = {"avx512": 32, "avx2": 16, "portable": 16}
    for name, shape in tiles.TILE_SHAPES.items():
        forward, transposed, wgrad = shape.registers()
        # accumulators + one weight vector per block + at least one broadcast input
        assert forward + shape.blocks + 1 <= registers[name], name
        assert transposed + 2 <= registers[name], name
        assert wgrad + shape.wgrad_width // shape.lanes + 1 <= registers[name], name
        assert shape.width <= tiles.MAX_WIDTH and shape.pixels <= 8 and shape.wgrad_channels <= 8
        assert shape.wgrad_width % shape.lanes == 0


@pytest.mark.parametrize("features,isa,variant", [
    ({"sse2", "avx", "avx2", "fma", "avx512f"}, "AVX-512", "avx512"),
    ({"sse2", "avx", "avx2", "fma"}, "AVX2", "avx2"),
    ({"sse2", "avx"}, "AVX", "portable"),
    ({"sse2"}, "SSE", "portable"),
])
def test_variant_is_chosen_by_instruction_set(features, isa, variant):
    assert tiles.instruction_set(features) == isa
    assert tiles.choose_variant(features) == variant


def test_arm_or_unknown_cpu_gets_the_portable_tile():
    assert tiles.choose_variant({"neon"}) == "portable"


def test_the_chosen_variant_is_the_one_used_by_default():
    assert tiles.tile_shape()[0] == tiles.TILE_VARIANT
    if "NUMPYSEG_TILES" not in os.environ:
        assert tiles.TILE_VARIANT == tiles.choose_variant()


def test_unknown_variant_is_a_one_line_error(rng):
    with pytest.raises(ConfigError, match="unknown tile variant 'avx9'"):
        conv_direct.conv_forward(np.zeros((1, 8, 8, 16), np.float32), np.zeros((3, 3, 16, 16), np.float32),
                                 variant="avx9")


def test_environment_override_picks_the_variant_and_rejects_nonsense():
    code = "from numpyseg.kernels import tiles; print(tiles.TILE_VARIANT)"
    env = dict(os.environ, NUMPYSEG_TILES="portable")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "portable", out.stderr
    env["NUMPYSEG_TILES"] = "fastest"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "NUMPYSEG_TILES='fastest' is not a tile variant" in out.stderr


NO_AVX_SCRIPT = """
import numpy as np
from numpyseg.kernels import tiles
from numpyseg.layers.conv import conv2d_forward_fast, conv2d_forward_reference
from numpyseg.layers.conv_transpose import conv_transpose2d_forward_fast, conv_transpose2d_forward_reference
assert tiles.instruction_set() == "SSE" and tiles.TILE_VARIANT == "portable", tiles.TILE_VARIANT
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 5, 13, 16)).astype(np.float32)
w = rng.standard_normal((3, 3, 16, 24)).astype(np.float32)
worst = np.abs(conv2d_forward_fast(x, w)[0] - conv2d_forward_reference(x.astype(float), w.astype(float))[0]).max()
wt = rng.standard_normal((3, 3, 24, 16)).astype(np.float32)
ref, _ = conv_transpose2d_forward_reference(x.astype(float), wt.astype(float), None, 2)
worst = max(worst, np.abs(conv_transpose2d_forward_fast(x, wt, None, 2)[0] - ref).max())
print(worst)
"""


@pytest.mark.slow
def test_kernels_compiled_for_a_cpu_without_avx_run_and_agree(tmp_path):
    # numba compiles for an x86-64 with SSE2 only (code any x86-64 CPU runs): the portable
    # variant is chosen, and the kernels give the reference's numbers
    features = "+sse,+sse2,-sse3,-ssse3,-sse4.1,-sse4.2,-avx,-avx2,-fma,-f16c,-avx512f"
    env = dict(os.environ, NUMBA_CPU_NAME="x86-64", NUMBA_CPU_FEATURES=features,
               NUMBA_CACHE_DIR=str(tmp_path), NUMPYSEG_QUIET_COMPILE="1")
    env.pop("NUMPYSEG_TILES", None)
    if not tiles.instruction_set().startswith(("AVX", "SSE")):
        pytest.skip("not an x86-64 CPU")
    out = subprocess.run([sys.executable, "-c", NO_AVX_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip()) < 1e-3
