"""Aggregation over seeds: mean, sample std and a 95% Student-t interval of the mean.

    python -c "from disha_bench.stats import aggregate; print(aggregate([1.0, 2.0, 4.0]))"

PEFT's own benchmark shows one seed; we show every figure as mean +- std over seeds with the 95%
confidence interval of the mean, and only call one method better than another when those intervals
do not overlap (`separated`). Non-overlap of two 95% intervals is a conservative test (stricter than
a two-sample t-test at 5%), which is what we want before printing a claim.
"""

from __future__ import annotations

import math
from typing import Any, Iterable


CONFIDENCE = 0.95


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


def aggregate(values: Iterable[Any], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """{mean, std, n, ci_low, ci_high} of the finite values.

    std is the sample standard deviation (ddof=1); the interval is mean +- t_{(1+c)/2, n-1} * std/sqrt(n).
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
    half = float(_t_distribution().t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def separated(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True only when both aggregates have an interval and the two intervals do not overlap."""
    if a.get("ci_low") is None or b.get("ci_low") is None:
        return False
    return a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"]


def _t_distribution():
    # scipy is imported on first use: the CLI imports this module for every subcommand.
    from scipy import stats as scipy_stats

    return scipy_stats
