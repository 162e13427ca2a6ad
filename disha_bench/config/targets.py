"""Convergence targets as a suite writes them: parsing and validation against the suite's methods.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple

from disha_bench.core.errors import UserError

DEFAULT_EMA = 0.9
"""EMA factor of the smoothed loss curve when a suite or `report --ema` names none (time constant 10 steps)."""


WORST = "*"
"""Label in a relative target meaning "the method with the highest value": `final:*` is a loss level
every method reached on average, the default target when a suite names none."""


class Target(NamedTuple):
    kind: str
    """`abs`, `final`, `min` or `frac`."""
    label: str | None
    """Method label of a relative target (None for `abs`)."""
    value: float | None
    """The loss of an `abs` target, the fraction of a `frac` target, else None."""


_SYNTAX = f"expected a loss (0.5), 'final:<method label>', 'min:<method label>', 'frac:<0..1>:<method label>' or 'final:{WORST}'"


def parse_target(spec: float | str, file: str | None = None, key: str | None = "convergence.targets") -> Target:
    """The parsed target spec; UserError (naming file and key) on anything else."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Target("abs", None, float(spec))
    text = str(spec).strip()
    parts = text.split(":")
    if len(parts) == 2 and parts[0] in ("final", "min") and parts[1]:
        return Target(parts[0], parts[1], None)
    if len(parts) == 3 and parts[0] == "frac" and parts[2]:
        try:
            fraction = float(parts[1])
        except ValueError:
            fraction = math.nan
        if not 0 < fraction <= 1:
            raise UserError(f"target {spec!r}: the fraction must be a number in (0, 1], e.g. frac:0.5:{parts[2]}",
                            file=file, key=key)
        return Target("frac", parts[2], fraction)
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"target {spec!r}: {_SYNTAX}", file=file, key=key) from None
    if not math.isfinite(value):
        raise UserError(f"target {spec!r}: {_SYNTAX}", file=file, key=key)
    return Target("abs", None, value)


def check_targets(targets: Iterable[float | str], labels: Iterable[str], file: str | None = None) -> None:
    """Validate target specs against the suite's method labels (called by `validate`)."""
    from disha_bench.core.errors import did_you_mean

    labels = list(labels)
    for i, spec in enumerate(targets):
        target = parse_target(spec, file, f"convergence.targets[{i}]")
        if target.label is not None and target.label != WORST and target.label not in labels:
            raise UserError(f"no method labelled '{target.label}'; {did_you_mean(str(target.label), labels)}",
                            file=file, key=f"convergence.targets[{i}]")
