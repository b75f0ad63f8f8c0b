"""With NUMBA_DISABLE_JIT=1 every numba kernel runs as plain Python, so a student can step
through it in a debugger.  The kernels (with the register-tile helpers: stack buffers,
flat_get, the inlined tile functions) must keep working in that mode and give the numbers
of the plain-NumPy references: every operation of the spec (numpyseg.devtools.gradcheck_suite.OPS)
runs forward and backward with both backends and is compared."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import numba
    import numpy as np
    import numpyseg
    from numpyseg.devtools.gradcheck_suite import OPS

    assert numba.config.DISABLE_JIT
    worst = {}
    for name, spec in OPS.items():
        results = []
        for backend in ("fast", "reference"):
            layer, inputs = spec.make(0)
            with numpyseg.backend(backend):
                out = layer(*inputs)
                grads = layer.backward(np.random.default_rng(1).standard_normal(out.shape))
            grads = grads if isinstance(grads, tuple) else (grads,)
            results.append([out, *grads, *(p.grad for p in layer.parameters())])
        worst[name] = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)) for a, b in zip(*results))
    print(max(worst.values()), max(worst, key=worst.get))
""")


def test_every_operation_runs_as_plain_python_with_the_jit_off():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    worst, name = result.stdout.split()
    assert float(worst) < 1e-12, name
