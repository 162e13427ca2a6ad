"""`disha-bench report RESULTS_DIR`: the command line of `disha_bench.analysis.report`.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from disha_bench.analysis.measures import load_checked
from disha_bench.analysis.report import _check_labels, write_report
from disha_bench.config.targets import DEFAULT_EMA


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="write the report of a results folder", description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", help="folder of result files, e.g. results/smoke")
    p.add_argument("--out", "-o", help="markdown file to write (default: reports/<suite>.md); CSV and PNGs go beside it")
    p.add_argument("--target", action="append", dest="targets", metavar="SPEC",
                   help="held-out target, repeatable: LOSS, final:LABEL, min:LABEL or frac:F:LABEL (default: the suite's, "
                        "else frac:0.5:<reference>)")
    p.add_argument("--reference", help="method every other is compared with (default: the suite's analysis.reference)")
    p.add_argument("--ema", type=float, help=f"EMA factor of the secondary training-loss figure (default {DEFAULT_EMA})")
    p.add_argument("--force", action="store_true", help="replace a report built from more complete runs")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    _check_labels(load_checked(args.results_dir), args.reference, args.targets or [])
    path = write_report(args.results_dir, args.out, shlex.join(["disha-bench", *sys.argv[1:]]), args.targets,
                        args.ema, reference=args.reference, force=args.force)
    return 0 if path else 1
