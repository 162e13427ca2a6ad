"""The `disha-bench` command.

    disha-bench run suites/smoke.yaml [--out DIR] [--set KEY=VALUE ...] [--only GLOB] [--nproc N] [--fresh]
    disha-bench run suites/nlg.yaml --launcher slurm --slurm-partition gpu --gpus-per-run 8
    disha-bench status results/nlg
    disha-bench validate suites/smoke.yaml
    disha-bench plan suites/nlg.yaml [--nproc 8] [--measure]
    disha-bench list {methods,tasks,models}
    disha-bench report results/smoke
    disha-bench check results/smoke --baseline suites/baselines/smoke.json
    disha-bench eval-code samples.jsonl

Exit codes: 0 success, 1 some run failed, diverged or regressed, 2 bad input (one-line error).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from disha_bench.core.errors import UserError

# One module per command beside this one; each has register(subparsers).
PLUGGED_COMMANDS = ("disha_bench.cli.report", "disha_bench.cli.check", "disha_bench.cli.eval_code",
                    "disha_bench.cli.plan", "disha_bench.cli.status")
LAZY_COMMANDS = {"eval-code": ("disha_bench.cli.eval_code", "score HumanEval completions (pass@k) in a sandbox")}
"""Plugged commands whose module imports torch (through the tasks package): registered only when
invoked, so that `--help` stays fast; listed meanwhile with this help line."""


class Stopped(SystemExit):
    """SIGTERM or SIGUSR1 to the command: unwinds like Ctrl-C (no `except Exception` swallows it),
    stopping the runner's workers on the way out; `main` says so. Exit status 143 (128 + SIGTERM),
    also in a forked worker that inherited the handler."""

    def __init__(self, signum: int):
        super().__init__(143)
        self.signal_name = signal.Signals(signum).name


def _stop(signum, _frame) -> None:
    raise Stopped(signum)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    from disha_bench import __version__

    parser = argparse.ArgumentParser(prog="disha-bench", description="Benchmark DiSHA adapters (Bone, Bat) against LoRA and its variants.")
    parser.add_argument("--version", action="version", version=f"disha-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="fine-tune every method on every task of a suite", description="Run a suite: task x method x seed runs under DeepSpeed ZeRO.")
    run.add_argument("suite", help="suite YAML file")
    run.add_argument("--out", help="results folder (default results/<suite name>)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a suite key by its dotted path, e.g. training.lr=1e-4 (repeatable)")
    run.add_argument("--only", action="append", default=[], metavar="GLOB", help="run only runs whose id or task/method matches (repeatable)")
    run.add_argument("--nproc", type=int, default=1, help="ranks on this machine (torchrun; gloo on CPU, NCCL on GPUs)")
    run.add_argument("--hostfile", help="DeepSpeed hostfile for several machines (uses the deepspeed launcher)")
    run.add_argument("--fresh", action="store_true", help="re-run even finished runs; earlier results (with --only: just the selected runs') are moved to <out>/.superseded/")
    run.add_argument("--data-dir", help="folder with local datasets (default $DISHA_BENCH_DATA)")
    run.add_argument("--stop-grace", type=float, metavar="SECONDS", help="on SIGTERM/SIGUSR1, give a run's workers this long to save a checkpoint before killing them (default 120; $DISHA_BENCH_STOP_GRACE_S)")
    _add_launcher_arguments(run)
    run.set_defaults(func=_run)

    validate = sub.add_parser("validate", help="check a suite file without loading any model")
    validate.add_argument("suite")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    validate.add_argument("--nproc", type=int, default=1, help="ranks the suite will run on: checks that training.global_batch holds (default 1)")
    validate.set_defaults(func=_validate)

    listing = sub.add_parser("list", help="list registered methods, tasks or models")
    listing.add_argument("what", choices=["methods", "tasks", "models"])
    listing.set_defaults(func=_list)

    invoked = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    for module_name in PLUGGED_COMMANDS:
        lazy = next((name for name, (module, _) in LAZY_COMMANDS.items() if module == module_name), None)
        if lazy is not None and invoked != lazy:
            sub.add_parser(lazy, help=LAZY_COMMANDS[lazy][1])
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def _add_launcher_arguments(run) -> None:
    from disha_bench.running.launchers import LAUNCHERS

    run.add_argument("--launcher", choices=LAUNCHERS, default="local", help="local: this machine, one run after another; slurm: each unfinished run as its own Slurm job (submitit); submitit-local: the same jobs as local processes")
    run.add_argument("--slurm-partition", help="Slurm partition of the jobs")
    run.add_argument("--gpus-per-run", type=int, default=1, metavar="N", help="GPUs (ranks) of each run's job, on one node")
    run.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MINUTES", help="time limit of each job; a longer run is requeued and resumes (default 1440)")
    run.add_argument("--slurm-cpus", type=int, metavar="N", help="CPU cores per job (default 8 per GPU)")
    run.add_argument("--slurm-mem-gb", type=int, metavar="GB", help="memory per job")
    run.add_argument("--slurm-account", help="Slurm account to charge")
    run.add_argument("--slurm-constraint", help="node feature constraint, e.g. one GPU type")
    run.add_argument("--wait", action="store_true", help="with a job launcher: wait for the jobs, then print the status and write the report")


def _run(args) -> int:
    from disha_bench.running.runner import command_line, run_suite

    if args.stop_grace is not None:
        if args.stop_grace <= 0:
            raise UserError(f"--stop-grace must be positive, got {args.stop_grace}")
        os.environ["DISHA_BENCH_STOP_GRACE_S"] = str(args.stop_grace)
    if args.launcher != "local":
        from disha_bench.running.launchers.slurm import SlurmOptions, submit_suite

        if args.nproc != 1 or args.hostfile:
            raise UserError(f"--launcher {args.launcher} takes --gpus-per-run, not --nproc or --hostfile")
        options = SlurmOptions(
            partition=args.slurm_partition, gpus_per_run=args.gpus_per_run, time_min=args.slurm_time,
            cpus_per_run=args.slurm_cpus, mem_gb=args.slurm_mem_gb, account=args.slurm_account, constraint=args.slurm_constraint,
        )
        return submit_suite(args.suite, args.launcher, options, out=args.out, overrides=args.overrides, only=args.only,
                            fresh=args.fresh, data_dir=args.data_dir, command=command_line(), wait=args.wait)
    return run_suite(
        args.suite, out=args.out, overrides=args.overrides, only=args.only, nproc=args.nproc,
        hostfile=args.hostfile, fresh=args.fresh, data_dir=args.data_dir, command=command_line(),
    )


def _validate(args) -> int:
    from disha_bench.config.expansion import expand_runs
    from disha_bench.config.suite import load_suite

    suite, _ = load_suite(args.suite, args.overrides)
    runs = expand_runs(suite, args.nproc, args.suite)
    unadapted = sum(run.is_unadapted for run in runs)
    reference = f" + {unadapted} unadapted reference runs" if unadapted else ""
    pairs = len({run.method.label for run in runs if not run.is_unadapted})
    methods = f"{pairs} method x lr pairs of {len(suite.methods)} methods" if pairs > len(suite.methods) \
        else f"{len(suite.methods)} methods"
    print(f"{args.suite}: ok ({len(suite.tasks)} tasks x {methods} x {len(suite.seeds)} seeds = "
          f"{len(runs) - unadapted} runs{reference})")
    return 0


def _list(args) -> int:
    module = importlib.import_module(f"disha_bench.{args.what}")
    print(module.describe())
    if args.what == "tasks":
        from disha_bench.config.suite import TaskConfig
        from disha_bench.core.schema import field_lines

        print("\n".join(["", "every task also takes:"] + field_lines(TaskConfig)))
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # SIGTERM unwinds like Ctrl-C, so the runner stops its worker processes on the way out.
    # SIGUSR1 (a scheduler's "time is nearly up") too: the workers checkpoint within the grace.
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, _stop)
    args = build_parser(argv).parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:  # a folder or file this user may not write: bad input, not a bug
        print(f"error: {err.filename}: {err.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept, re-run the same command to resume", file=sys.stderr)
        return 130
    except Stopped as stop:
        print(f"stopped by {stop.signal_name}; finished runs are kept, and a run that saved a checkpoint resumes from it: "
              "re-run the same command", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
