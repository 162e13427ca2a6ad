"""Convergence metrics of one loss curve, relative targets resolved across runs, divergence test.

    python -c "from disha_bench.convergence import summarize; print(summarize([{'step': 1, 'loss': 2.0, 'tokens': 8}], [1.0], 0.9))"

Definitions (also written into every summary under `definitions`, so a result file explains itself):

- Smoothing: bias-corrected exponential moving average with factor beta (the suite's
  `convergence.ema`): m_0 = 0, m_t = beta*m_{t-1} + (1-beta)*loss_t, smoothed_t = m_t / (1-beta^t).
  The correction makes smoothed_1 = loss_1 instead of dragging the start towards 0 (as TensorBoard
  and Adam do). Time constant about 1/(1-beta) steps (10 for 0.9); beta=0 means no smoothing.
- Steps to target: the first optimizer step whose smoothed loss is <= target; tokens to target are
  the tokens of steps 1..that step. The EMA lags the raw curve by a few steps, equally for every
  method, so comparisons between methods stay fair. None = not reached within the budget.
- Loss at budget: smoothed loss at step ceil(f * budget) for f in 25/50/100%; budget is the planned
  max_steps (a run that stopped early has None for the fractions it did not reach).
- Curve area: mean smoothed loss over all logged steps divided by the loss of step 1 (which is the
  loss of the unadapted model, as adapters start at zero): 1.0 = no progress, smaller = faster
  and deeper descent. Unitless, so seeds whose first batch differs stay comparable.
- Grad norm at start: grad norm of step 1 and the mean over the first k steps (k=5), the quantity
  behind the DiSHA paper's "much larger initial gradient" argument.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from disha_bench.errors import UserError

GRAD_NORM_FIRST_K = 5
BUDGET_FRACTIONS = (0.25, 0.5, 1.0)
WORST = "*"
"""Label in a relative target meaning "the method with the highest value": `final:*` is a loss level
every method reached on average, the default target when a suite names none."""


def _get(obj: Any, name: str, default: Any = None) -> Any:
    # Steps come as StepLog dataclasses (runner) or plain dicts (result files, tests).
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def smooth(values: Sequence[float], beta: float) -> list[float]:
    """Bias-corrected EMA of `values` (see the module docstring); NaN/inf propagate."""
    if not 0 <= beta < 1:
        raise ValueError(f"ema factor must be in [0, 1), got {beta}")
    out, m = [], 0.0
    for t, x in enumerate(values, start=1):
        m = beta * m + (1 - beta) * float(x)
        out.append(m / (1 - beta**t))
    return out


def is_diverged(loss: float, first_loss: float, factor: float) -> bool:
    """True when the loss is NaN/inf or above `factor` times the first step's loss."""
    loss = float(loss)
    if not math.isfinite(loss):
        return True
    return math.isfinite(first_loss) and first_loss > 0 and loss > factor * first_loss


def summarize(steps: Sequence[Any], targets: Iterable[float | str | None] = (), ema: float = 0.9,
              budget: int | None = None, first_k: int = GRAD_NORM_FIRST_K) -> dict[str, Any]:
    """Convergence summary of one run's step log (StepLog objects or dicts with step/loss/tokens/grad_norm).

    `targets` are absolute losses; relative specs ("final:lora") are recorded as unresolved (they
    need other runs: resolve with `resolve_targets` and call again). `budget` is the planned number
    of steps (default: the last logged step).
    """
    targets = list(targets)
    rows = sorted(steps, key=lambda s: _get(s, "step"))
    base = {
        "definitions": {
            "ema": {"beta": ema, "bias_corrected": True, "time_constant_steps": 1 / (1 - ema)},
            "curve_area": "mean smoothed loss over logged steps / loss of step 1",
            "steps_to_target": "first step with smoothed loss <= target",
            "grad_norm_first_k": first_k,
        },
        "target_specs": [t for t in targets],
    }
    if not rows:
        return {**base, "n_steps": 0, "steps": [], "smoothed_loss": [], "first_loss": None, "final_loss": None,
                "final_loss_raw": None, "min_loss": None, "curve_area": None, "grad_norm_first": None,
                "grad_norm_start_mean": None, "loss_at_budget": {}, "targets": [_target_entry(t, None, None) for t in targets]}
    step_ids = [int(_get(s, "step")) for s in rows]
    raw = [float(_get(s, "loss")) for s in rows]
    curve = smooth(raw, ema)
    cumulative_tokens, total = [], 0
    for s in rows:
        total += int(_get(s, "tokens", 0) or 0)
        cumulative_tokens.append(total)
    budget = int(budget) if budget else step_ids[-1]
    by_step = dict(zip(step_ids, curve))
    loss_at_budget = {f"{int(f * 100)}%": _finite_or_none(by_step.get(max(1, math.ceil(f * budget))))
                      for f in BUDGET_FRACTIONS}
    first = raw[0]
    finite_smooth = [v for v in curve if math.isfinite(v)]
    area = (sum(curve) / len(curve) / first) if math.isfinite(first) and first > 0 and len(finite_smooth) == len(curve) else None
    grads = [float(g) for g in (_get(s, "grad_norm") for s in rows[:first_k]) if g is not None]
    grad_first = _get(rows[0], "grad_norm")

    entries = []
    for spec in targets:
        if isinstance(spec, str) or spec is None:
            entries.append(_target_entry(spec, None, None))
            continue
        hit = next((i for i, v in enumerate(curve) if v <= float(spec)), None)
        entries.append(_target_entry(float(spec), None if hit is None else step_ids[hit],
                                     None if hit is None else cumulative_tokens[hit]))
    return {
        **base,
        "n_steps": len(rows),
        "budget_steps": budget,
        "steps": step_ids,
        "smoothed_loss": curve,
        "first_loss": first,
        "final_loss": _finite_or_none(curve[-1]),
        "final_loss_raw": _finite_or_none(raw[-1]),
        "min_loss": min(finite_smooth) if finite_smooth else None,
        "curve_area": area,
        "grad_norm_first": None if grad_first is None else float(grad_first),
        "grad_norm_start_mean": sum(grads) / len(grads) if grads else None,
        "loss_at_budget": loss_at_budget,
        "targets": entries,
    }


def _target_entry(spec: Any, step: int | None, tokens: int | None) -> dict[str, Any]:
    if isinstance(spec, str) or spec is None:
        return {"spec": spec, "target": None, "step": None, "tokens": None,
                "note": "relative target: resolved across runs by `disha-bench report`"}
    return {"spec": spec, "target": spec, "step": step, "tokens": tokens}


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
# Relative targets


def parse_target(spec: float | str, file: str | None = None, key: str | None = "convergence.targets") -> tuple[str, str | float]:
    """("abs", value) or (kind, label) with kind `final` or `min`; UserError on anything else."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return "abs", float(spec)
    text = str(spec).strip()
    kind, sep, label = text.partition(":")
    if sep and kind in ("final", "min") and label:
        return kind, label
    try:
        return "abs", float(text)
    except ValueError:
        raise UserError(f"target {spec!r}: expected a loss (0.5), 'final:<method label>', 'min:<method label>' "
                        f"or 'final:{WORST}'", file=file, key=key) from None


def check_targets(targets: Iterable[float | str], labels: Iterable[str], file: str | None = None) -> None:
    """Validate target specs against the suite's method labels (call when validating a suite)."""
    from disha_bench.errors import did_you_mean

    labels = list(labels)
    for i, spec in enumerate(targets):
        kind, label = parse_target(spec, file, f"convergence.targets[{i}]")
        if kind != "abs" and label != WORST and label not in labels:
            raise UserError(f"no method labelled '{label}'; {did_you_mean(str(label), labels)}",
                            file=file, key=f"convergence.targets[{i}]")


def resolve_targets(targets: Iterable[float | str], results_for_task: Sequence[Any], ema: float = 0.9) -> list[float | None]:
    """Absolute loss values for `targets` on one task.

    `final:<label>` = mean over that method's complete runs of the final smoothed loss;
    `min:<label>` = mean of the minimum smoothed loss; label `*` takes the highest such mean over all
    methods (a level every method reached on average). None when the label has no complete run.
    `results_for_task` are RunResult objects or their dicts.
    """
    per_label: dict[str, dict[str, list[float]]] = {}
    for r in results_for_task:
        run = _get(r, "run")
        training = _get(r, "training")
        if _get(run, "status") != "complete" or not training or not _get(training, "steps"):
            continue
        curve = smooth([float(_get(s, "loss")) for s in _get(training, "steps")], ema)
        entry = per_label.setdefault(_get(run, "method"), {"final": [], "min": []})
        if all(math.isfinite(v) for v in curve):
            entry["final"].append(curve[-1])
            entry["min"].append(min(curve))
    resolved = []
    for spec in targets:
        kind, value = parse_target(spec)
        if kind == "abs":
            resolved.append(value)
            continue
        means = {label: sum(v[kind]) / len(v[kind]) for label, v in per_label.items() if v[kind]}
        if value == WORST:
            resolved.append(max(means.values()) if means else None)
        else:
            resolved.append(means.get(value))
    return resolved
