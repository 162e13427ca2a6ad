"""What `check` needs beyond curves and metrics: repeated cost figures, replicate-calibrated curve
tolerances, constant metrics, and which configuration keys changed.

    disha-bench baseline results/smoke -o suites/baselines/smoke.json --replicate /tmp/smoke-1thread
    python -m pytest -q tests/test_check.py

- **Cost** (`cost_summary`, `cost_rows`): from the cost phase's interleaved repeats
  (running/cost.py), each run's step cost (on CPU the process's CPU time per step, which does not
  grow while other processes hold the cores, the median over its repeats; on GPUs the fastest
  step's wall time, noise only ever adding time), and its smallest peak memory, as a ratio to the
  reference method's of the same task and seed, measured in the same rounds: what the code costs,
  not what the machine did. A step-time regression needs every round to agree: even the current
  run's most favourable round ratio is slower than the baseline's by more than the tolerance (a
  slower method is slower in each round; a disturbed repeat is one round). A method whose step became
  1.5x slower moves its ratio 1.5x; the tolerance (x1.25 by default) sits between that and noise.
  The spread of the per-round ratios is stored beside the figure (its repeatability).
- **Curve tolerances** (`calibrate_curves`): the largest difference between the baseline's runs and
  replicate runs of the same configuration (the same machine with another thread count), times
  CURVE_SAFETY, never below CURVE_FLOOR: a 1-thread re-run of the smoke suite differs by about 1e-6.
- **Constant metrics** (`constant_metrics`): a metric that has one value in every run of a task
  (exact match 0 everywhere) says nothing about any run; it is reported as not compared while it
  stays so.
- **Configuration** (`config_changes`): the keys of the resolved run configuration that differ; only
  those make a "configuration changed" note (library versions are not configuration).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, Iterable

from disha_bench.analysis import measures
from disha_bench.analysis.convergence import heldout_points
from disha_bench.contracts.results import EVALUATED_STATUSES, RunResult

CURVE_SAFETY = 100.0
"""Calibrated curve tolerance = this x the largest replicate difference ..."""
CURVE_FLOOR = 1e-3
"""... and never below this (absolute loss)."""
COST_TOLERANCES = {"cost_time_ratio": 0.25, "cost_memory_ratio": 0.05}
"""Repeated cost figures: a run's ratio to the reference may move by x(1 + this) before it is a
regression (step time: slower; memory: larger)."""
Key = tuple[str, str, int]


def _key(r: RunResult) -> Key:
    return r.run.task, r.run.method, r.run.seed


def _fastest(repeat) -> float | None:
    """A repeat's step cost: its CPU time per step on CPU (contention does not add to it), else its
    fastest step's wall time."""
    return repeat.cpu_time_s or repeat.min_step_time_s or repeat.step_time_s


def _own_cost(r: RunResult) -> dict[str, Any] | None:
    repeats = r.cost.repeats if r.cost else []
    times = [t for x in repeats if (t := _fastest(x))]
    peaks = [x.peak_mb for x in repeats if x.peak_mb]
    if not times:
        return None
    # CPU time resists descheduling but not cache contention: the median repeat; wall time: the fastest.
    on_cpu = all(x.cpu_time_s for x in repeats)
    return {"step_time_s": statistics.median(times) if on_cpu else min(times), "peak_mb": min(peaks) if peaks else None,
            "repeats": len(repeats),
            "rounds": [_fastest(x) for x in sorted(repeats, key=lambda x: x.position)]}


def cost_summary(results: list[RunResult], reference: str | None) -> dict[Key, dict[str, Any]]:
    """Per run with cost repeats: its fastest step time and smallest peak over the reference's of the
    same task and seed, with the range of the per-round step-time ratios (repeatability)."""
    own = {_key(r): c for r in results if (c := _own_cost(r)) is not None}
    out = {}
    for (task, method, seed), mine in own.items():
        ref = own.get((task, reference, seed)) if reference else None
        if ref is None:
            continue
        rounds = [a / b for a, b in zip(mine["rounds"], ref["rounds"]) if a and b]
        out[(task, method, seed)] = {
            "time_ratio": mine["step_time_s"] / ref["step_time_s"],
            "memory_ratio": mine["peak_mb"] / ref["peak_mb"] if mine["peak_mb"] and ref["peak_mb"] else None,
            "repeats": mine["repeats"], "round_time_ratios": [min(rounds), max(rounds)] if rounds else None,
        }
    return out


def cost_rows(e: dict, current: dict[str, Any], tols: dict, reference: str, row) -> list[dict]:
    """Step time and peak memory ratios from the cost phase against the baseline's (see module doc)."""
    base = e.get("cost") or {}
    rows = []
    for name, key, tol_key in (("step time", "time_ratio", "cost_time_ratio"), ("peak memory", "memory_ratio", "cost_memory_ratio")):
        b, c = base.get(key), current.get(key)
        if b is None or c is None:
            continue
        tol = tols[tol_key]
        change = c / b
        # Step time: every round has to agree (its most favourable round slower than the tolerance
        # allows): a slower method is slower in each round, a disturbed round is only one of them.
        low, high = (current.get("round_time_ratios") or (c, c)) if key == "time_ratio" else (c, c)
        verdict = "REGRESSION" if low / b > 1 + tol else "improved" if high / b < 1 / (1 + tol) else "ok"
        spread = base.get("round_time_ratios") if key == "time_ratio" else None
        note = f"{current.get('repeats')} interleaved repeats"
        if key == "time_ratio" and current.get("round_time_ratios"):
            note += f"; rounds {low:.3g}-{high:.3g}x"
        if spread:
            note += f" (baseline {spread[0]:.3g}-{spread[1]:.3g}x)"
        rows.append(row(e, f"{name} / {reference}'s (cost phase)", f"{b:.3g}×", f"{c:.3g}×", f"{change:.3g}× of baseline",
                        f"×{1 + tol:.3g}", verdict, note))
    return rows


def _max_curve_difference(a: RunResult, b: RunResult) -> float:
    pairs = [(dict((p.step, p.loss) for p in heldout_points(a)), dict((p.step, p.loss) for p in heldout_points(b)))]
    if a.training and b.training:
        pairs.append(({s.step: s.loss for s in a.training.steps}, {s.step: s.loss for s in b.training.steps}))
    diffs = [abs(x[s] - y[s]) for x, y in pairs for s in x.keys() & y.keys() if math.isfinite(x[s] - y[s])]
    return max(diffs, default=0.0)


def calibrate_curves(results: list[RunResult], replicates: Iterable[list[RunResult]]) -> dict[str, Any] | None:
    """Curve tolerances from replicate runs of the same task, method and seed; None when no run pairs."""
    mine = {_key(r): r for r in results}
    diffs, pairs = [], 0
    for replicate in replicates:
        for r in replicate:
            if _key(r) in mine:
                diffs.append(_max_curve_difference(mine[_key(r)], r))
                pairs += 1
    if not pairs:
        return None
    largest = max(diffs)
    return {"curve_abs": max(CURVE_FLOOR, CURVE_SAFETY * largest), "curve_rel": 0.0,
            "calibration": f"{pairs} replicate runs, largest curve difference {largest:.3g}; "
                           f"tolerance max({CURVE_FLOOR:g}, {CURVE_SAFETY:g} x that)"}


def constant_metrics(results: list[RunResult]) -> dict[str, dict[str, float]]:
    """task -> {metric: value} for the metrics with one value in every evaluated run of the task
    (at least three runs: two equal values may be a coincidence)."""
    values: dict[str, dict[str, set[float]]] = defaultdict(lambda: defaultdict(set))
    counts: dict[str, int] = defaultdict(int)
    for r in results:
        if r.run.status in EVALUATED_STATUSES:
            counts[r.run.task] += 1
            for name, value in measures.numeric_metrics(r).items():
                values[r.run.task][name].add(value)
    return {task: {name: next(iter(v)) for name, v in metrics.items() if len(v) == 1}
            for task, metrics in values.items() if counts[task] >= 3}


def config_changes(before: dict[str, Any] | None, after: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved run configurations."""
    if before is None:
        return []
    keys = sorted(set(before) | set(after))
    changed = []
    for k in keys:
        a, b = before.get(k), after.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += config_changes(a, b, f"{prefix}{k}.")
        elif a != b:
            changed.append(f"{prefix}{k}")
    return changed
