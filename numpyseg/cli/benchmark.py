"""`numpyseg benchmark`: time SA-UNetv2 against PyTorch, ONNX Runtime and OpenVINO.

Parses the options, calls numpyseg.devtools.benchmark (which does the work and returns the
results) and prints them.
"""

HELP = ("time 592x592 inference and training steps against PyTorch, ONNX Runtime and OpenVINO "
        "(when installed), with the machine's sgemm and memory yardsticks")


def add_arguments(parser):
    parser.add_argument("--size", type=int, default=None,
                        help="image height and width, a multiple of 8 (default 592; 64 with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repetitions per figure, median reported (default 5; 1 with --quick)")
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes of the training-step figures (default 1 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="numba's and every peer's threads (default: numba's, i.e. all cores)")
    parser.add_argument("--no-torch", action="store_true",
                        help="time numpyseg alone (no PyTorch, so no ONNX export for the other peers)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurement (fresh subprocesses)")
    parser.add_argument("--no-startup", action="store_true",
                        help="skip the fresh-process start-up measurement")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-layer-type split")
    parser.add_argument("--no-roofline", action="store_true",
                        help="skip the machine's yardsticks (sgemm, FLOPs, conv GFLOP/s, GB/s)")
    parser.add_argument("--conv", action="store_true",
                        help="only time each Conv2d shape of the model, forward and backward")
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast run (size 64, 1 repeat, 256x256 sgemm) to check that "
                             "everything works")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON (a new file)")


def run(args):
    from numpyseg.devtools import benchmark
    from numpyseg.training.config import MAX_BATCH_SIZE
    from numpyseg.validate import check_int

    quick = args.quick
    size = args.size if args.size is not None else (64 if quick else 592)
    repeats = args.repeats if args.repeats is not None else (1 if quick else 5)
    batches = args.batches or [1, 2]
    check_int("--size", size, low=8, high=4096)
    for batch in batches:
        check_int("--batches", batch, high=MAX_BATCH_SIZE)
    benchmark.check_options(size, repeats, batches, args.threads)
    if args.json:
        benchmark.check_new_file(args.json)
    if args.conv:
        rows = benchmark.conv_benchmark(repeats=repeats, use_torch=not args.no_torch,
                                        threads=args.threads, scale=size / 592, log=print)
        results = {"conv": rows}
    else:
        results = benchmark.run_benchmark(
            size=size, repeats=repeats, batches=batches, use_torch=not args.no_torch,
            threads=args.threads, memory=not args.no_memory, startup=not args.no_startup,
            profile=not args.no_profile, machine=not args.no_roofline,
            sgemm_size=256 if quick else 2048, log=lambda m: print(m, flush=True))
        print()
        print(benchmark.format_report(results))
    if args.json:
        path = benchmark.write_json(results, args.json)
        print(f"results written to {path}")
    return 0
