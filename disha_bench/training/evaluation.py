"""The task metric of a model: every rank predicts its shard, rank 0 scores them all.

    python -m pytest -q tests/test_runner.py -k bitwise     # a real run, evaluation included

`evaluate_into` is what every kind of run calls: it records the metrics (with the majority-class
score of classification tasks), the time and the peak memory of evaluation in the result, and an
exception as status `evaluation_failed` with its reason, keeping everything training recorded.
"""

from __future__ import annotations

import math
import time
import traceback
from typing import Any

from disha_bench.config.suite import EvaluationConfig
from disha_bench.contracts.metrics import declare
from disha_bench.contracts.results import EVAL_FAILED, RunResult, Throughput
from disha_bench.tasks.base import EvalSettings, Task, example_ids
from disha_bench.training import distributed
from disha_bench.training.memory import PeakMemory
from disha_bench.training.setup import TaskData


def evaluate(model, tokenizer, task: Task, records: list[dict], evaluation: EvaluationConfig, synced_gpus: bool) -> dict[str, Any]:
    """Metrics of `task` on `records`, with `primary_metric`, `n_examples`, the metrics' declarations
    (`metric_declarations`; a metric the task does not declare raises) and `per_example` (the
    examples' ids and per-example scores, `Task.score_examples`; complete on rank 0 only: scoring,
    e.g. running code in the sandbox, happens once). Shards are padded to equal
    length: ZeRO-3 needs every rank in every forward. With `engine: vllm` rank 0 generates for all
    records: one merged checkpoint written, not one per rank."""
    rank = distributed.rank()
    settings = EvalSettings(batch_size=evaluation.batch_size, max_new_tokens=evaluation.max_new_tokens,
                            num_fewshot=evaluation.num_fewshot, synced_gpus=synced_gpus, engine=evaluation.engine,
                            vllm_gpu_memory=evaluation.vllm_gpu_memory, vllm_python=evaluation.vllm_python)
    vllm_generates = evaluation.engine == "vllm" and task.head == "causal_lm"
    shards = 1 if vllm_generates else distributed.world_size()
    per_rank = math.ceil(len(records) / shards) if records else 0
    indices = list(range(rank, len(records), shards)) if rank < shards else []
    padded = indices + indices[-1:] * (per_rank - len(indices)) if indices else []
    predictions = task.predict(model, tokenizer, [records[i] for i in padded], settings) if padded else []
    keyed = list(zip(padded[: len(indices)], predictions[: len(indices)]))
    merged = sorted((pair for shard in distributed.gather_objects(keyed) for pair in shard), key=lambda p: p[0])
    ordered = [prediction for _, prediction in merged]
    if not ordered or rank != 0:
        return {"primary_metric": task.primary_metric, "n_examples": len(ordered)}
    metrics, columns = task.score_examples(ordered)
    ids = example_ids(records)
    per_example = {"ids": [ids[index] for index, _ in merged], **columns}
    recorded = {**metrics, "primary_metric": task.primary_metric, "n_examples": len(ordered), "per_example": per_example}
    return declare(recorded, task.declarations(metrics))


def majority_class(task: Task, records: list[dict], label: Any) -> dict[str, Any]:
    """The task's metrics when every evaluation record is predicted as `label` (the training
    subset's majority class): the floor a classifier has to beat."""
    return {"label": label, **task.score([{"label": r["label"], "prediction": label} for r in records])}


def lm_eval_into(metrics: dict[str, Any], model, data: TaskData, evaluation: EvaluationConfig, synced_gpus: bool) -> None:
    """The suite's lm-eval tasks on the trained in-memory model, under `metrics["lm_eval"]` (rank 0).
    Under ZeRO-3 on several ranks every rank runs the same documents, so every forward (which
    gathers the partitioned weights) happens on all ranks in the same order."""
    if not synced_gpus and distributed.rank() != 0:
        return
    from disha_bench.evaluation.lm_eval_backend import evaluate_lm_eval

    scores = evaluate_lm_eval(model, data.tokenizer, evaluation.lm_eval, next(model.parameters()).device,
                              data.data_dir, batch_size=evaluation.batch_size)
    if distributed.rank() == 0:
        metrics["lm_eval"] = scores


def evaluate_into(result: RunResult, model, data: TaskData, evaluation: EvaluationConfig, memory: PeakMemory,
                  synced_gpus: bool = False) -> bool:
    """Evaluate `model` and record it in `result`; False (status evaluation_failed) when it raised."""
    memory.start()
    started = time.perf_counter()
    try:
        metrics = evaluate(model, data.tokenizer, data.task, data.eval_records, evaluation, synced_gpus)
        if data.majority_label is not None and distributed.rank() == 0:
            metrics["majority_class"] = majority_class(data.task, data.eval_records, data.majority_label)
        if evaluation.lm_eval:
            lm_eval_into(metrics, model, data, evaluation, synced_gpus)
    except Exception as err:  # the training record stays; a re-run evaluates the saved adapter again
        traceback.print_exc()
        result.run.status = EVAL_FAILED
        result.run.error = f"evaluation: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        distributed.log(f"{result.run.run_id}: {result.run.error}")
        return False
    finally:
        result.throughput = result.throughput or Throughput()
        result.throughput.eval_time_s = time.perf_counter() - started
        if result.memory is not None:
            result.memory.eval_peak_mb = memory.peak_mb()
    result.evaluation = metrics
    distributed.log(f"{result.run.run_id}: { {k: v for k, v in metrics.items() if k != 'per_example'} }")
    return True
