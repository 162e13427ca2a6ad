"""What the analysis reads out of one result file: peak memory, throughput, held-out loss, metrics.

    python -c "from disha_bench.analysis import measures; print(measures.load_checked('reports/results/smoke')[0].evaluation)"

One place for these read-outs, so that `report` and `check` can never disagree on, say, which
memory figure is "peak memory" (the absolute peak of the whole run, the maximum over ranks; results
written before schema v2 only have the training peak above the start-up baseline, which is used,
and said, when the absolute one is missing). A metric's meaning (direction, range, whether a count)
is its declaration (`declarations`): recorded in the result, else its task's, never guessed from
its name; a metric with neither is an error naming the result file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from disha_bench.analysis.convergence import heldout_points
from disha_bench.contracts.metrics import DECLARATIONS_KEY, Metric, by_name, recorded_declarations
from disha_bench.contracts.results import EVALUATED_STATUSES, RunResult, scan_results
from disha_bench.core.errors import UserError


def declarations(result: RunResult) -> dict[str, Metric]:
    """{metric name: declaration} for `result`: those it recorded (schema v4), else, for results
    written before declarations existed, its task's own from the task registry ({} for an unknown task).
    ValueError when a recorded declaration is malformed."""
    recorded = recorded_declarations(result.evaluation)
    if recorded is not None:
        return recorded
    from disha_bench import tasks  # only for older results: reading v4 results needs no torch import

    return by_name(tasks.REGISTRY.get(result.run.task).metrics) if result.run.task in tasks.REGISTRY else {}


def declaration(result: RunResult, metric: str, file: str | Path | None = None) -> Metric:
    """The declaration of `metric` in `result`; UserError naming the result file (`file`, else the
    run id's file name) and the metric when there is none: analysis never guesses from the name."""
    where = str(file) if file is not None else f"{result.run.run_id}.json"
    try:
        found = declarations(result).get(metric)
    except ValueError as err:
        raise UserError(f"damaged metric declaration: {err}", file=where, key=DECLARATIONS_KEY) from None
    if found is None:
        raise UserError(f"metric '{metric}' has no declaration: the result records none and task "
                        f"'{result.run.task}' does not declare it (a task declares its metrics in `metrics`)",
                        file=where, key=f"evaluation.{metric}")
    return found


def require_declarations(result: RunResult, file: str | Path) -> None:
    """Raise `declaration`'s UserError, naming `file`, for the first metric of `result` that has none."""
    for metric in numeric_metrics(result):
        if not metric.startswith("majority"):
            declaration(result, metric, file)


def declared_metrics(runs: list[RunResult], names: list[str]) -> dict[str, Metric]:
    """The declaration of each metric in `names` (as the evaluated runs of one task give it); UserError
    when a run has none for it, or two runs declare it differently."""
    found: dict[str, tuple[Metric, RunResult]] = {}
    for r in runs:
        if r.run.status not in EVALUATED_STATUSES:
            continue
        for name in names:
            if name not in numeric_metrics(r):
                continue
            metric = declaration(r, name)
            first = found.setdefault(name, (metric, r))
            if (first[0].higher_is_better, first[0].domain, first[0].is_count) != \
                    (metric.higher_is_better, metric.domain, metric.is_count):
                raise UserError(f"metric '{name}' is declared differently in {first[1].run.run_id}.json "
                                f"({first[0]}) and here ({metric})", file=f"{r.run.run_id}.json")
    return {name: metric for name, (metric, _) in found.items()}


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
    for result in results:
        require_declarations(result, path / f"{result.run.run_id}.json")
    return results


def damaged_files(results_dir: str | Path) -> dict[Path, str]:
    """{result file that exists but is not a whole result: why}, for report and check to name them."""
    return scan_results(Path(results_dir))[1]
