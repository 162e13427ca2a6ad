"""`disha-bench status RESULTS_DIR`: the command line of `disha_bench.running.status`.
"""

from __future__ import annotations

from pathlib import Path

from disha_bench.core.errors import UserError
from disha_bench.running.status import collect, render


def register(subparsers) -> None:
    parser = subparsers.add_parser("status", help="done / running / failed / pending runs of a results folder")
    parser.add_argument("results_dir", help="results folder of a suite (e.g. results/nlg)")
    parser.set_defaults(func=_command)


def _command(args) -> int:
    results_dir = Path(args.results_dir)
    if not results_dir.is_dir():
        raise UserError("results folder not found", file=args.results_dir)
    print(render(collect(results_dir)))
    return 0
