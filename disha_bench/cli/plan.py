"""`disha-bench plan SUITE`: the command line of `disha_bench.running.plan`.
"""

from __future__ import annotations

from disha_bench.running.plan import format_plan, measure, memory_lines, plan_runs, power_lines


def register(subparsers) -> None:
    plan = subparsers.add_parser("plan", help="runs, steps, tokens and (with --measure) time of a suite",
                                 description=__doc__.splitlines()[0])
    plan.add_argument("suite")
    plan.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    plan.add_argument("--nproc", type=int, default=1, help="ranks the suite will run on (default 1)")
    plan.add_argument("--hostfile", help="DeepSpeed hostfile: ranks = its slots")
    plan.add_argument("--measure", action="store_true", help="time a few steps of each task x method here")
    plan.add_argument("--measure-steps", type=int, default=3, help="timed optimizer steps per task x method")
    plan.add_argument("--data-dir", help="folder with local datasets (default $DISHA_BENCH_DATA)")
    plan.add_argument("--no-memory", action="store_true", help="skip the per-GPU memory and time model")
    plan.add_argument("--device-tflops", type=float, default=780.0,
                      help="the GPU's dense bf16 rate for the time model (default: an H200, as measured by the GPU check)")
    plan.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation for the time model")
    plan.set_defaults(func=_plan)


def _plan(args) -> int:
    from disha_bench.config.suite import load_suite
    from disha_bench.core.datasets import resolve_data_dir
    from disha_bench.running import preflight
    from disha_bench.running.runner import _hostfile_slots

    suite, _ = load_suite(args.suite, args.overrides)
    world = _hostfile_slots(args.hostfile) if args.hostfile else args.nproc
    rows = plan_runs(suite, world, args.suite)
    if args.measure:  # builds models on this machine: everything a run needs must be here
        data_dir = resolve_data_dir(args.data_dir)
        preflight.check(suite, file=args.suite, data_dir=data_dir)
        measure(suite, rows, data_dir, args.measure_steps)
    else:  # offline plan (the cluster's data and models may be elsewhere); code tasks need a sandbox
        preflight.check_code_tasks(suite, file=args.suite)
    print(format_plan(suite, rows, world))
    print("\n".join(power_lines(suite)))
    if not args.no_memory:
        print("\n".join(memory_lines(suite, world, args.device_tflops, args.mfu)))
    return 0
