"""The task metric of a trained model: every rank predicts its shard, rank 0 scores them all.

    python -m pytest -q tests/test_runner.py -k bitwise     # a real run, evaluation included
"""

from __future__ import annotations

import math
from typing import Any

import torch

from disha_bench import distributed
from disha_bench.suite import EvaluationConfig
from disha_bench.tasks.base import EvalSettings, Task, collate


def evaluate(model, tokenizer, task: Task, records: list[dict], evaluation: EvaluationConfig, zero_stage: int) -> dict[str, Any]:
    """Metrics of `task` on `records`, with `primary_metric` and `n_examples`. Shards are padded to
    equal length: ZeRO-3 needs every rank in every forward."""
    world, rank = distributed.world_size(), distributed.rank()
    settings = EvalSettings(
        batch_size=evaluation.batch_size, max_new_tokens=evaluation.max_new_tokens, num_fewshot=evaluation.num_fewshot,
        synced_gpus=world > 1 and zero_stage == 3,
    )
    per_rank = math.ceil(len(records) / world) if records else 0
    indices = list(range(rank, len(records), world))
    padded = indices + indices[-1:] * (per_rank - len(indices)) if indices else []
    predictions = task.predict(model, tokenizer, [records[i] for i in padded], settings) if padded else []
    keyed = list(zip(padded[: len(indices)], predictions[: len(indices)]))
    merged = sorted((pair for shard in distributed.gather_objects(keyed) for pair in shard), key=lambda p: p[0])
    ordered = [prediction for _, prediction in merged]
    metrics = task.score(ordered) if ordered else {}
    return {**metrics, "primary_metric": task.primary_metric, "n_examples": len(ordered)}


VALIDATION_EXAMPLES = 64
"""Evaluation records whose teacher-forced loss is recorded as `validation_loss`."""


def validation_loss(model, features: list[dict], batch_size: int, pad_id: int, device) -> float:
    """Mean loss over `features` (example-weighted), on every rank alike (ZeRO-3 needs all in forward)."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            total += float(model(**batch).loss) * len(chunk)
    return total / len(features)
