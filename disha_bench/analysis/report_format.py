"""Number formatting of the reports (one place, so every table follows the same rules).

    python -c "from disha_bench.analysis.report_format import mean_ci; print(mean_ci(0.8123, 0.7801, 0.8444, '%'))"

- A mean with its 95% interval: the interval's half-width to 2 significant digits and the mean
  and both ends to the same decimal place: `81.2 [78.0, 84.4]`.
- Proportions in percent (`%` unit); on tiny evaluation sets as pooled counts with a Wilson
  interval: `3/48 [1.4, 17]%`.
- Ratios with ×: `0.55× [0.41, 0.74]`.
- Memory in MB or GB to 3 significant digits: `512 MB`, `1.23 GB`.
- Steps as integers; a target missed by at least half the seeds as `>N` (N the budget).
"""

from __future__ import annotations

import math
from typing import overload

DASH = "–"


def decimals(half_width: float | None, default: int = 3) -> int:
    """Decimal places that show `half_width` to 2 significant digits."""
    if half_width is None or not math.isfinite(half_width) or half_width <= 0:
        return default
    return max(0, 1 - math.floor(math.log10(half_width)))


def sig3(x: float | None) -> str:
    """3 significant digits, no exponent for ordinary magnitudes."""
    if x is None or not math.isfinite(x):
        return DASH
    if x == 0:
        return "0"
    places = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:,.{places}f}"


@overload
def scale(x: float, unit: str) -> float: ...
@overload
def scale(x: float | None, unit: str) -> float | None: ...
def scale(x: float | None, unit: str) -> float | None:
    return None if x is None else x * 100 if unit == "%" else x


def mean_ci(mean: float | None, low: float | None, high: float | None, unit: str = "") -> str:
    """`mean [low, high]` with the precision rule above; proportions in percent."""
    if mean is None:
        return DASH
    if unit == "MB":
        if low is None or high is None:
            return memory(mean)
        div, name = (1024, "GB") if mean >= 1000 else (1, "MB")
        return f"{sig3(mean / div)} [{sig3(low / div)}, {sig3(high / div)}] {name}"
    if unit == "steps":
        return f"{mean:.0f}" + ("" if low is None or high is None else f" [{low:.0f}, {high:.0f}]")
    if unit == "params":
        return params(mean)
    m, lo, hi = scale(mean, unit), scale(low, unit), scale(high, unit)
    if lo is None or hi is None:
        return plain(mean, unit)
    if hi - lo == 0:
        return f"{plain(mean, unit)} (no spread)"  # every seed gave the same value
    d = decimals(max(hi - m, m - lo))
    return f"{m:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"


def plain(x: float | None, unit: str = "") -> str:
    """One value without interval."""
    if x is None or not math.isfinite(x):
        return DASH
    if unit == "MB":
        return memory(x)
    if unit == "params":
        return params(x)
    if unit == "steps":
        return f"{x:.0f}"
    if unit == "%":
        return f"{x * 100:.1f}"
    return sig3(x)


def memory(mb: float | None) -> str:
    if mb is None:
        return DASH
    return f"{sig3(mb / 1024)} GB" if mb >= 1000 else f"{sig3(mb)} MB"


def params(x: float | None) -> str:
    if x is None:
        return DASH
    if x >= 1e6:
        return f"{sig3(x / 1e6)}M"
    return f"{sig3(x / 1e3)}K" if x >= 1e3 else f"{x:.0f}"


RATIO_SHOWN = 100.0
"""Ratio interval ends beyond RATIO_SHOWN× (or below its inverse) are printed as `>100` / `<0.01`: with
two seeds a ratio's interval can span 1e-18..1e18, digits that say only "unknown"."""


def ratio(estimate: float | None, low: float | None = None, high: float | None = None) -> str:
    if estimate is None:
        return DASH
    if low is None or high is None:
        return f"{estimate:.2f}×"
    shown_low, shown_high = max(low, 1 / RATIO_SHOWN), min(high, RATIO_SHOWN)
    d = max(2, decimals(max(shown_high - estimate, estimate - shown_low)))
    return f"{estimate:.{d}f}× [{_ratio_end(low, d)}, {_ratio_end(high, d)}]"


def _ratio_end(x: float, places: int) -> str:
    if x > RATIO_SHOWN:
        return f">{RATIO_SHOWN:g}"
    if x < 1 / RATIO_SHOWN:
        return f"<{1 / RATIO_SHOWN:g}"
    return f"{x:.{places}f}"


def difference(estimate: float | None, low: float | None, high: float | None, unit: str = "") -> str:
    """A signed difference with its interval (percentage points for proportions)."""
    if estimate is None:
        return DASH
    e, lo, hi = scale(estimate, unit), scale(low, unit), scale(high, unit)
    suffix = " pp" if unit == "%" else ""
    if lo is None or hi is None:
        return f"{e:+.3g}{suffix}"
    d = decimals(max(hi - e, e - lo))
    return f"{e:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]{suffix}"


def counts(k: int, n: int, low: float | None, high: float | None) -> str:
    """Pooled proportion on a tiny evaluation set: `3/48 [1.4, 17]%`."""
    if low is None or high is None:
        return f"{k}/{n}"
    d = decimals((high - low) * 50)
    return f"{k}/{n} [{low * 100:.{d}f}, {high * 100:.{d}f}]%"


def censored(median: float | None, is_censored: bool, budget: float | None, unit: str) -> str:
    """Median time/steps to a target; `>budget` when at least half the seeds missed it."""
    if is_censored:
        return f">{plain(budget, unit)}" if budget is not None else "not reached"
    if median is None:
        return DASH
    return f"{median:.0f}" if unit == "steps" else sig3(median)
