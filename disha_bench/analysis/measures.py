"""What the analysis reads out of one result file: peak memory, throughput, held-out loss, metrics.

    python -c "from disha_bench.analysis import measures; print(measures.metric_domain('accuracy'))"

One place for these read-outs, so that `report` and `check` can never disagree on, say, which
memory figure is "peak memory" (the absolute peak of the whole run, the maximum over ranks; results
written before schema v2 only have the training peak above the start-up baseline, which is used,
and said, when the absolute one is missing).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from disha_bench.analysis.convergence import heldout_points
from disha_bench.contracts.results import RunResult, scan_results
from disha_bench.core.errors import UserError

# Evaluation metrics are higher-is-better (Task.primary_metric) except these loss-like names.
_LOWER_IS_BETTER = re.compile(r"loss|error|perplexity|ppl|wer|cer|mse|mae", re.I)
_PROPORTIONS = re.compile(r"accuracy|exact_match|pass@|f1|^em$|precision|recall", re.I)
_CORRELATIONS = re.compile(r"mcc|matthews|pearson|spearman|corr", re.I)


def higher_is_better(metric: str) -> bool:
    return not _LOWER_IS_BETTER.search(metric)


def is_proportion(metric: str) -> bool:
    """Metrics that are a share of examples (accuracy, exact match, pass@k, F1)."""
    return bool(_PROPORTIONS.search(metric)) and not _LOWER_IS_BETTER.search(metric)


_COUNTS = re.compile(r"accuracy|exact_match|pass@|^em$", re.I)


def is_count(metric: str) -> bool:
    """Share-of-examples metrics that are k correct of n (accuracy, exact match, pass@k), not F1."""
    return bool(_COUNTS.search(metric)) and not _LOWER_IS_BETTER.search(metric)


def metric_domain(metric: str) -> tuple[float, float]:
    """Where a metric's values (and so its intervals) can lie."""
    if is_proportion(metric):
        return 0.0, 1.0
    if _CORRELATIONS.search(metric):
        return -1.0, 1.0
    if _LOWER_IS_BETTER.search(metric):
        return 0.0, math.inf
    return -math.inf, math.inf


def peak_memory_mb(result: RunResult) -> float | None:
    """Absolute peak of the run, maximum over ranks; the training peak for results before schema v2."""
    memory = result.memory
    if memory is None:
        return None
    for values in (memory.per_rank_peak_mb, [memory.peak_mb], memory.per_rank_train_peak_mb, [memory.train_peak_mb]):
        present = [v for v in values if v is not None]
        if present:
            return max(present)
    return None


def memory_is_absolute(result: RunResult) -> bool:
    memory = result.memory
    return memory is not None and (memory.peak_mb is not None or bool(memory.per_rank_peak_mb))


def tokens_per_s(result: RunResult) -> float | None:
    return result.throughput.tokens_per_s if result.throughput else None


def train_time_s(result: RunResult) -> float | None:
    """Seconds of training, held-out evaluation excluded (the last held-out point, else the loop time)."""
    points = heldout_points(result)
    if points:
        return float(points[-1].train_time_s)
    return result.throughput.train_time_s if result.throughput else None


def heldout_final(result: RunResult) -> float | None:
    """Held-out loss at the end of training (the budget)."""
    points = heldout_points(result)
    return float(points[-1].loss) if len(points) >= 2 else None


def heldout_start(result: RunResult) -> float | None:
    """Held-out loss of the unadapted model (step 0)."""
    points = heldout_points(result)
    return float(points[0].loss) if points and points[0].step == 0 else None


def primary_metric(results: list[RunResult]) -> str | None:
    return next((r.evaluation.get("primary_metric") for r in results if r.evaluation.get("primary_metric")), None)


def numeric_metrics(result: RunResult) -> dict[str, float]:
    """The evaluation's numeric metrics (not `primary_metric`, `n_examples` or nested extras)."""
    return {k: float(v) for k, v in result.evaluation.items()
            if k not in ("primary_metric", "n_examples") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def trainable_params(result: RunResult) -> int | None:
    return result.training.trainable_params if result.training else None


def provenance(result: RunResult) -> str:
    """commit (+dirty) @ machine: rows from different ones are marked in reports."""
    commit = (result.meta.git_commit or "unknown")[:10] + ("+dirty" if result.meta.git_dirty else "")
    return f"{commit}@{result.run.node or result.meta.hardware.get('cpu', '') or 'unknown'}"


def value_of(result: Any, name: str) -> float | None:
    """A named per-run figure (used by report and check alike)."""
    getters = {"peak_mb": peak_memory_mb, "tokens_per_s": tokens_per_s, "train_time_s": train_time_s,
               "heldout_final": heldout_final, "heldout_start": heldout_start, "params": trainable_params}
    if name in getters:
        return getters[name](result)
    value = result.evaluation.get(name.removeprefix("metric:"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_checked(results_dir: str | Path) -> list[RunResult]:
    """The readable results of a folder; UserError when there is none to work with."""
    path = Path(results_dir)
    if not path.is_dir():
        raise UserError("results folder not found" if not path.exists() else "not a folder", file=str(path))
    files = list(path.glob("*.json"))
    if not files:
        raise UserError("no result files (*.json) here; run `disha-bench run SUITE` first", file=str(path))
    results, damaged = scan_results(path)
    if not results:
        first, why = next(iter(damaged.items()))
        raise UserError(f"none of the {len(files)} .json files is a readable result file ({first.name}: {why})", file=str(path))
    return results


def damaged_files(results_dir: str | Path) -> dict[Path, str]:
    """{result file that exists but is not a whole result: why}, for report and check to name them."""
    return scan_results(Path(results_dir))[1]
