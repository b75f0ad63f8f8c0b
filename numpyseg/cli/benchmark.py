"""`numpyseg benchmark`: time SA-UNetv2 inference and training against PyTorch."""

HELP = "time 592x592 inference and training steps (and PyTorch's, when installed)"


def add_arguments(parser):
    parser.add_argument("--size", type=int, default=None,
                        help="image height and width, a multiple of 8 (default 592; 64 with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repetitions per figure, median reported (default 5; 1 with --quick)")
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes of the training-step figures (default 1 4; 1 2 with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="numba and torch threads (default: numba's, i.e. all cores)")
    parser.add_argument("--no-torch", action="store_true", help="do not time the PyTorch twin")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurement (fresh subprocesses)")
    parser.add_argument("--no-startup", action="store_true",
                        help="skip the fresh-process start-up measurement")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-layer-type split")
    parser.add_argument("--conv", action="store_true",
                        help="only time each Conv2d shape of the model, forward and backward")
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast run (size 64, 1 repeat) to check that everything works")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run(args):
    from numpyseg import benchmark
    from numpyseg.training.config import MAX_BATCH_SIZE
    from numpyseg.validate import check_int

    quick = args.quick
    size = args.size if args.size is not None else (64 if quick else 592)
    repeats = args.repeats if args.repeats is not None else (1 if quick else 5)
    batches = args.batches or ([1, 2] if quick else [1, 4])
    check_int("--size", size, low=8, high=4096)
    for batch in batches:
        check_int("--batches", batch, high=MAX_BATCH_SIZE)
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.conv:
        import numba

        threads = args.threads or numba.get_num_threads()
        print(f"Conv2d shapes of SA-UNetv2 (scaled to {size}x{size}), {threads} threads, "
              f"median of {repeats}; load average {benchmark._load()}")
        rows = benchmark.conv_benchmark(repeats=repeats, use_torch=not args.no_torch,
                                        threads=args.threads, scale=size / 592, log=print)
        results = {"conv": rows}
    else:
        if size % 8:
            raise ValueError(f"--size must be a multiple of 8, got {size}")
        results = benchmark.run_benchmark(
            size=size, repeats=repeats, batches=batches, use_torch=not args.no_torch,
            threads=args.threads, memory=not args.no_memory, startup=not args.no_startup,
            profile=not args.no_profile, log=lambda m: print(m, flush=True))
        print()
        print(benchmark.format_report(results))
    if args.json:
        benchmark.write_json(results, args.json)
        print(f"results written to {args.json}")
    return 0
