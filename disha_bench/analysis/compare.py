"""One task's results turned into comparisons: per-seed values, targets, paired tests against the reference.

    python -c "from disha_bench.analysis import compare, measures; print(compare.analyze_suite(measures.load_checked('results/smoke')))"

Per task: every method's per-seed figures (`ENDPOINTS` and every evaluation metric), the held-out
targets resolved once per task (disha_bench.analysis.convergence), steps and training time to each target
with censoring, and each method compared with the reference method, paired by seed
(disha_bench.analysis.stats). Two declared families per task, each Holm-corrected: the primary one
(held-out loss at the budget and steps to the first target, each method against the reference) and
the cost one (peak memory, tokens/s, training time). Only their comparisons get a verdict
(disha_bench.analysis.verdicts: adjusted interval and margin); every other figure is descriptive.
A cost is known per run only within its repeatability - the range of the cost phase's repeats
(`result.cost.repeats`, median as the value) when the run has them, else its single reading within
the re-run repeatability of issue 21 - and compared as such an interval (interval-censored, like
steps to target); a cost difference must also exceed the repeatability and the margin.

The unadapted reference runs (label `unadapted`, method `none`) and a task's majority-class score
(`evaluation["majority_class"]`, a number or {metric: value}, or `majority_class_<metric>` keys)
become reference rows; they are never compared or ranked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from disha_bench.analysis import convergence, measures, stats, verdicts
from disha_bench.analysis.costs import cost_values, field_of, repeatability, step_time_s
from disha_bench.config import targets as target_specs
from disha_bench.contracts.metrics import MEASURES, Metric
from disha_bench.contracts.results import EVALUATED_STATUSES, TRAINED_STATUSES, RunResult

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
    count: bool = False
    """A share of examples (`Metric.is_count`): its interval also carries the evaluation set's sampling error."""

    def direction_text(self) -> str:
        return {"low": "lower", "high": "higher"}.get(self.better or "", "")


POSITIVE = (0.0, math.inf)


def measure_endpoint(name: str, title: str, ranked: bool = True, **kwargs: Any) -> Endpoint:
    """The endpoint of a measure declared in `contracts.metrics.MEASURES` (held-out loss, costs)."""
    declared = MEASURES[name]
    better = ("high" if declared.higher_is_better else "low") if ranked else None
    return Endpoint(name, title, better, domain=declared.domain, **kwargs)


HELDOUT_FINAL = measure_endpoint("heldout_final", "held-out loss at budget")
PEAK = measure_endpoint("peak_mb", "peak memory", ratio=True, unit="MB")
SPEED = measure_endpoint("tokens_per_s", "tokens/s", ratio=True, unit="tok/s")
TRAIN_TIME = measure_endpoint("train_time_s", "training time (budget)", ratio=True, unit="s")
PARAMS = measure_endpoint("params", "trainable params", ranked=False, unit="params")
TRAIN_LOSS = measure_endpoint("train_loss_final", "train loss at budget (EMA, secondary)")


def metric_endpoint(declared: Metric) -> Endpoint:
    """A task metric's endpoint, from its declaration (never from its name)."""
    return Endpoint(f"metric:{declared.name}", declared.name, "high" if declared.higher_is_better else "low",
                    domain=declared.domain, unit="%" if declared.is_proportion else "", count=declared.is_count)


def target_endpoints(i: int, text: str) -> tuple[Endpoint, ...]:
    return (Endpoint(f"steps_to_target:{i}", f"steps to {text}", "low", ratio=True, domain=POSITIVE, unit="steps"),
            Endpoint(f"tokens_to_target:{i}", f"tokens to {text}", "low", ratio=True, domain=POSITIVE, unit="tokens"),
            Endpoint(f"time_to_target:{i}", f"time to {text} (steps x median step time)", "low", ratio=True,
                     domain=POSITIVE, unit="s"),
            Endpoint(f"wallclock_to_target:{i}", f"wall-clock crossing of {text} (secondary)", "low", ratio=True,
                     domain=POSITIVE, unit="s"))


PRIMARY_FAMILY = ("heldout_final", "steps_to_target:0")
"""At most two primary hypotheses per method against the reference."""
COST_FAMILY = ("peak_mb", "tokens_per_s", "train_time_s")
"""The cost family, Holm-corrected apart from the primary one."""
CONVERGENCE_KEYS = ("steps_to_target", "tokens_to_target", "time_to_target", "wallclock_to_target")


@dataclass
class MethodFigures:
    label: str
    """Method label."""
    runs: list[RunResult]
    """Every run of this method on the task, whatever its status."""
    values: dict[str, dict[int, float | None]] = field(default_factory=dict)
    """Endpoint key -> {seed: value} over the runs where the figure is usable."""
    reached: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`steps_to_target:i` / `time_to_target:i` / ... -> convergence.censored_summary."""
    bounds: dict[str, dict[int, tuple[float, float] | None]] = field(default_factory=dict)
    """Interval-censored endpoints (`steps_to_target:i`, ...) -> {seed: (low, high)}, None when missed."""
    examples: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    """Endpoint key -> {seed: {example id: score}} when the runs stored per-example outputs (schema v3)."""

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
    cost_family: list[str] = field(default_factory=list)
    """Keys of the cost family (Holm-corrected apart from the primary one)."""
    margins: dict[str, float] = field(default_factory=dict)
    """Smallest effect of interest per kind of quantity (verdicts.DEFAULT_MARGINS and the suite's)."""
    repeatability: dict[str, tuple[float, str]] = field(default_factory=dict)
    """Cost key -> (relative repeatability, where it comes from)."""

    def endpoint(self, key: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.key == key), None)

    def known_endpoint(self, key: str) -> Endpoint:
        """The endpoint `key` where the caller knows it is one (a ranked key, the primary metric's)."""
        e = self.endpoint(key)
        if e is None:
            raise KeyError(f"{self.task}: no endpoint {key!r} among {[e.key for e in self.endpoints]}")
        return e


def _target_text(spec: Any, value: float | None) -> str:
    shown = "?" if value is None else f"{value:.3g}"
    return f"held-out loss ≤ {shown}" + ("" if isinstance(spec, (int, float)) else f" ({spec})")


def per_example(r: RunResult) -> dict[str, dict[str, float]]:
    """Endpoint key -> {example id: score} of a run's per-example outputs (schema v3; {} for v2):
    every mean-over-examples metric of `evaluation["per_example"]`, and the held-out loss at the budget
    from the last held-out point's `per_example` with `heldout.example_ids`."""
    out: dict[str, dict[str, float]] = {}
    stored = r.evaluation.get("per_example") if r.run.status in EVALUATED_STATUSES else None
    if isinstance(stored, dict) and stored.get("ids"):
        ids = [str(i) for i in stored["ids"]]
        for name, scores in stored.items():
            if name not in ("ids", "prediction", "label") and isinstance(scores, list) and len(scores) == len(ids):
                out[f"metric:{name}"] = {i: float(v) for i, v in zip(ids, scores) if v is not None}
    points = convergence.heldout_points(r)
    heldout_ids = field_of(r.heldout, "example_ids") if r.heldout is not None else None
    last = field_of(points[-1], "per_example") if len(points) >= 2 else None
    if r.run.status in TRAINED_STATUSES and heldout_ids and last and len(heldout_ids) == len(last):
        out["heldout_final"] = {str(i): float(v) for i, v in zip(heldout_ids, last)}
    return out


def _run_values(r: RunResult, targets: list[tuple[Any, float | None]], ema: float) -> tuple[dict, dict, dict]:
    """Figures of one run, the crossing of each target, and the interval of each censored figure."""
    values: dict[str, float | None] = {}
    crossings, bounds = {}, {}
    if r.run.status in EVALUATED_STATUSES:
        values.update({f"metric:{k}": v for k, v in measures.numeric_metrics(r).items() if not k.startswith("majority")})
    if r.run.status in TRAINED_STATUSES:
        values.update({name: measures.value_of(r, name) for name in ("heldout_final", "params")})
        costs, cost_bounds = cost_values(r)
        values.update(costs)
        bounds.update(cost_bounds)
        steps = r.training.steps if r.training else []
        if steps:
            values["train_loss_final"] = convergence.smooth([s.loss for s in steps], ema)[-1]
        points = convergence.heldout_points(r)
        per_step = step_time_s(r)
        for i, (_, target) in enumerate(targets):
            hit = crossings[i] = convergence.crossing(points, target)
            reached = hit["status"] == "reached"
            values[f"steps_to_target:{i}"], values[f"tokens_to_target:{i}"] = hit["step"], hit["tokens"]
            values[f"wallclock_to_target:{i}"] = hit["time_s"]
            values[f"time_to_target:{i}"] = hit["step"] * per_step if reached and per_step else None
            bounds[f"steps_to_target:{i}"] = (hit["step_low"], hit["step"]) if reached else None
            bounds[f"tokens_to_target:{i}"] = (hit["tokens_low"], hit["tokens"]) if reached else None
            bounds[f"time_to_target:{i}"] = (hit["step_low"] * per_step, hit["step"] * per_step) \
                if reached and per_step else None
    return values, crossings, bounds


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
    specs = list(specs) or ([DEFAULT_TARGET.format(reference=reference)] if reference else [f"frac:0.5:{target_specs.WORST}"])
    targets = list(zip(specs, convergence.resolve_targets(specs, compared)))
    primary = measures.primary_metric([r for r in compared if r.run.status in EVALUATED_STATUSES])
    methods = {label: _figures(label, compared, targets, ema) for label in labels}
    metric_names = sorted({k for f in methods.values() for k in f.values if k.startswith("metric:")},
                          key=lambda k: (k != f"metric:{primary}", k))
    declared = measures.declared_metrics(compared, [k[7:] for k in metric_names])
    endpoints = [metric_endpoint(declared[k[7:]]) for k in metric_names] + [HELDOUT_FINAL]
    for i, (spec, value) in enumerate(targets):
        endpoints += target_endpoints(i, _target_text(spec, value))
    endpoints += [PEAK, SPEED, TRAIN_TIME, PARAMS, TRAIN_LOSS]
    keys = {e.key for e in endpoints}
    analysis = TaskAnalysis(task, reference, methods, endpoints, [k for k in PRIMARY_FAMILY if k in keys], {},
                            primary, targets, _reference_rows(runs, primary),
                            cost_family=[k for k in COST_FAMILY if k in keys], margins=verdicts.margins_from(runs),
                            repeatability=repeatability(compared))
    analysis.comparisons = _compare(analysis)
    return analysis


def _figures(label: str, compared: list[RunResult], targets: list, ema: float) -> MethodFigures:
    """One method's per-seed figures and the censoring summary of each convergence figure."""
    figures = MethodFigures(label, [r for r in compared if r.run.method == label])
    statuses: dict[int, list[str]] = {}
    for r in figures.runs:
        values, crossings, bounds = _run_values(r, targets, ema)
        for key, value in values.items():
            figures.values.setdefault(key, {})[r.run.seed] = value
        for key, value in bounds.items():
            figures.bounds.setdefault(key, {})[r.run.seed] = value
        for key, scores in per_example(r).items():
            figures.examples.setdefault(key, {})[r.run.seed] = scores
        for i, hit in crossings.items():
            statuses.setdefault(i, []).append(hit["status"])
    trained = [r for r in figures.runs if r.run.status in TRAINED_STATUSES]
    seeds = [r.run.seed for r in trained]
    budget_steps = max((p.step for r in trained for p in convergence.heldout_points(r)), default=None)
    budget_time = max((measures.train_time_s(r) or 0 for r in trained), default=None)
    budget_tokens = max((convergence.heldout_points(r)[-1].tokens for r in trained if convergence.heldout_points(r)),
                        default=None)
    for i in range(len(targets)):
        for kind, budget in (("steps", budget_steps), ("tokens", budget_tokens), ("time", budget_time),
                             ("wallclock", budget_time)):
            key = f"{kind}_to_target:{i}"
            figures.reached[key] = convergence.censored_summary(
                [figures.values.get(key, {}).get(s) for s in seeds], statuses.get(i, []), budget)
    return figures


def margin_for(a: TaskAnalysis, e: Endpoint, base: MethodFigures, other: MethodFigures) -> float | None:
    """The margin a comparison is decided with; a cost's is at least its repeatability."""
    n = base.n_examples if base.n_examples == other.n_examples else None
    margin = verdicts.margin_of(verdicts.margin_kind(e.key, e.count), a.margins, n)
    if margin is not None and e.key in a.repeatability:
        margin = max(margin, a.repeatability[e.key][0])
    return margin


def decide_family(a: TaskAnalysis, family: list[tuple[Endpoint, MethodFigures, MethodFigures, stats.Paired]]) -> None:
    """Holm over one declared family, then each comparison's verdict (in place)."""
    stats.apply_holm([c for *_, c in family])
    for e, base, other, c in family:
        c.margin = margin_for(a, e, base, other)
        c.verdict = verdicts.decide(c, c.margin, e.better)


def _compare(a: TaskAnalysis) -> dict[tuple[str, str], stats.Paired]:
    """Every method against the reference on every ranked endpoint; Holm and verdicts per family."""
    comparisons: dict[tuple[str, str], stats.Paired] = {}
    if a.reference is None:
        return comparisons
    base = a.methods[a.reference]
    for label, figures in a.methods.items():
        if label != a.reference:
            for e in a.endpoints:
                if e.better is not None:
                    comparisons[(label, e.key)] = compare_pair(e, base, figures)
    for keys in (a.family, a.cost_family):
        decide_family(a, [(a.known_endpoint(k), base, a.methods[l], comparisons[(l, k)])
                          for l in a.methods if l != a.reference for k in keys if (l, k) in comparisons])
    require_stable_costs(a, a.reference, {k: c for k, c in comparisons.items() if k[1] in a.cost_family})
    return comparisons


def _moved(figures: MethodFigures, seed: int, factors: dict[str, float]) -> MethodFigures:
    """A copy of `figures` with one seed's cost figures (value and bounds) multiplied by `factors`."""
    values = {k: dict(v) for k, v in figures.values.items()}
    bounds = {k: dict(v) for k, v in figures.bounds.items()}
    for key, f in factors.items():
        value, bound = values.get(key, {}).get(seed), bounds.get(key, {}).get(seed)
        if value is not None:
            values[key][seed] = value * f
        if bound is not None:
            low, high = bound
            bounds[key][seed] = (low * f, high * f)
    return MethodFigures(figures.label, figures.runs, values, figures.reached, bounds)


def require_stable_costs(a: TaskAnalysis, base: str, comparisons: dict[tuple[str, str], stats.Paired]) -> None:
    """A cost verdict stands only if no single run's cost reading, moved up or down by its
    repeatability, changes it (issue 21: one re-run flipped three findings); else "not resolved".
    `comparisons`: (label, key) -> `label` against `base`, decided as one family (in place)."""
    decided = {(l, k): c for (l, k), c in comparisons.items() if k in a.cost_family and c.verdict}
    if not decided:
        return
    rep = {k: a.repeatability.get(k, (0.0, ""))[0] for k in a.cost_family}
    unstable: set[tuple[str, str]] = set()
    for label in {base, *(l for l, _ in decided)}:
        figures = a.methods[label]
        for seed in {s for k in a.cost_family for s in figures.values.get(k, {})}:
            for sign in (1, -1):
                factors = {"peak_mb": 1 + sign * rep.get("peak_mb", 0), "tokens_per_s": 1 + sign * rep.get("tokens_per_s", 0),
                           "train_time_s": 1 / (1 + sign * rep.get("tokens_per_s", 0))}
                methods = {l: (_moved(f, seed, factors) if l == label else f) for l, f in a.methods.items()}
                family = [(a.known_endpoint(k), methods[base], methods[l], compare_pair(a.known_endpoint(k), methods[base], methods[l]))
                          for (l, k) in decided]
                decide_family(a, family)
                unstable |= {key for key, (*_, c) in zip(decided, family) if c.verdict != decided[key].verdict}
    for key in unstable:
        if decided[key].verdict != verdicts.UNRESOLVED:
            decided[key].verdict = verdicts.UNRESOLVED
            decided[key].extra["unstable"] = True


def compare_pair(e: Endpoint, base: MethodFigures, other: MethodFigures) -> stats.Paired:
    """`other` against `base` on endpoint `e`, paired by seed (and by example where the runs stored
    per-example outputs: `stats.paired_examples`). Steps, tokens and time to a target are
    interval-censored (`stats.paired_censored`); count metrics (accuracy, exact match, pass@k) on one
    evaluation set also carry that set's sampling error (`stats.with_sampling_error`)."""
    a, b = base.values.get(e.key, {}), other.values.get(e.key, {})
    if e.key.startswith(CONVERGENCE_KEYS) and (None in a.values() or None in b.values()):
        # A seed that never reached the target has no finite time: no paired difference is claimed.
        return stats.Paired([], [], None, None, None, None, e.ratio, extra={"censored": True})
    if e.key in base.examples and e.key in other.examples and set(base.examples[e.key]) >= set(a) \
            and set(other.examples[e.key]) >= set(b):
        # Per-example outputs: same-example differences, two-way bootstrap over seeds and examples.
        c = stats.paired_examples(base.examples[e.key], other.examples[e.key])
        c.extra["width"] = e.domain[1] - e.domain[0]
        return c
    if e.key in base.bounds and e.key in other.bounds:
        known = lambda bounds: {s: b for s, b in bounds.items() if b is not None}  # noqa: E731
        return stats.paired_censored(known(base.bounds[e.key]), known(other.bounds[e.key]))
    c = stats.paired(a, b, ratio=e.ratio, domain=e.domain)
    if e.count:
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
                  ema: float = target_specs.DEFAULT_EMA) -> list[TaskAnalysis]:
    """One TaskAnalysis per task, in the order the results first mention them (one run per seed)."""
    results, _ = latest_per_seed(results)
    reference = reference or next((r.run.analysis.get("reference") for r in results
                                   if (r.run.analysis or {}).get("reference")), None)
    if specs is None:
        specs = next((list(r.run.analysis.get("targets") or []) for r in results
                      if (r.run.analysis or {}).get("targets")), [])
    tasks = list(dict.fromkeys(r.run.task for r in results))
    return [analyze_task(t, [r for r in results if r.run.task == t], reference, specs, ema) for t in tasks]
