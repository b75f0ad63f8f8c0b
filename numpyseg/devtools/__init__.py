"""Developer tools: the instruments that check and measure the library, not part of it.

    numpyseg.devtools.gradcheck        central-difference gradient checks (tests, tutorials, `numpyseg gradcheck`)
    numpyseg.devtools.gradcheck_suite  the checks `numpyseg gradcheck` runs, one per layer, loss and model
    numpyseg.devtools.benchmark        `numpyseg benchmark`: layer profile, inference and training step timings
    numpyseg.devtools.benchmark_peers  the peers the benchmark compares against (PyTorch, ONNX Runtime, OpenVINO)
    numpyseg.devtools.roofline         the machine's yardsticks: sgemm, peak FLOPs, memory bandwidth
    numpyseg.devtools.instrument       wrap a class's methods for a while (timing, recording shapes)

Nothing in the library imports these; they import the library (see ARCHITECTURE.md).
"""
