"""Convergence: targets on the held-out curve (the primary figures), the training-loss summary, divergence.

    python -c "from disha_bench.analysis.convergence import crossing; print(crossing([{'step': 0, 'loss': 2.0, 'train_time_s': 0, 'tokens': 0}, {'step': 10, 'loss': 1.0, 'train_time_s': 5, 'tokens': 800}], 1.5))"

Convergence claims come from the held-out curve (`RunResult.heldout`: the same examples for every
method and seed, measured from step 0): steps (and tokens) to a target loss, known as the interval
between two measured points and compared as such (`crossing`), with runs that never reach it censored
(`censored_summary`); time to target is derived from steps and the run's median step time.
Target syntax: see "Targets on the held-out curve" below.

The training-loss summary (`summarize`, stored in every result) is secondary information: a loss
over small batches, smoothed, is too noisy to carry a convergence claim. Its definitions (also
written into every summary under `definitions`, so a result file explains itself):

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

from disha_bench.config.targets import DEFAULT_EMA, WORST, parse_target

GRAD_NORM_FIRST_K = 5
BUDGET_FRACTIONS = (0.25, 0.5, 1.0)


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


def summarize(steps: Sequence[Any], targets: Iterable[float | str | None] = (), ema: float = DEFAULT_EMA,
              budget: int | None = None, first_k: int = GRAD_NORM_FIRST_K) -> dict[str, Any]:
    """Convergence summary of one run's step log (StepLog objects or dicts with step/loss/tokens/grad_norm).

    `targets` are absolute losses; relative specs ("final:lora") are recorded as unresolved (they
    need other runs: resolve with `resolve_targets` and call again). `budget` is the planned number
    of steps (default: the last logged step).
    """
    targets = list(targets)
    rows = sorted(steps, key=lambda s: _get(s, "step"))
    base = {"definitions": _definitions(ema, first_k), "target_specs": [t for t in targets]}
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
        "targets": _reached(targets, curve, step_ids, cumulative_tokens),
    }


def _definitions(ema: float, first_k: int) -> dict[str, Any]:
    """How the summary's quantities are defined, stored with them so a result file explains itself."""
    return {
        "ema": {"beta": ema, "bias_corrected": True, "time_constant_steps": 1 / (1 - ema)},
        "curve_area": "mean smoothed loss over logged steps / loss of step 1",
        "steps_to_target": "first step with smoothed loss <= target",
        "grad_norm_first_k": first_k,
    }


def _reached(targets: list, curve: list[float], step_ids: list[int], cumulative_tokens: list[int]) -> list[dict[str, Any]]:
    """Per target: the first step (and tokens so far) whose smoothed loss is at or below it."""
    entries = []
    for spec in targets:
        if isinstance(spec, str) or spec is None:
            entries.append(_target_entry(spec, None, None))
            continue
        hit = next((i for i, v in enumerate(curve) if v <= float(spec)), None)
        entries.append(_target_entry(float(spec), None if hit is None else step_ids[hit],
                                     None if hit is None else cumulative_tokens[hit]))
    return entries


def _target_entry(spec: Any, step: int | None, tokens: int | None) -> dict[str, Any]:
    if isinstance(spec, str) or spec is None:
        return {"spec": spec, "target": None, "step": None, "tokens": None,
                "note": "relative target: resolved across runs by `disha-bench report`"}
    return {"spec": spec, "target": spec, "step": step, "tokens": tokens}


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
# Targets on the held-out curve
#
# Target specs (suite key `convergence.targets`, `--target` of report):
#   0.5              an absolute held-out loss
#   final:<label>    the mean final held-out loss of that method's runs on the task
#   min:<label>      the mean lowest held-out loss of that method's runs
#   frac:<f>:<label> f of the way (0 < f <= 1) from the step-0 held-out loss (the unadapted model,
#                    mean over the task's runs) down to final:<label>; frac:0.5:lora = halfway there
# <label> `*` means the method with the highest such loss (a level every method reached on average).


def heldout_points(result: Any) -> list[Any]:
    """The held-out curve of a result (RunResult or dict), ordered by step; [] when it has none."""
    heldout = _get(result, "heldout")
    points = _get(heldout, "points", []) if heldout else []
    return sorted(points or [], key=lambda p: _get(p, "step"))


def _trained(result: Any) -> bool:
    from disha_bench.contracts.results import TRAINED_STATUSES

    return _get(_get(result, "run"), "status") in TRAINED_STATUSES and len(heldout_points(result)) >= 2


def resolve_targets(targets: Iterable[float | str], results_for_task: Sequence[Any]) -> list[float | None]:
    """Absolute held-out losses for `targets` on one task (see the syntax above).

    Relative targets use the runs whose training record is usable (TRAINED_STATUSES) with a held-out
    curve; None when the named method has none.
    """
    trained = [r for r in results_for_task if _trained(r)]
    per_label: dict[str, dict[str, list[float]]] = {}
    for r in trained:
        losses = [float(_get(p, "loss")) for p in heldout_points(r)]
        if all(math.isfinite(v) for v in losses):
            entry = per_label.setdefault(_get(_get(r, "run"), "method"), {"final": [], "min": []})
            entry["final"].append(losses[-1])
            entry["min"].append(min(losses))
    starts = [float(_get(heldout_points(r)[0], "loss")) for r in trained]
    start = math.fsum(starts) / len(starts) if starts else None
    resolved: list[float | None] = []
    for spec in targets:
        target = parse_target(spec)
        if target.kind == "abs":
            resolved.append(target.value)
            continue
        if target.label is None or (target.kind == "frac") != (target.value is not None):
            raise ValueError(f"target {spec!r} parsed as {target}: a relative target has a label, and a fraction if frac")
        means = {label: math.fsum(v[target.kind if target.kind != "frac" else "final"]) / len(v["final"])
                 for label, v in per_label.items() if v["final"]}
        level = max(means.values(), default=None) if target.label == WORST else means.get(target.label)
        if target.value is not None and level is not None:  # frac
            level = None if start is None else start + target.value * (level - start)
        resolved.append(level)
    return resolved


def crossing(points: Sequence[Any], target: float | None) -> dict[str, Any]:
    """When a held-out curve reaches `target` (loss <= target) and stays there.

    status: `reached`, `not_reached` (censored at the budget) or `invalid` (the target is at or above
    the step-0 loss, so "reaching" it says nothing about training). Stays-below rule: the curve has
    reached the target at the first measured point at or below it whose next measured point (if any)
    is also at or below it, so a noisy curve's single dip does not count. The crossing is then only
    known to lie after the previous measured point: `step_low`..`step` (optimizer steps, integers:
    previous point + 1 up to that point) and `tokens_low`..`tokens`, compared as intervals, never
    interpolated as if exact. `time_s` is the wall-clock crossing, interpolated between the two points
    (a secondary figure: training seconds vary with the machine's load). Training time excludes
    held-out evaluation.
    """
    entry = {"target": target, "status": "not_reached", "step": None, "time_s": None, "tokens": None,
             "step_low": None, "tokens_low": None}
    if target is None or not points:
        return {**entry, "status": "unresolved"}
    rows = [(float(_get(p, "step")), float(_get(p, "loss")), float(_get(p, "train_time_s")), float(_get(p, "tokens")))
            for p in points]
    if not math.isfinite(rows[0][1]) or target >= rows[0][1]:
        return {**entry, "status": "invalid"}
    below = [math.isfinite(r[1]) and r[1] <= target for r in rows]
    for i in range(1, len(rows)):
        if below[i] and (i + 1 == len(rows) or below[i + 1]):
            before, after = rows[i - 1], rows[i]
            w = (before[1] - target) / (before[1] - after[1]) if before[1] > after[1] else 1.0
            per_step_tokens = (after[3] - before[3]) / max(1.0, after[0] - before[0])
            return {**entry, "status": "reached", "step": after[0], "step_low": before[0] + 1,
                    "tokens": after[3], "tokens_low": before[3] + per_step_tokens,
                    "time_s": before[2] + w * (after[2] - before[2])}
    return entry


def censored_summary(values: Sequence[float | None], statuses: Sequence[str], budget: float | None) -> dict[str, Any]:
    """k/n reached and the median of a time- or steps-to-target over seeds; misses are censored.

    Invalid targets are left out of n (reported apart). The median counts misses as beyond the
    budget; when it falls on a miss the text is ">budget". No made-up value is ever averaged in.
    """
    from disha_bench.analysis.stats import median_censored

    valid = [v if s == "reached" else None for v, s in zip(values, statuses) if s in ("reached", "not_reached")]
    median, censored = median_censored(valid)
    return {"reached": sum(v is not None for v in valid), "n": len(valid),
            "invalid": sum(s == "invalid" for s in statuses), "median": median, "censored": censored,
            "budget": budget}
