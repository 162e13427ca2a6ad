"""Verdicts: the smallest effect of interest of each quantity, and how an interval becomes a verdict.

    python -c "from disha_bench.analysis import verdicts; print(verdicts.DEFAULT_MARGINS)"

One standard for every verdict of a report (findings, markers, the paper's claims):

- **better / worse**: the family-adjusted interval of the paired difference excludes "no difference"
  *and* the estimate lies beyond the quantity's margin (for a cost, beyond the larger of the margin
  and the cost's measured repeatability).
- **matches**: the whole adjusted interval lies inside ±margin (two one-sided tests, each at the
  adjusted level: stricter than the usual 90% TOST interval).
- **not resolved**: anything else. Absence of a difference is never "equal".

Margins (suite key `analysis.margins`, every one overridable; defaults below): held-out loss 0.01;
other metrics (MCC, correlations, losses) 0.01; proportions (accuracy, exact match, pass@k) the
larger of 1 percentage point and one example of the evaluation set; memory, throughput, time and
steps/tokens to target 3% (ratios: outside [1/1.03, 1.03]).

Costs are known per run only within their repeatability (disha_bench.analysis.costs) and compared as
such intervals; a cost verdict also stands only if moving any one run's reading by its repeatability
leaves it unchanged (compare.require_stable_costs), else it is "not resolved" and says why.

Single cost readings (results before the cost phase of schema v3) have a repeatability measured by
re-running one run (issue 21: `gsm8k-lora-s0` re-run with bit-identical losses moved its peak memory
by 3.4% and its tokens/s by 14%); that is the repeatability used for them, and said.
"""

from __future__ import annotations

import math
from typing import Any

from disha_bench.analysis import stats

DEFAULT_MARGINS: dict[str, float] = {
    "heldout_loss": 0.01, "metric": 0.01, "proportion": 0.01,
    "memory": 0.03, "speed": 0.03, "time": 0.03, "steps": 0.03,
}
"""Smallest effect of interest per kind of quantity (ratios: relative). Suite: `analysis.margins`."""

SINGLE_READING_REPEATABILITY = {"peak_mb": 0.034, "tokens_per_s": 0.14, "train_time_s": 0.14}
"""Relative change of one run's single cost reading when re-run on the same machine (issue 21)."""

POWER = 0.8
"""Power at which the minimum detectable effect is stated."""
PRIOR_SPREAD = {"heldout_final": 0.025, "steps_to_target:0": 0.08}
"""Prior per-seed spread of the paired difference, for `plan` before any run exists: held-out loss
0.025 (the largest in the committed CPU reports: 0.024, Bone - LoRA on SST-2), log ratio of steps to
target 0.08 (the largest issue 21 measured, 0.03-0.08)."""

BETTER, WORSE, MATCHES, UNRESOLVED = "better", "worse", "matches", "not resolved"


def margin_kind(key: str, metric_is_count: bool = False) -> str | None:
    """Which margin applies to an endpoint key (None: not compared)."""
    if key in ("heldout_final", "train_loss_final"):
        return "heldout_loss"
    if key.startswith("metric:"):
        return "proportion" if metric_is_count else "metric"
    return {"peak_mb": "memory", "tokens_per_s": "speed", "train_time_s": "time"}.get(key) or (
        "time" if key.startswith(("time_to_target", "wallclock_to_target")) else
        "steps" if key.startswith(("steps_to_target", "tokens_to_target")) else None)


def margins_from(results: list[Any]) -> dict[str, float]:
    """The suite's margins as its runs recorded them (`run.analysis.margins`) over the defaults."""
    margins = dict(DEFAULT_MARGINS)
    for r in results:
        recorded = (getattr(r.run, "analysis", None) or {}).get("margins") or {}
        margins.update({k: float(v) for k, v in recorded.items() if k in margins and v is not None})
    return margins


def margin_of(kind: str | None, margins: dict[str, float], n_examples: int | None = None) -> float | None:
    """The margin of one quantity; a proportion's is at least one example of its evaluation set."""
    if kind is None:
        return None
    value = margins.get(kind, DEFAULT_MARGINS[kind])
    if kind == "proportion" and n_examples:
        value = max(value, 1.0 / n_examples)
    return value


def decide(c: stats.Paired, margin: float | None, better: str | None) -> str:
    """better / worse / matches / not resolved from the adjusted interval (see the module's rules)."""
    if c.adj_low is None or c.adj_high is None or c.estimate is None or margin is None or better is None:
        return UNRESOLVED
    if c.ratio:
        low, high = (math.log(x) if x > 0 else -math.inf for x in (c.adj_low, c.adj_high))
        estimate, bound = math.log(c.estimate), math.log1p(margin)
    else:
        low, high, estimate, bound = c.adj_low, c.adj_high, c.estimate, margin
    if (low > 0 and estimate > bound) or (high < 0 and estimate < -bound):
        return BETTER if (estimate > 0) == (better == "high") else WORSE
    if -bound <= low and high <= bound:
        return MATCHES
    return UNRESOLVED


def verdict_text(c: stats.Paired) -> str:
    """The verdict as tables print it (a cost verdict one re-reading would flip says so)."""
    if c.verdict is None:
        return ""
    return c.verdict + (" (one run re-read within its repeatability flips it)" if c.extra.get("unstable") else "")


def minimum_detectable(spread: float, n_seeds: int, family_size: int) -> float | None:
    """Smallest true paired difference (in the units of `spread`, the per-seed difference's standard
    deviation) that a paired t test over `n_seeds` at Holm's first level alpha/family_size detects
    with probability POWER: (t_{1-alpha/2m, n-1} + t_{power, n-1}) spread / sqrt(n)."""
    if n_seeds < 2 or not math.isfinite(spread):
        return None
    from scipy import stats as scipy_stats

    df = n_seeds - 1
    level = stats.ALPHA / max(1, family_size)
    return float((scipy_stats.t.ppf(1 - level / 2, df) + scipy_stats.t.ppf(POWER, df)) * spread / math.sqrt(n_seeds))


def minimum_detectable_from_draws(draws: list[float], family_size: int) -> float | None:
    """The same for a seeds x examples comparison: (z_{1-alpha/2m} + z_power) times the standard
    error its bootstrap draws give (a normal approximation; the draws' interval decides the verdict)."""
    if len(draws) < 2:
        return None
    from statistics import NormalDist, stdev

    z = NormalDist().inv_cdf
    level = stats.ALPHA / max(1, family_size)
    return (z(1 - level / 2) + z(POWER)) * stdev(draws)


def prior_lines(n_seeds: int, family_size: int) -> list[str]:
    """What `plan` says before any run: minimum detectable effects from the stated prior spreads."""
    if n_seeds < 2:
        return [f"Minimum detectable effect: none with {n_seeds} seed (a paired comparison needs 2 or more)."]
    loss = minimum_detectable(PRIOR_SPREAD["heldout_final"], n_seeds, family_size)
    steps = minimum_detectable(PRIOR_SPREAD["steps_to_target:0"], n_seeds, family_size)
    if loss is None or steps is None:
        raise ValueError(f"prior spreads {PRIOR_SPREAD} must be finite")  # n_seeds >= 2 here
    return [f"Minimum detectable effect with {n_seeds} seeds ({POWER:.0%} power, Holm's first level over "
            f"{family_size} primary comparisons): held-out loss {loss:.3g}, steps to target {math.exp(-steps):.2f}x "
            f"of the reference; from prior per-seed spreads {PRIOR_SPREAD['heldout_final']:g} (loss) and "
            f"{PRIOR_SPREAD['steps_to_target:0']:g} (log steps), the largest seen on the committed CPU suites. "
            f"Margins: held-out loss {DEFAULT_MARGINS['heldout_loss']:g}, ratios {DEFAULT_MARGINS['steps']:.0%}."]
