"""With NUMBA_DISABLE_JIT=1 every numba kernel runs as plain Python, so a student can step
through it in a debugger.  The register-tile helpers (stack buffers, flat_get, the
inlined tile functions) must keep working in that mode and give the same numbers."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import numba
    import numpy as np
    assert numba.config.DISABLE_JIT
    from numpyseg.layers.conv import conv2d_backward, conv2d_backward_simple, conv2d_forward, conv2d_forward_simple
    from numpyseg.layers.conv_transpose import (conv_transpose2d_backward, conv_transpose2d_backward_im2col,
                                                conv_transpose2d_forward, conv_transpose2d_forward_im2col)

    rng = np.random.default_rng(0)
    worst = 0.0

    def compare(fast, reference):
        global worst
        for a, b in zip(fast, reference):
            worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))

    # 10 columns: one 8-pixel tile plus border pixels; 16 and 32 outputs: both forward tiles
    for c_in, c_out in ((8, 16), (16, 32), (3, 5)):
        x = rng.standard_normal((2, 5, 10, c_in))
        w = rng.standard_normal((3, 3, c_in, c_out))
        b = rng.standard_normal(c_out)
        out, cache = conv2d_forward(x, w, b)
        ref, ref_cache = conv2d_forward_simple(x, w, b)
        dout = rng.standard_normal(out.shape)
        compare([out, *conv2d_backward(dout, cache)], [ref, *conv2d_backward_simple(dout, ref_cache)])

        wt = rng.standard_normal((3, 3, c_out, c_in))
        out, cache = conv_transpose2d_forward(x, wt, b)
        ref, ref_cache = conv_transpose2d_forward_im2col(x, wt, b)
        dout = rng.standard_normal(out.shape)
        compare([out, *conv_transpose2d_backward(dout, cache)],
                [ref, *conv_transpose2d_backward_im2col(dout, ref_cache)])
    print(worst)
""")


def test_convolution_kernels_run_as_plain_python_with_the_jit_off():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip()) < 1e-12
