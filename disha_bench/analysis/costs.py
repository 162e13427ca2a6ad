"""Cost figures of a run: peak memory, tokens/s and training time, from the cost phase's repeated
measurements when a result has them (schema v3 `cost.repeats`), else the run's single reading.

    python -c "from disha_bench.analysis import costs, measures; print([costs.cost_values(r) for r in measures.load_checked('results/smoke')][:1])"

Each figure comes with where it can lie: the range of the repeats (the median is the value), or for a
single reading the reading within the change a re-run of one run showed (issue 21,
verdicts.SINGLE_READING_REPEATABILITY). The comparisons treat that as an interval (compare.py).
"""

from __future__ import annotations

import statistics
from typing import Any

from disha_bench.analysis import measures, stats, verdicts
from disha_bench.contracts.results import TRAINED_STATUSES, RunResult

COST_KEYS = ("peak_mb", "tokens_per_s", "train_time_s")


def field_of(obj: Any, name: str) -> Any:
    """A field of a dataclass or of a plain dict (results loaded before their schema knew it)."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def cost_repeats(r: RunResult) -> list[Any]:
    """The run's repeated cost measurements (schema v3 `cost.repeats`); [] for single readings."""
    cost = getattr(r, "cost", None)
    return list(field_of(cost, "repeats") or []) if cost is not None else []


def _median_of(repeats: list[Any], name: str) -> float | None:
    values = stats.finite(field_of(x, name) for x in repeats)
    return statistics.median(values) if values else None


def step_time_s(r: RunResult) -> float | None:
    """The run's robust per-step time: the cost repeats' median, else the median steady-state step."""
    repeated = _median_of(cost_repeats(r), "step_time_s")
    if repeated is not None:
        return repeated
    if r.throughput and r.throughput.step_time_s:
        return r.throughput.step_time_s
    times = stats.finite(s.step_time_s for s in (r.training.steps if r.training else []))
    return statistics.median(times) if times else None


def cost_values(r: RunResult) -> tuple[dict[str, float | None], dict[str, tuple[float, float] | None]]:
    """Peak memory, tokens/s and training time, and where each can lie: the median and range of the
    cost repeats when the run has them; else the single reading, within its re-run repeatability
    (verdicts.SINGLE_READING_REPEATABILITY), so that no verdict rests on one reading's noise."""
    values = {name: measures.value_of(r, name) for name in COST_KEYS}
    repeats = cost_repeats(r)
    if not repeats:
        spread = verdicts.SINGLE_READING_REPEATABILITY
        return values, {k: (v / (1 + spread[k]), v * (1 + spread[k])) if v else None for k, v in values.items()}
    steps = len(r.training.steps) if r.training else 0
    bounds: dict[str, tuple[float, float] | None] = {}
    for key, name, scale in (("peak_mb", "peak_mb", 1), ("tokens_per_s", "tokens_per_s", 1),
                             ("train_time_s", "step_time_s", steps)):
        measured = stats.finite(field_of(x, name) for x in repeats)
        values[key] = statistics.median(measured) * scale if measured and scale else None
        bounds[key] = (min(measured) * scale, max(measured) * scale) if values[key] else None
    return values, bounds


def repeatability(runs: list[RunResult]) -> dict[str, tuple[float, str]]:
    """Each cost's relative repeatability: the median over runs of the repeats' range / median when
    every run has repeats, else the single reading's (verdicts.SINGLE_READING_REPEATABILITY)."""
    trained = [r for r in runs if r.run.status in TRAINED_STATUSES]
    out = {}
    for key, single in verdicts.SINGLE_READING_REPEATABILITY.items():
        name = {"train_time_s": "step_time_s"}.get(key, key)
        spreads = []
        for r in trained:
            values = stats.finite(field_of(x, name) for x in cost_repeats(r))
            if len(values) < 2 or statistics.median(values) <= 0:
                break
            spreads.append((max(values) - min(values)) / statistics.median(values))
        else:
            if spreads:
                out[key] = (statistics.median(spreads), f"measured: median range of the runs' {len(values)} repeats")
                continue
        out[key] = (single, "single reading: what a re-run moved it")
    return out
