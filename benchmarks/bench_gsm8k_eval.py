"""GSM8K evaluation throughput: batched greedy generation against one problem at a time.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DISHA_BENCH_DATA=../shared/data \\
        python benchmarks/bench_gsm8k_eval.py [--model smollm2-135m] [--limit 96] [--batch-size 16] \\
        [--max-new-tokens 256] [--fewshot 0] [--repeats 3] [--threads N] [--no-check] \\
        [--out benchmarks/results/gsm8k_eval.txt]

Runs the `gsm8k` task's own `predict` (lm-eval's prompt and stops; greedy `generate` in its default
`pool` mode: at most `--batch-size` rows in flight, a row leaves the batch the step it meets a stop
string or EOS and the next problem takes its place, `tasks/generation.py`) on the same `--limit` test
problems at `--batch-size` and at 1, and - unless --no-check - `generate` in `batches` mode (plain
`model.generate` on fixed batches, rows stopping at their stop strings: the way before the pool) at
`--batch-size`; `--repeats` times each, interleaved. It prints the median problems/s of each and the
ratio `batch B / batch 1` (the acceptance figure) and `pool / batches` at the same batch size.

Check: the pool's outputs at `--batch-size` against `batches` mode at the same size, string for
string: `identical outputs k/n` (rows come and go, so a row's batch shape changes and a matmul may
round differently; greedy paths only move on near-ties, and this counts whether any did here).

It explains the ratios with step counts from the outputs (a row's steps: its kept tokens plus the
stop string's, a close approximation): one-by-one needs `sum of steps` forwards; fixed batches
`sum over batches of the batch's longest row`; the pool the forwards a simulation of its schedule
counts. `sum of steps / forwards` is each way's "length bound": its speed-up if a forward of many
rows cost no more than a forward of one; the pool's steps at full width say how much of the time it
really held `--batch-size` rows.

Why 96 problems by default: it is throughput that is measured, and a pool is full only while
problems wait. A few GSM8K problems never meet a stop string and run to `--max-new-tokens`; with
only two batch widths of problems (32) those few are still running alone long after the rest are
done, and the figure measures that drain more than the steady state of an evaluation of hundreds of
problems. `--limit 32` gives the short version.

Timings are wall clock; on a machine shared with other jobs they move with the load, hence the
repeats, the interleaving and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from disha_bench import models, tasks  # noqa: E402
from disha_bench.core.datasets import resolve_data_dir  # noqa: E402
from disha_bench.tasks import gsm8k  # noqa: E402
from disha_bench.tasks.base import EvalSettings, generate  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", default=None, help="default: $DISHA_BENCH_DATA (or the hub)")
    parser.add_argument("--limit", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--fewshot", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-check", action="store_true",
                        help="skip timing model.generate on fixed batches and the identity check")
    parser.add_argument("--out", default=None, help="also write the command and everything printed to this file")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); on a loaded shared CPU, 1 avoids "
                             "OpenMP threads waiting on each other")
    return parser.parse_args()


class Tee:
    """stdout that also writes to a file (the README links the committed output of a run)."""

    def __init__(self, stream, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.stream, self.file = stream, open(path, "w")

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.file.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()


def steps_of(tokenizer, output: str, max_new_tokens: int) -> int:
    """Generated tokens of one row: the kept text plus the stop string that ended it (if any)."""
    kept = len(tokenizer(output, add_special_tokens=False)["input_ids"])
    return min(kept + 3, max_new_tokens) if kept < max_new_tokens else max_new_tokens


def main() -> None:
    args = parse_args()
    if args.out:
        sys.stdout = Tee(sys.stdout, args.out)
        print("$ python " + " ".join(sys.argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    task = tasks.get("gsm8k")
    config = {**task.options, "name": "gsm8k", "train_limit": 1, "eval_limit": args.limit, "sample_seed": 0,
              "source": "auto", "data_files": None}
    _, records = task.load(config, resolve_data_dir(args.data_dir))
    model = models.load_model(args.model, "causal_lm")
    tokenizer = models.load_tokenizer(args.model)
    print(f"model {args.model}, {len(records)} problems, max_new_tokens {args.max_new_tokens}, {args.fewshot}-shot, "
          f"greedy, torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, repeats {args.repeats}",
          flush=True)

    b = args.batch_size
    runs = [(b, "pool"), (1, "pool")] + ([] if args.no_check else [(b, "batches")])
    times: dict[tuple[int, str], list[float]] = {run: [] for run in runs}
    outputs: dict[tuple[int, str], list[str]] = {}
    for repeat in range(args.repeats):
        for run in runs if repeat % 2 == 0 else runs[::-1]:  # alternate the order: load drifts
            started = time.perf_counter()
            outputs[run] = predict(task, model, tokenizer, records, args, *run)
            times[run].append(time.perf_counter() - started)
            print(f"  repeat {repeat} batch {run[0]:3d} {run[1]:7s}: {times[run][-1]:7.1f} s", flush=True)

    median = {run: statistics.median(times[run]) for run in runs}
    for run in runs:
        score = task.score([{"target": gsm8k.reference(r["answer"]), "output": o}
                            for r, o in zip(records, outputs[run])])
        print(f"batch {run[0]:3d} {run[1]:7s}: median {median[run]:7.1f} s (min {min(times[run]):.1f}, max "
              f"{max(times[run]):.1f})  {len(records) / median[run]:6.3f} problems/s  strict "
              f"{score['exact_match_strict']:.3f}  flexible {score['exact_match_flexible']:.3f}")
    print(f"speed-up batch {b} vs batch 1 (pool): {median[(1, 'pool')] / median[(b, 'pool')]:.2f}x")
    if not args.no_check:
        print(f"speed-up pool vs batches at batch {b}: {median[(b, 'batches')] / median[(b, 'pool')]:.2f}x")
    bound = explain(tokenizer, outputs[(1, "pool")], args)
    measured = median[(1, "pool")] / median[(b, "pool")]
    print(f"so a pool forward cost on average {bound / measured:.2f}x a one-row step here (measured "
          f"{measured:.2f}x / length bound {bound:.2f}x; prefills included)")
    if not args.no_check:
        same = sum(x == y for x, y in zip(outputs[(b, "pool")], outputs[(b, "batches")]))
        print(f"identical outputs, batch {b} pool vs batch {b} batches (model.generate): {same}/{len(records)}"
              + ("" if same == len(records) else "  MISMATCH"))
    across = sum(x == y for x, y in zip(outputs[(1, "pool")], outputs[(b, "pool")]))
    print(f"(for information: batch {b} and batch 1 agree on {across}/{len(records)}; padding can change "
          "a greedy path)")


def predict(task, model, tokenizer, records, args, batch_size: int, mode: str) -> list[str]:
    """The task's predict in `pool` mode; `batches` mode through `generate` with the same prompts and stops."""
    settings = EvalSettings(batch_size=batch_size, max_new_tokens=args.max_new_tokens, num_fewshot=args.fewshot)
    if mode == "pool":
        return [p["output"] for p in task.predict(model, tokenizer, records, settings)]
    prompts = [gsm8k.prompt(r["question"], task.fewshot(args.fewshot)) for r in records]
    return generate(model, tokenizer, prompts, settings, stop=gsm8k.STOP, mode=mode)


def pool_forwards(steps: list[int], batch_size: int) -> tuple[int, int]:
    """Forwards the pool makes for rows of these step counts, in order: a prefill for each group that
    joins, then decode steps of all rows in flight; a row leaves after its last step, freeing its place.
    Returns (forwards, decode steps with `batch_size` rows)."""
    waiting, active, forwards, full = list(steps), [], 0, 0
    while waiting or active:
        if waiting and len(active) < batch_size:
            joining = batch_size - len(active)
            active += [n - 1 for n in waiting[:joining]]  # the prefill makes each row's first token
            waiting = waiting[joining:]
            forwards += 1
        active = [n for n in active if n > 0]
        if active and not (waiting and len(active) < batch_size):
            full += len(active) == batch_size
            active, forwards = [n - 1 for n in active], forwards + 1
    return forwards, full


def explain(tokenizer, outputs: list[str], args) -> float:
    """Each way's length bound: its speed-up over one-by-one if forwards cost the same at any batch width.
    Returns the pool's."""
    b = args.batch_size
    steps = [steps_of(tokenizer, o, args.max_new_tokens) for o in outputs]
    fixed = sum(max(steps[i : i + b]) for i in range(0, len(steps), b))
    pooled, full = pool_forwards(steps, b)
    print(f"length bound at batch {b}: pool {sum(steps) / pooled:.2f}x ({pooled} forwards, {full} of them decode "
          f"steps with all {b} rows), fixed batches "
          f"{sum(steps) / fixed:.2f}x ({fixed} steps); one-by-one {sum(steps)} steps; steps per problem "
          f"{sorted(steps)}")
    return sum(steps) / pooled


if __name__ == "__main__":
    main()
