"""GSM8K evaluation throughput: batched greedy generation against one problem at a time.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DISHA_BENCH_DATA=../shared/data \\
        python benchmarks/bench_gsm8k_eval.py [--model smollm2-135m] [--limit 32] [--batch-size 16] \\
        [--max-new-tokens 256] [--fewshot 0] [--threads N]

Runs the `gsm8k` task's own `predict` (left-padded batched `generate`, lm-eval's prompt and
stops) on the same `--limit` test problems twice, at `--batch-size` and at 1, and prints problems
per second for both, the ratio, generated tokens, both scores and how many outputs agree (padding
can change a greedy path by float rounding). The first run of `smollm2-135m` converts the packaged
GGUF (about a minute, cached); it is loaded before timing starts. Timings are wall clock: on a
machine shared with other jobs they move with the load, so compare figures from one invocation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from disha_bench import models, tasks  # noqa: E402
from disha_bench.data import resolve_data_dir  # noqa: E402
from disha_bench.tasks.base import EvalSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", default=None, help="default: $DISHA_BENCH_DATA (or the hub)")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--fewshot", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); on a loaded shared CPU, 1 avoids "
                             "OpenMP threads waiting on each other")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = tasks.get("gsm8k")
    config = {**task.options, "name": "gsm8k", "train_limit": 1, "eval_limit": args.limit, "sample_seed": 0,
              "source": "auto", "data_files": None}
    _, records = task.load(config, resolve_data_dir(args.data_dir))
    model = models.load_model(args.model, "causal_lm")
    tokenizer = models.load_tokenizer(args.model)
    print(f"model {args.model}, {len(records)} problems, max_new_tokens {args.max_new_tokens}, "
          f"{args.fewshot}-shot, greedy, torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}", flush=True)

    runs = {}
    for batch_size in (args.batch_size, 1):
        settings = EvalSettings(batch_size=batch_size, max_new_tokens=args.max_new_tokens, num_fewshot=args.fewshot)
        started = time.perf_counter()
        predictions = task.predict(model, tokenizer, records, settings)
        seconds = time.perf_counter() - started
        tokens = sum(len(tokenizer(p["output"], add_special_tokens=False)["input_ids"]) for p in predictions)
        runs[batch_size] = (seconds, predictions)
        score = task.score(predictions)
        print(f"batch {batch_size:3d}: {seconds:7.1f} s  {len(records) / seconds:6.3f} problems/s  "
              f"{tokens / seconds:7.1f} kept tokens/s  strict {score['exact_match_strict']:.3f}  "
              f"flexible {score['exact_match_flexible']:.3f}", flush=True)

    (batched, out_b), (single, out_1) = runs[args.batch_size], runs[1]
    same = sum(a["output"] == b["output"] for a, b in zip(out_b, out_1))
    print(f"speed-up batch {args.batch_size} vs 1: {single / batched:.2f}x; identical outputs {same}/{len(records)}")


if __name__ == "__main__":
    main()
