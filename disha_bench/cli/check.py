"""`disha-bench check` and `disha-bench baseline`: the command line of `disha_bench.analysis.check`.
"""

from __future__ import annotations

import argparse

from disha_bench.analysis.check import check, write_baseline


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("baseline", help="store a regression baseline from a results folder")
    p.add_argument("results_dir", help="folder of result files, e.g. results/smoke")
    p.add_argument("-o", "--out", required=True, help="baseline file to write (JSON)")
    p.add_argument("--reference", help="method the memory and throughput ratios are taken against "
                   "(default: the suite's analysis.reference recorded in the results)")
    p.add_argument("--replicate", action="append", default=[], metavar="DIR",
                   help="results folder of a replicate run of the same suite (e.g. another thread count): "
                        "curve tolerances are calibrated on its differences (repeatable)")
    p.set_defaults(func=lambda a: (print(f"wrote {write_baseline(a.results_dir, a.out, a.reference, a.replicate)}"), 0)[1])
    p = subparsers.add_parser("check", help="compare a results folder with a baseline; exit 1 on a regression")
    p.add_argument("results_dir", help="folder of result files, e.g. results/smoke")
    p.add_argument("--baseline", required=True, help="file written by `disha-bench baseline`")
    p.set_defaults(func=lambda a: check(a.results_dir, a.baseline))
