"""One task's results turned into comparisons: per-seed values, targets, paired tests against the reference.

    python -c "from disha_bench.analysis import compare, measures; print(compare.analyze_suite(measures.load_checked('results/smoke')))"

Per task: every method's per-seed figures (`ENDPOINTS` and every evaluation metric), the held-out
targets resolved once per task (disha_bench.analysis.convergence), steps and training time to each target
with censoring, and each method compared with the reference method, paired by seed
(disha_bench.analysis.stats). The declared family of primary endpoints - held-out loss at the budget,
training time to the first target, the primary task metric, peak memory and tokens/s, each method
against the reference - is Holm-corrected per task; only those comparisons can be significant.

The unadapted reference runs (label `unadapted`, method `none`) and a task's majority-class score
(`evaluation["majority_class"]`, a number or {metric: value}, or `majority_class_<metric>` keys)
become reference rows; they are never compared or ranked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from disha_bench.analysis import convergence, measures, stats
from disha_bench.analysis.results import EVALUATED_STATUSES, TRAINED_STATUSES, RunResult

UNADAPTED_LABEL, UNADAPTED_METHOD = "unadapted", "none"
DEFAULT_TARGET = "frac:0.5:{reference}"
"""Target used when a suite declares none: halfway from the unadapted model's held-out loss to the
reference's mean final one. The reference reaches it within the budget in every seed that learns,
so its time to target is not censored (`final:<reference>` is missed by about half its own seeds)."""


@dataclass(frozen=True)
class Endpoint:
    key: str
    """Key in MethodFigures.values (`heldout_final`, `metric:accuracy`, `time_to_target:0`, ...)."""
    title: str
    """How tables name it."""
    better: str | None
    """`low`, `high` or None (not ranked)."""
    ratio: bool = False
    """Compared as a ratio through logs (memory, throughput, time)."""
    domain: tuple[float, float] = stats.UNBOUNDED
    """Where the quantity's values lie; intervals are clipped to it."""
    unit: str = ""
    """`%` (proportion), `MB`, `s`, `steps`, `tok/s`, `params` or ``: picks the number format."""

    def direction_text(self) -> str:
        return {"low": "lower", "high": "higher"}.get(self.better or "", "")


POSITIVE = (0.0, math.inf)
HELDOUT_FINAL = Endpoint("heldout_final", "held-out loss at budget", "low", domain=POSITIVE)
PEAK = Endpoint("peak_mb", "peak memory", "low", ratio=True, domain=POSITIVE, unit="MB")
SPEED = Endpoint("tokens_per_s", "tokens/s", "high", ratio=True, domain=POSITIVE, unit="tok/s")
TRAIN_TIME = Endpoint("train_time_s", "training time (budget)", "low", ratio=True, domain=POSITIVE, unit="s")
PARAMS = Endpoint("params", "trainable params", None, domain=POSITIVE, unit="params")
TRAIN_LOSS = Endpoint("train_loss_final", "train loss at budget (EMA, secondary)", "low", domain=POSITIVE)


def metric_endpoint(name: str) -> Endpoint:
    unit = "%" if measures.is_proportion(name) else ""
    return Endpoint(f"metric:{name}", name, "high" if measures.higher_is_better(name) else "low",
                    domain=measures.metric_domain(name), unit=unit)


def target_endpoints(i: int, text: str) -> tuple[Endpoint, Endpoint]:
    return (Endpoint(f"steps_to_target:{i}", f"steps to {text}", "low", ratio=True, domain=POSITIVE, unit="steps"),
            Endpoint(f"time_to_target:{i}", f"training time to {text}", "low", ratio=True, domain=POSITIVE, unit="s"))


@dataclass
class MethodFigures:
    label: str
    """Method label."""
    runs: list[RunResult]
    """Every run of this method on the task, whatever its status."""
    values: dict[str, dict[int, float | None]] = field(default_factory=dict)
    """Endpoint key -> {seed: value} over the runs where the figure is usable."""
    reached: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`steps_to_target:i` / `time_to_target:i` -> convergence.censored_summary."""

    @property
    def n_examples(self) -> int | None:
        """Size of the evaluation set, when every evaluated run of this method used the same one."""
        sizes = {r.evaluation.get("n_examples") for r in self.runs if r.evaluation and r.evaluation.get("n_examples")}
        return sizes.pop() if len(sizes) == 1 else None


@dataclass
class TaskAnalysis:
    task: str
    reference: str | None
    """Label every method is compared with (None when it has no run on this task)."""
    methods: dict[str, MethodFigures]
    """Compared methods, reference first."""
    endpoints: list[Endpoint]
    """Every figure of the details table, in order."""
    family: list[str]
    """Keys of the declared primary endpoints (Holm family, with every non-reference method)."""
    comparisons: dict[tuple[str, str], stats.Paired]
    """(label, endpoint key) -> paired comparison with the reference."""
    primary: str | None
    """Name of the primary task metric."""
    targets: list[tuple[Any, float | None]]
    """(spec, resolved held-out loss) of each target."""
    reference_rows: dict[str, dict[str, float]] = field(default_factory=dict)
    """`unadapted model` / `majority class` -> {endpoint key: value}."""

    def endpoint(self, key: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.key == key), None)


def _target_text(spec: Any, value: float | None) -> str:
    shown = "?" if value is None else f"{value:.3g}"
    return f"held-out loss ≤ {shown}" + ("" if isinstance(spec, (int, float)) else f" ({spec})")


def _run_values(r: RunResult, targets: list[tuple[Any, float | None]], ema: float) -> tuple[dict, dict]:
    """Figures of one run and the crossing of each target."""
    values: dict[str, float | None] = {}
    crossings = {}
    if r.run.status in EVALUATED_STATUSES:
        values.update({f"metric:{k}": v for k, v in measures.numeric_metrics(r).items() if not k.startswith("majority")})
    if r.run.status in TRAINED_STATUSES:
        for name in ("heldout_final", "peak_mb", "tokens_per_s", "train_time_s", "params"):
            values[name] = measures.value_of(r, name)
        steps = r.training.steps if r.training else []
        if steps:
            values["train_loss_final"] = convergence.smooth([s.loss for s in steps], ema)[-1]
        points = convergence.heldout_points(r)
        for i, (_, target) in enumerate(targets):
            hit = convergence.crossing(points, target)
            crossings[i] = hit
            values[f"steps_to_target:{i}"], values[f"time_to_target:{i}"] = hit["step"], hit["time_s"]
    return values, crossings


def _reference_rows(runs: list[RunResult], primary: str | None) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    unadapted = [r for r in runs if is_unadapted(r)]
    trained = [r for r in runs if not is_unadapted(r)]
    starts = stats.finite(measures.heldout_start(r) for r in unadapted + trained)
    entry = {}
    if starts:
        entry["heldout_final"] = math.fsum(starts) / len(starts)
    names = {k for r in unadapted if r.run.status in EVALUATED_STATUSES for k in measures.numeric_metrics(r)}
    for key in sorted(names, key=lambda k: (k != primary, k)):  # a set's order changes with each process's hash seed
        vals = stats.finite(measures.numeric_metrics(r).get(key) for r in unadapted if r.run.status in EVALUATED_STATUSES)
        if vals and not key.startswith("majority"):
            entry[f"metric:{key}"] = math.fsum(vals) / len(vals)
    if entry:
        rows["unadapted model"] = entry
    majority = {}
    for r in runs:
        value = r.evaluation.get("majority_class")
        if isinstance(value, dict):
            majority.update({f"metric:{k}": float(v) for k, v in value.items()  # "label" names the class, not a score
                             if k != "label" and isinstance(v, (int, float)) and not isinstance(v, bool)})
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and primary:
            majority[f"metric:{primary}"] = float(value)
        majority.update({f"metric:{k[len('majority_class_'):]}": float(v) for k, v in r.evaluation.items()
                         if k.startswith("majority_class_") and isinstance(v, (int, float))})
    if majority:
        rows["majority class"] = majority
    return rows


def is_unadapted(r: RunResult) -> bool:
    return r.run.method == UNADAPTED_LABEL or ((r.run.config or {}).get("method") or {}).get("name") == UNADAPTED_METHOD


def analyze_task(task: str, runs: list[RunResult], reference: str | None, specs: list, ema: float) -> TaskAnalysis:
    compared = [r for r in runs if not is_unadapted(r)]
    labels = list(dict.fromkeys(r.run.method for r in compared))
    if reference not in labels:
        reference = None
    labels = ([reference] if reference else []) + sorted(l for l in labels if l != reference)
    specs = list(specs) or ([DEFAULT_TARGET.format(reference=reference)] if reference else [f"frac:0.5:{convergence.WORST}"])
    targets = list(zip(specs, convergence.resolve_targets(specs, compared)))
    primary = measures.primary_metric([r for r in compared if r.run.status in EVALUATED_STATUSES])
    methods = {}
    for label in labels:
        figures = MethodFigures(label, [r for r in compared if r.run.method == label])
        statuses: dict[int, list[str]] = {}
        for r in figures.runs:
            values, crossings = _run_values(r, targets, ema)
            for key, value in values.items():
                figures.values.setdefault(key, {})[r.run.seed] = value
            for i, hit in crossings.items():
                statuses.setdefault(i, []).append(hit["status"])
        for i in range(len(targets)):
            trained = [r for r in figures.runs if r.run.status in TRAINED_STATUSES]
            for kind, budget in (("steps", max((p.step for r in trained for p in convergence.heldout_points(r)), default=None)),
                                 ("time", max((measures.train_time_s(r) or 0 for r in trained), default=None))):
                key = f"{kind}_to_target:{i}"
                seeds = [r.run.seed for r in trained]
                figures.reached[key] = convergence.censored_summary(
                    [figures.values.get(key, {}).get(s) for s in seeds], statuses.get(i, []), budget)
        methods[label] = figures
    metric_names = sorted({k for f in methods.values() for k in f.values if k.startswith("metric:")},
                          key=lambda k: (k != f"metric:{primary}", k))
    endpoints = [metric_endpoint(k[7:]) for k in metric_names] + [HELDOUT_FINAL]
    for i, (spec, value) in enumerate(targets):
        endpoints += target_endpoints(i, _target_text(spec, value))
    endpoints += [PEAK, SPEED, TRAIN_TIME, PARAMS, TRAIN_LOSS]
    family = ["heldout_final", "time_to_target:0", f"metric:{primary}" if primary else "", "peak_mb", "tokens_per_s"]
    family = [k for k in family if k and any(e.key == k for e in endpoints)]
    comparisons = _compare(methods, reference, endpoints, family)
    return TaskAnalysis(task, reference, methods, endpoints, family, comparisons, primary, targets,
                        _reference_rows(runs, primary))


def _compare(methods: dict[str, MethodFigures], reference: str | None, endpoints: list[Endpoint],
             family: list[str]) -> dict[tuple[str, str], stats.Paired]:
    """Every method against the reference on every ranked endpoint; Holm over the family."""
    comparisons: dict[tuple[str, str], stats.Paired] = {}
    if reference is None:
        return comparisons
    for label, figures in methods.items():
        if label == reference:
            continue
        for e in endpoints:
            if e.better is not None:
                comparisons[(label, e.key)] = compare_pair(e, methods[reference], figures)
    stats.apply_holm([comparisons[(l, k)] for l in methods if l != reference for k in family if (l, k) in comparisons])
    return comparisons


def compare_pair(e: Endpoint, base: MethodFigures, other: MethodFigures) -> stats.Paired:
    """`other` against `base` on endpoint `e`, paired by seed. Count metrics (accuracy, exact match,
    pass@k) on one evaluation set also carry that set's sampling error (`stats.with_sampling_error`)."""
    a, b = base.values.get(e.key, {}), other.values.get(e.key, {})
    if e.key.startswith(("steps_to_target", "time_to_target")) and (None in a.values() or None in b.values()):
        # A seed that never reached the target has no finite time: no paired difference is claimed.
        return stats.Paired([], [], None, None, None, None, e.ratio, extra={"censored": True})
    c = stats.paired(a, b, ratio=e.ratio, domain=e.domain)
    if e.key.startswith("metric:") and measures.is_count(e.key[len("metric:"):]):
        n = base.n_examples
        c = stats.with_sampling_error(c, a, n if n == other.n_examples else None)
    return c


def latest_per_seed(results: list[RunResult]) -> tuple[list[RunResult], list[str]]:
    """One run per (task, method, seed): the latest finished; and a line for each set aside.

    A results folder can hold runs of the same seed from different configurations (a `--set` run into
    the same folder): averaging both in would mix two experiments, so only the newest counts.
    """
    chosen: dict[tuple[str, str, int], RunResult] = {}
    for r in sorted(results, key=lambda r: (r.run.finished_at or "", r.run.run_id)):
        chosen[(r.run.task, r.run.method, r.run.seed)] = r
    kept = {id(r) for r in chosen.values()}
    notes = [f"{r.run.run_id} set aside: {chosen[(r.run.task, r.run.method, r.run.seed)].run.run_id} is a newer run "
             f"of the same task, method and seed (another configuration)" for r in results if id(r) not in kept]
    return [r for r in results if id(r) in kept], notes


def analyze_suite(results: list[RunResult], reference: str | None = None, specs: list | None = None,
                  ema: float = convergence.DEFAULT_EMA) -> list[TaskAnalysis]:
    """One TaskAnalysis per task, in the order the results first mention them (one run per seed)."""
    results, _ = latest_per_seed(results)
    reference = reference or next((r.run.analysis.get("reference") for r in results
                                   if (r.run.analysis or {}).get("reference")), None)
    if specs is None:
        specs = next((list(r.run.analysis.get("targets") or []) for r in results
                      if (r.run.analysis or {}).get("targets")), [])
    tasks = list(dict.fromkeys(r.run.task for r in results))
    return [analyze_task(t, [r for r in results if r.run.task == t], reference, specs, ema) for t in tasks]
