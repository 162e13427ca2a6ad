"""What a metric means, declared by whoever produces it: direction, range, and whether it is a count.

    python -c "from disha_bench.tasks import get; print(get('cola').metrics)"

Tasks declare the metrics their `score` can report (`Task.metrics`), the lm-eval backend declares
what lm-eval reports, and each result records the declarations of the metrics it holds
(`RunResult.evaluation["metric_declarations"]`), so analysis reads a metric's meaning from the result
instead of guessing it from the name. The figures analysis derives from a run itself (held-out
loss, memory, speed, time) are declared once here, in `MEASURES`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    """The declaration of one metric: enough for analysis to rank, bound and resample it."""

    name: str
    """The key the metric has in a result's `evaluation` (e.g. `accuracy`, `pass@1`)."""
    higher_is_better: bool
    """Whether a larger value is a better model (accuracy) or a worse one (a loss)."""
    lower: float = -math.inf
    """Smallest value the metric can take; intervals are clipped to [lower, upper]."""
    upper: float = math.inf
    """Largest value the metric can take."""
    is_count: bool = False
    """A proportion of examples (k of n scored 1), resamplable per example: its interval also carries
    the evaluation set's sampling error (accuracy, exact match, pass@k; not F1 or a correlation)."""
    help: str = ""
    """One line on what the metric measures, for people reading a result file."""

    def __post_init__(self) -> None:
        if not self.lower < self.upper:
            raise ValueError(f"metric {self.name!r}: lower bound {self.lower} is not below upper bound {self.upper}")
        if self.is_count and (self.lower, self.upper) != (0.0, 1.0):
            raise ValueError(f"metric {self.name!r}: a count (share of examples) lies in [0, 1]")

    @property
    def domain(self) -> tuple[float, float]:
        """(lower, upper): where the metric's values, and so its intervals, can lie."""
        return self.lower, self.upper

    @property
    def is_proportion(self) -> bool:
        """Bounded by [0, 1] (accuracy, F1, pass@k): shown in percent."""
        return self.domain == (0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: an infinite bound is written as null (JSON has no infinity)."""
        data = asdict(self)
        for bound in ("lower", "upper"):
            data[bound] = None if math.isinf(data[bound]) else data[bound]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Metric":
        """The inverse of `to_dict`; ValueError (or TypeError) when `data` is not a declaration."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) \
                or not isinstance(data.get("higher_is_better"), bool):
            raise ValueError(f"not a metric declaration (needs a string `name` and a boolean `higher_is_better`): {data!r}")
        lower, upper = data.get("lower"), data.get("upper")
        return cls(name=data["name"], higher_is_better=data["higher_is_better"],
                   lower=-math.inf if lower is None else float(lower), upper=math.inf if upper is None else float(upper),
                   is_count=bool(data.get("is_count", False)), help=str(data.get("help", "")))


def share_of_examples(name: str, help: str) -> Metric:
    """A higher-is-better proportion of examples scored correct (accuracy, exact match, pass@1)."""
    return Metric(name, higher_is_better=True, lower=0.0, upper=1.0, is_count=True, help=help)


def bounded_score(name: str, help: str, lower: float = 0.0, upper: float = 1.0) -> Metric:
    """A higher-is-better corpus-level score that is not a count (F1 in [0, 1], a correlation in [-1, 1])."""
    return Metric(name, higher_is_better=True, lower=lower, upper=upper, help=help)


def by_name(declarations: tuple[Metric, ...] | list[Metric]) -> dict[str, Metric]:
    """{name: declaration}; ValueError when a name is declared twice."""
    out: dict[str, Metric] = {}
    for metric in declarations:
        if metric.name in out:
            raise ValueError(f"metric {metric.name!r} is declared twice")
        out[metric.name] = metric
    return out


DECLARATIONS_KEY = "metric_declarations"
"""Key of a result's `evaluation` holding the declarations of the metrics it reports (schema v4)."""


def declare(evaluation: dict[str, Any], declarations: dict[str, Metric]) -> dict[str, Any]:
    """`evaluation` with the declarations of the metrics it reports, for the result file."""
    return {**evaluation, DECLARATIONS_KEY: {name: metric.to_dict() for name, metric in declarations.items()}}


def recorded_declarations(evaluation: dict[str, Any]) -> dict[str, Metric] | None:
    """The declarations a result recorded (v4), or None when it recorded none (v2, v3).
    ValueError naming the metric when one is not a declaration."""
    stored = evaluation.get(DECLARATIONS_KEY)
    if stored is None:
        return None
    if not isinstance(stored, dict):
        raise ValueError(f"`{DECLARATIONS_KEY}` is not an object")
    out = {}
    for name, data in stored.items():
        try:
            out[name] = Metric.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"metric '{name}': {err}") from None
    return out


MEASURES: dict[str, Metric] = by_name([
    Metric("heldout_final", False, lower=0.0, upper=math.inf, help="held-out loss at the end of training (the budget)"),
    Metric("heldout_start", False, lower=0.0, upper=math.inf, help="held-out loss of the unadapted model (step 0)"),
    Metric("train_loss_final", False, lower=0.0, upper=math.inf, help="training loss at the budget, smoothed (EMA)"),
    Metric("peak_mb", False, lower=0.0, upper=math.inf, help="absolute peak memory of the run, MB, maximum over ranks"),
    Metric("tokens_per_s", True, lower=0.0, upper=math.inf, help="training tokens per second, all ranks together"),
    Metric("train_time_s", False, lower=0.0, upper=math.inf, help="seconds of training, held-out evaluation excluded"),
    Metric("params", False, lower=0.0, upper=math.inf, help="trainable parameters (reported, never ranked)"),
])
"""The figures analysis derives from a run's own record rather than from a task's `score`."""
