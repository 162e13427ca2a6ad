"""Seed statistics: intervals of means, paired differences against a reference, Holm, Wilson.

    python -c "from disha_bench.analysis import stats; print(stats.paired({0: 1.0, 1: 2.0, 2: 1.5}, {0: 1.2, 1: 2.3, 2: 1.6}))"

Rules the report and the check rely on (tests/test_stats.py checks each on constructed data):

- A mean over seeds gets a 95% Student-t interval, clipped to the quantity's domain (an accuracy
  interval never leaves [0, 1], a loss never goes below 0).
- Two methods are compared **paired by seed** (same data order, same evaluation set): the per-seed
  differences method - reference, their mean with a 95% t interval and a two-sided one-sample t
  test. Memory, throughput and time are compared as ratios, through the logs: the geometric mean
  ratio with the exponentiated interval.
- Only a declared family of endpoints gets a verdict, after Holm's step-down correction over that
  family (familywise error <= 5%); each gets an *adjusted interval* at level 1 - alpha p / p_Holm
  (Bonferroni's for the smallest p), which excludes "no difference" exactly when p_Holm < alpha, so a
  verdict can be read off the interval beside it (`apply_holm`). Everything else gets its interval only.
- Identical differences in every seed have no spread to test against: their p-value is the exact
  sign test's, 2^(1-n) (never 0), and their interval is the point where that test rejects, else
  unbounded (clipped to the domain of a bounded difference).
- Values known only up to an interval (steps to a target between two held-out points) are compared
  as interval-censored (`paired_censored`): the test is run at both extremes the intervals allow and
  the weaker result counts; the interval is the hull of both.
- A non-significant difference is never called "equal": the interval of the difference is shown.
- Proportions pooled over seeds (k correct of n examples x seeds) get a Wilson score interval,
  which stays inside [0, 1] and is not degenerate at 0/n (0/48 -> [0, 0.074]).
- When runs store per-example scores (schema v3), a difference is estimated from same-example
  differences (McNemar-style pairing: only examples the two methods score differently move it), with
  a two-way bootstrap over seeds and examples (`paired_examples`): crossed when every seed scored the
  same examples, nested when each seed drew its own. This replaces the rule below for such results.
- A difference of two such proportions measured on one evaluation set of n examples also carries
  that set's sampling error, which seeds cannot show (every seed scores the same examples: two
  methods at 0/16 in every seed differ by exactly 0 across seeds). Its interval is the hull of the
  paired one and Newcombe's score interval for two proportions out of n, its p-value the larger of
  the paired test's and the two-proportion score test's (`with_sampling_error`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

CONFIDENCE = 0.95
ALPHA = 0.05
UNBOUNDED = (-math.inf, math.inf)


def finite(values: Iterable[Any]) -> list[float]:
    """The values that are real finite numbers (None, NaN and inf dropped)."""
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def clip(low: float | None, high: float | None, domain: tuple[float, float] = UNBOUNDED) -> tuple[float | None, float | None]:
    """An interval cut to the domain of its quantity (None stays None)."""
    lo, hi = domain
    return (None if low is None else min(max(low, lo), hi), None if high is None else min(max(high, lo), hi))


def _t_quantile(confidence: float, df: int) -> float:
    from scipy import stats as scipy_stats  # imported on first use: the CLI imports this module

    return float(scipy_stats.t.ppf((1 + confidence) / 2, df))


def _t_pvalue(t: float, df: int) -> float:
    from scipy import stats as scipy_stats

    return float(2 * scipy_stats.t.sf(abs(t), df))


def aggregate(values: Iterable[Any], confidence: float = CONFIDENCE,
              domain: tuple[float, float] = UNBOUNDED) -> dict[str, Any]:
    """{mean, std, n, ci_low, ci_high} of the finite values; the interval clipped to `domain`.

    std is the sample standard deviation (ddof=1); the interval is mean +- t_{(1+c)/2, n-1} std/sqrt(n).
    n=0: everything None; n=1: mean only (one seed has no spread, so no interval is claimed).
    """
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "ci_low": None, "ci_high": None}
    mean = math.fsum(xs) / n
    if n == 1:
        return {"mean": mean, "std": None, "n": 1, "ci_low": None, "ci_high": None}
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = _t_quantile(confidence, n - 1) * std / math.sqrt(n)
    low, high = clip(mean - half, mean + half, domain)
    return {"mean": mean, "std": std, "n": n, "ci_low": low, "ci_high": high}


@dataclass
class Paired:
    """Paired comparison of a method with the reference over the seeds both have."""

    seeds: list[int]
    """Seeds present (with a finite, and for ratios positive, value) on both sides."""
    per_seed: list[float]
    """Per-seed difference (method - reference) or ratio (method / reference), by seed."""
    estimate: float | None
    """Mean difference, or geometric mean ratio when `ratio`."""
    ci_low: float | None
    """Lower end of the 95% interval of `estimate` (clipped to the domain of a difference)."""
    ci_high: float | None
    """Upper end of that interval."""
    p_value: float | None
    """Two-sided paired t test of no difference (ratio: log ratio 0); None below 2 seeds."""
    ratio: bool = False
    """True when compared as ratios through logs (memory, throughput, time)."""
    p_holm: float | None = None
    """Holm-adjusted p-value within the declared family; None when not in a family."""
    significant: bool = False
    """p_holm < ALPHA: the only comparisons that get a marker."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free annotations (e.g. why a comparison could not be made); `configs`: the per-seed differences
    (logs for ratios) the intervals are computed from, one list per configuration."""
    adj_low: float | None = None
    """Lower end of the family-adjusted interval (`apply_holm`); None outside a family."""
    adj_high: float | None = None
    """Upper end of the family-adjusted interval."""
    margin: float | None = None
    """Smallest effect of interest it is decided with (ratios: relative); None when not decided."""
    verdict: str | None = None
    """better / worse / matches / not resolved (disha_bench.analysis.verdicts); None: not decided."""

    @property
    def n(self) -> int:
        return len(self.seeds)


def _t_test(diffs: list[float], confidence: float) -> tuple[float, float | None, float | None, float | None]:
    """(mean, low, high, p) of a one-sample t test of mean 0 (see the zero-spread rule above)."""
    n = len(diffs)
    mean = math.fsum(diffs) / n
    if n < 2:
        return mean, None, None, None
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:  # identical differences: nothing to test against, so the sign test (never p = 0)
        p = 1.0 if mean == 0 else min(1.0, 2.0 ** (1 - n))
        return (mean, mean, mean, p) if p < 1 - confidence else (mean, -math.inf, math.inf, p)
    half = _t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half, _t_pvalue(mean / (sd / math.sqrt(n)), n - 1)


def _test_configs(configs: list[list[float]], confidence: float) -> tuple[float | None, float | None, float | None]:
    """(low, high, p) over the configurations of one comparison: the hull of the intervals and the
    largest p (1 when the configurations disagree on the direction)."""
    tests = [_t_test(d, confidence) for d in configs]
    lows = [t[1] for t in tests if t[1] is not None]
    highs = [t[2] for t in tests if t[2] is not None]
    ps = [t[3] for t in tests if t[3] is not None]
    p = max(ps) if len(ps) == len(tests) else None
    if p is not None and len({math.copysign(1, t[0]) if t[0] else 0 for t in tests}) > 1:
        p = 1.0
    if len(lows) < len(tests) or len(highs) < len(tests):
        return None, None, p
    return min(lows), max(highs), p


BOOTSTRAP_REPLICATES = 4000


def paired_examples(reference: Mapping[int, Mapping[str, float]], method: Mapping[int, Mapping[str, float]],
                    confidence: float = CONFIDENCE, replicates: int = BOOTSTRAP_REPLICATES) -> Paired:
    """`method` - `reference` from per-example scores ({seed: {example id: score}}), paired by seed
    and by example; interval and p from a two-way bootstrap (seeds, and examples: one draw of example
    ids shared by every seed when all seeds scored the same ids, else drawn within each seed). The
    bootstrap's generator is seeded, so a report is reproducible; p is never below 2/(replicates+1)."""
    seeds = [s for s in sorted(set(reference) & set(method))]
    diffs = {s: {i: float(method[s][i]) - float(reference[s][i]) for i in sorted(set(reference[s]) & set(method[s]))}
             for s in seeds}
    seeds = [s for s in seeds if diffs[s]]
    if not seeds:
        return Paired([], [], None, None, None, None, False)
    per_seed = [math.fsum(diffs[s].values()) / len(diffs[s]) for s in seeds]
    estimate = math.fsum(per_seed) / len(seeds)
    c = Paired(seeds, per_seed, estimate, None, None, None, False)
    if len(seeds) >= 2:
        import numpy as np

        rng = np.random.default_rng(12345)
        crossed = len({tuple(diffs[s]) for s in seeds}) == 1
        draws = []
        for _ in range(0, replicates, 200):  # in blocks: seeds x examples x replicates stays small
            chosen = rng.integers(0, len(seeds), size=(200, len(seeds)))
            if crossed:
                grid = np.array([list(diffs[s].values()) for s in seeds])
                sample = rng.integers(0, grid.shape[1], size=(200, grid.shape[1]))
                draws += [float(grid[row][:, cols].mean()) for row, cols in zip(chosen, sample)]
            else:
                own = [np.array(list(diffs[s].values())) for s in seeds]
                draws += [float(np.mean([own[k][rng.integers(0, len(own[k]), len(own[k]))].mean() for k in row]))
                          for row in chosen]
        draws.sort()
        c.extra["bootstrap"] = draws
        c.extra["discordant"] = {"method_only": sum(d > 0 for s in seeds for d in diffs[s].values()),
                                 "reference_only": sum(d < 0 for s in seeds for d in diffs[s].values()),
                                 "examples": sum(len(diffs[s]) for s in seeds)}
        c.ci_low, c.ci_high, c.p_value = interval_at(c, confidence)
    return c


def _bootstrap(draws: list[float], confidence: float) -> tuple[float, float, float]:
    """Percentile interval and two-sided p (never 0) of sorted bootstrap draws."""
    n = len(draws)
    tail = (1 - confidence) / 2
    low, high = draws[min(n - 1, int(math.floor(tail * n)))], draws[max(0, int(math.ceil((1 - tail) * n)) - 1)]
    below, above = sum(d <= 0 for d in draws), sum(d >= 0 for d in draws)
    return low, high, min(1.0, 2 * (min(below, above) + 1) / (n + 1))


def interval_at(c: Paired, confidence: float) -> tuple[float | None, float | None, float | None]:
    """(low, high, p) of a comparison at another confidence level, in its display units (ratios
    exponentiated, differences clipped to the domain, a proportion's sampling error included)."""
    if "bootstrap" in c.extra:
        return _bootstrap(c.extra["bootstrap"], confidence)
    configs = c.extra.get("configs")
    if not configs:
        return None, None, None
    low, high, p = _test_configs(configs, confidence)
    if "n_examples" in c.extra:  # seeds without spread: the evaluation set's sampling error alone
        p_ref, n = c.extra["p_reference"], c.extra["n_examples"]
        n_low, n_high = newcombe(p_ref, p_ref + c.estimate, n, confidence)
        low, high = (n_low, n_high) if low is None or high is None else (min(low, n_low), max(high, n_high))
        p = max(p if p is not None else 0.0, two_proportion_p(p_ref, p_ref + c.estimate, n))
    if low is None or high is None:
        return None, None, p
    if c.ratio:
        return math.exp(low), math.exp(high), p
    width = c.extra.get("width", math.inf)
    low, high = clip(low, high, (-width, width))
    return low, high, p


def _usable(reference: Mapping[int, Any], method: Mapping[int, Any], ratio: bool) -> list[tuple[int, float, float]]:
    pairs = []
    for seed in sorted(set(reference) & set(method)):
        a, b = finite([reference[seed]]), finite([method[seed]])
        if a and b and not (ratio and (a[0] <= 0 or b[0] <= 0)):
            pairs.append((seed, a[0], b[0]))
    return pairs


def _build(seeds: list[int], configs: list[list[float]], ratio: bool, width: float, confidence: float) -> Paired:
    n = len(seeds)
    if n == 0:
        return Paired(seeds, [], None, None, None, None, ratio)
    centre = [math.fsum(vals) / len(vals) for vals in zip(*configs)]
    mean = math.fsum(centre) / n
    shown = [math.exp(d) for d in centre] if ratio else centre
    c = Paired(seeds, shown, math.exp(mean) if ratio else mean, None, None, None, ratio,
               extra={"configs": configs, "width": width})
    c.ci_low, c.ci_high, c.p_value = interval_at(c, confidence)
    return c


def paired(reference: Mapping[int, Any], method: Mapping[int, Any], ratio: bool = False,
           domain: tuple[float, float] = UNBOUNDED, confidence: float = CONFIDENCE) -> Paired:
    """Compare `method` with `reference`, both {seed: value}, on the seeds they share.

    `domain` is the domain of the compared quantity itself (e.g. (0, 1) for an accuracy): the interval
    of a difference is clipped to [lo - hi, hi - lo]. Ratios need positive values.
    """
    pairs = _usable(reference, method, ratio)
    diffs = [math.log(b / a) if ratio else b - a for _, a, b in pairs]
    return _build([s for s, _, _ in pairs], [diffs], ratio, domain[1] - domain[0], confidence)


def paired_censored(reference: Mapping[int, tuple[float, float]], method: Mapping[int, tuple[float, float]],
                    confidence: float = CONFIDENCE) -> Paired:
    """Ratio of two positive quantities each known per seed only as an interval (low, high): the
    comparison at both extremes (method low against reference high, and the reverse); the estimate
    is the geometric mean of the per-seed mid-ratios."""
    seeds = [s for s in sorted(set(reference) & set(method)) if min(*reference[s], *method[s]) > 0]
    favourable = [math.log(method[s][0] / reference[s][1]) for s in seeds]
    unfavourable = [math.log(method[s][1] / reference[s][0]) for s in seeds]
    c = _build(seeds, [favourable, unfavourable], True, math.inf, confidence)
    c.extra["interval_censored"] = True
    return c


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (None entries are not tests and stay None).

    Sorted ascending, p_(i) is multiplied by (m - i) for i = 0..m-1, made monotone and capped at 1;
    rejecting where the adjusted value is < alpha controls the familywise error at alpha.
    """
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(tested)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def apply_holm(family: list[Paired], alpha: float = ALPHA) -> list[Paired]:
    """Fill p_holm, significant and the adjusted interval of every comparison of one declared family
    (in place).

    The family is declared up front, so a comparison that could not be tested (one seed, a censored
    time to target) still counts in its size, as p = 1: it can never be claimed and it does not
    loosen the threshold of the others. The adjusted interval is at level 1 - alpha p / p_Holm.
    """
    adjusted_all = holm([1.0 if c.p_value is None else c.p_value for c in family])
    for comparison, adjusted in zip(family, adjusted_all):
        p_value = comparison.p_value
        comparison.p_holm = None if p_value is None else adjusted
        comparison.significant = comparison.p_holm is not None and comparison.p_holm < alpha
        if p_value is not None and comparison.p_holm:
            level = alpha * p_value / comparison.p_holm
            comparison.adj_low, comparison.adj_high, _ = interval_at(comparison, 1 - level)
    return family


def wilson(k: float, n: int, confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion k/n (inside [0, 1] by construction; (None, None) for n=0).
    `k` is a count, also when given as proportion x n (a float)."""
    if n <= 0:
        return None, None
    from scipy import stats as scipy_stats

    z = float(scipy_stats.norm.ppf((1 + confidence) / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = clip(centre - half, centre + half, (0.0, 1.0))
    # Exact ends at 0/n and n/n (the closed form leaves a rounding residue there).
    return (0.0 if k == 0 else low), (1.0 if k == n else high)


def median_censored(values: list[float | None]) -> tuple[float | None, bool]:
    """(median, censored) of values where None means "beyond the budget" (never reached).

    Misses sort above every reached value; when the median falls on a miss, (largest reached value or
    None, True) is returned and the caller prints ">budget". Nothing is ever averaged in for a miss.
    """
    n = len(values)
    if n == 0:
        return None, False
    ordered = sorted(values, key=lambda v: (v is None, v if v is not None else 0.0))
    mid = ordered[(n - 1) // 2: n // 2 + 1]
    reached = [v for v in mid if v is not None]
    if len(reached) < len(mid):
        return None, True
    return math.fsum(reached) / len(reached), False


def newcombe(p_reference: float, p_method: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Newcombe's hybrid score interval of p_method - p_reference, each a proportion of n examples
    (Wilson ends combined; Newcombe 1998, method 10). Never degenerate: 0/16 vs 0/16 -> about ±0.19."""
    l1, u1 = wilson(p_reference * n, n, confidence)
    l2, u2 = wilson(p_method * n, n, confidence)
    if l1 is None or u1 is None or l2 is None or u2 is None:
        raise ValueError(f"newcombe: no examples (n={n})")
    d = p_method - p_reference
    return (max(-1.0, d - math.sqrt((p_method - l2) ** 2 + (u1 - p_reference) ** 2)),
            min(1.0, d + math.sqrt((u2 - p_method) ** 2 + (p_reference - l1) ** 2)))


def two_proportion_p(p_reference: float, p_method: float, n: int) -> float:
    """Two-sided score (pooled z) test of two proportions of n examples each; 1.0 when both are 0 or 1."""
    pooled = (p_reference + p_method) / 2
    se = math.sqrt(2 * pooled * (1 - pooled) / n)
    if se == 0:
        return 1.0
    from scipy import stats as scipy_stats

    return float(2 * scipy_stats.norm.sf(abs(p_method - p_reference) / se))


def with_sampling_error(c: Paired, reference: Mapping[int, Any], n_examples: int | None,
                        confidence: float = CONFIDENCE) -> Paired:
    """`c`, a paired difference of two proportions scored on the same `n_examples` ({seed: value} of
    the reference in `reference`), widened by the evaluation set's sampling error (see the module's
    rules); the per-seed differences are kept."""
    if c.n < 2 or c.ratio or not n_examples:  # fewer than 2 seeds: the seeds' spread is unknown
        return c
    p_reference = math.fsum(finite([reference[seed] for seed in c.seeds])) / c.n
    widened = Paired(c.seeds, c.per_seed, c.estimate, None, None, None, False,
                     extra={**c.extra, "n_examples": n_examples, "p_reference": p_reference})
    widened.ci_low, widened.ci_high, widened.p_value = interval_at(widened, confidence)
    return widened
