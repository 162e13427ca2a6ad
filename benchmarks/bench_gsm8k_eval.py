"""GSM8K evaluation throughput: batched greedy generation against one problem at a time.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DISHA_BENCH_DATA=../shared/data \\
        python benchmarks/bench_gsm8k_eval.py [--model smollm2-135m] [--limit 32] [--batch-size 16] \\
        [--max-new-tokens 256] [--fewshot 0] [--repeats 3] [--threads N] [--no-check]

Runs the `gsm8k` task's own `predict` (left-padded batched `generate`, lm-eval's prompt and stops;
every row stops at its stop strings during generation) on the same `--limit` test problems at
`--batch-size` and at 1, `--repeats` times each, alternating, and prints the median problems/s of
both and their ratio. Then it explains the ratio: a batch costs `max steps in the batch x
(seconds per batched step)`, one-by-one costs `sum of steps x (seconds per single step)`, so

    speed-up = (sum of steps / sum over batches of the batch's max steps) x (single step / batched step)

the first factor ("length bound": the speed-up if a batched step cost no more than a single one)
comes from the outputs alone, the second from the hardware. Steps are counted as the kept output's
tokens plus the stop string's, a close approximation.

Check (unless --no-check): the same batch size generated the old way (to EOS or max_new_tokens,
cut afterwards) must give the same strings as stopping during generation; it prints `identical
outputs k/n` (left padding can change greedy paths between batch sizes, so batched and one-by-one
outputs are compared too, for information). Timings are wall clock; on a machine shared with
other jobs they move with the load, hence the repeats and medians.
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
from disha_bench.tasks.data import resolve_data_dir  # noqa: E402
from disha_bench.tasks import gsm8k  # noqa: E402
from disha_bench.tasks.base import EvalSettings, generate  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", default=None, help="default: $DISHA_BENCH_DATA (or the hub)")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--fewshot", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-check", action="store_true", help="skip the old-code identity check (slow)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); on a loaded shared CPU, 1 avoids "
                             "OpenMP threads waiting on each other")
    return parser.parse_args()


def steps_of(tokenizer, output: str, max_new_tokens: int) -> int:
    """Generated tokens of one row: the kept text plus the stop string that ended it (if any)."""
    kept = len(tokenizer(output, add_special_tokens=False)["input_ids"])
    return min(kept + 3, max_new_tokens) if kept < max_new_tokens else max_new_tokens


def main() -> None:
    args = parse_args()
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

    sizes = (args.batch_size, 1)
    times: dict[int, list[float]] = {b: [] for b in sizes}
    outputs: dict[int, list[str]] = {}
    for repeat in range(args.repeats):
        for batch_size in sizes:
            settings = EvalSettings(batch_size=batch_size, max_new_tokens=args.max_new_tokens, num_fewshot=args.fewshot)
            started = time.perf_counter()
            predictions = task.predict(model, tokenizer, records, settings)
            times[batch_size].append(time.perf_counter() - started)
            outputs[batch_size] = [p["output"] for p in predictions]
            print(f"  repeat {repeat} batch {batch_size:3d}: {times[batch_size][-1]:7.1f} s", flush=True)

    median = {b: statistics.median(times[b]) for b in sizes}
    for b in sizes:
        score = task.score([{"target": gsm8k.reference(r["answer"]), "output": o} for r, o in zip(records, outputs[b])])
        print(f"batch {b:3d}: median {median[b]:7.1f} s (min {min(times[b]):.1f}, max {max(times[b]):.1f})  "
              f"{len(records) / median[b]:6.3f} problems/s  strict {score['exact_match_strict']:.3f}  "
              f"flexible {score['exact_match_flexible']:.3f}")
    explain(tokenizer, outputs, median, args)
    if not args.no_check:
        check_identical(task, model, tokenizer, records, outputs, args)


def explain(tokenizer, outputs: dict[int, list[str]], median: dict[int, float], args) -> None:
    """Split the measured speed-up into the outputs' length bound and the hardware's step-cost ratio."""
    b = args.batch_size
    steps = [steps_of(tokenizer, o, args.max_new_tokens) for o in outputs[1]]
    batched_steps = sum(max(steps_of(tokenizer, o, args.max_new_tokens) for o in outputs[b][i : i + b])
                        for i in range(0, len(outputs[b]), b))
    single_step, batched_step = median[1] / sum(steps), median[b] / batched_steps
    print(f"speed-up batch {b} vs 1: {median[1] / median[b]:.2f}x = length bound {sum(steps) / batched_steps:.2f}x "
          f"(one-by-one {sum(steps)} steps, batched {batched_steps}; steps per problem {sorted(steps)}) "
          f"x step-cost ratio {single_step / batched_step:.2f} ({single_step * 1000:.0f} ms per single step, "
          f"{batched_step * 1000:.0f} ms per batch-{b} step, prompt encoding included)")


def check_identical(task, model, tokenizer, records, outputs: dict[int, list[str]], args) -> None:
    """Stopping during generation must not change a single output at the same batch size."""
    batched = outputs[args.batch_size]
    settings = EvalSettings(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, num_fewshot=args.fewshot)
    shots = task.fewshot(args.fewshot)
    prompts = [gsm8k.prompt(r["question"], shots) for r in records]
    started = time.perf_counter()
    old = generate(model, tokenizer, prompts, settings, stop=gsm8k.STOP, stop_early=False)
    seconds = time.perf_counter() - started
    same = sum(a == b for a, b in zip(old, batched))
    print(f"identical outputs, batch {args.batch_size} stopping during generation vs the old way "
          f"(to EOS / max_new_tokens, {seconds:.0f} s): {same}/{len(records)}"
          + ("" if same == len(records) else "  MISMATCH"))
    across = sum(a == b for a, b in zip(outputs[1], batched))
    print(f"(for information: batch {args.batch_size} and batch 1 agree on {across}/{len(records)}; padding can "
          "change a greedy path)")


if __name__ == "__main__":
    main()
