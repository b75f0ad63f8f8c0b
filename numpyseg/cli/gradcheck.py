"""`numpyseg gradcheck`: run the gradient check of every layer and print the proof."""

HELP = "check every layer's backward pass against central differences (float64)"


def add_arguments(parser):
    parser.add_argument("--model", action="store_true",
                        help="also check the whole SA-UNetv2 and SA-UNet (slower)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args):
    import time

    import numba

    from numpyseg.backends import get_backend
    from numpyseg.devtools.gradcheck_suite import LAYER_CHECKS, MODEL_CHECKS
    from numpyseg.validate import check_int

    check_int("--seed", args.seed, low=0)

    # Thousands of forward passes on tiny arrays: one thread avoids paying a
    # thread hand-off per kernel call, which costs more than the work itself.
    numba.set_num_threads(1)

    checks = LAYER_CHECKS + (MODEL_CHECKS if args.model else [])
    failures = 0
    # per check, over its tensors: the worst directional error (every entry), the worst
    # sampled entry, and the tensor with the larger of the two
    print("directional: worst relative error of the gradient along random directions (covers every entry);\n"
          "worst entry: worst relative error of single sampled entries; tensor: where the larger one is")
    print(f"{'check':<34}{'directional':>12}{'worst entry':>13}  {'tensor':<24}result")
    for name, build in checks:
        start = time.perf_counter()
        report = build(args.seed)
        failures += not report.passed
        seconds = time.perf_counter() - start
        if report.unexpected_zero:
            tensor, result = report.unexpected_zero[0], "FAIL (zero gradient)"
        else:
            tensor, result = report.worst_name, "pass" if report.passed else "FAIL"
        print(f"{name:<34}{report.worst_directional:>12.1e}{report.worst_elementwise:>13.1e}  "
              f"{tensor:<24}{result}  ({seconds:.1f} s)")
    print(f"{len(checks) - failures} passed, {failures} failed (relative tolerance 1e-6, float64, "
          f"{get_backend()} backend: NUMPYSEG_BACKEND=reference checks the plain-NumPy layers)")
    return 1 if failures else 0
