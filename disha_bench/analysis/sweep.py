"""The best learning rate of each method of a sweep, chosen on the held-out loss (pure).

    from disha_bench.analysis import sweep; sweep.choose(results)   # {(task, label): Choice}

Runs of a sweep carry `run.analysis.sweep` (disha_bench.config.sweep.SweepMembership). Per task and
method, each lr's selection loss is the held-out loss at the budget, mean over seeds; the best lr has
the lowest, ties going to the suite's shared lr, then to the smaller lr. The evaluation set never
decides: where a run stored per-example outputs, held-out examples that are also in its evaluation
sample (GLUE draws both from the dev split) are left out of its selection loss. An lr missing a
held-out loss in any seed (diverged, failed) cannot be chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from disha_bench.analysis import measures
from disha_bench.analysis.compare import per_example
from disha_bench.contracts.results import TRAINED_STATUSES, RunResult


@dataclass
class Choice:
    task: str
    label: str
    """The method's label in the suite (no `@lr=` suffix)."""
    shared_lr: float
    """The suite's `training.lr`."""
    losses: dict[float, float | None] = field(default_factory=dict)
    """lr -> mean selection loss over seeds (None: some seed has none)."""
    best_lr: float | None = None
    """The chosen lr (None: no lr has a loss in every seed)."""


def membership(r: RunResult) -> dict | None:
    return (r.run.analysis or {}).get("sweep")


def selection_loss(r: RunResult) -> float | None:
    """Held-out loss at the budget, over the held-out examples outside the run's evaluation sample."""
    if r.run.status not in TRAINED_STATUSES:
        return None
    scores = per_example(r).get("heldout_final")
    evaluated = set(map(str, ((r.evaluation or {}).get("per_example") or {}).get("ids") or []))
    outside = [v for k, v in (scores or {}).items() if k not in evaluated]
    if scores and evaluated and outside:
        return math.fsum(outside) / len(outside)
    return measures.heldout_final(r)


def choose(results: list[RunResult]) -> dict[tuple[str, str], Choice]:
    """(task, label) -> the Choice of every swept method."""
    losses: dict[tuple[str, str], dict[float, dict[int, float | None]]] = {}
    choices: dict[tuple[str, str], Choice] = {}
    seeds: dict[str, set[int]] = {}
    for r in results:
        sweep = membership(r)
        if not sweep:
            continue
        key = (r.run.task, sweep["label"])
        choices.setdefault(key, Choice(r.run.task, sweep["label"], float(sweep["shared_lr"])))
        losses.setdefault(key, {}).setdefault(float(sweep["lr"]), {})[r.run.seed] = selection_loss(r)
        seeds.setdefault(r.run.task, set()).add(r.run.seed)
    for key, choice in choices.items():
        for lr, by_seed in sorted(losses[key].items()):
            values = [by_seed.get(s) for s in sorted(seeds[key[0]])]
            choice.losses[lr] = None if None in values else math.fsum(values) / len(values)  # type: ignore[arg-type]
        ranked = [(loss, not math.isclose(lr, choice.shared_lr, rel_tol=1e-9), lr)
                  for lr, loss in choice.losses.items() if loss is not None]
        choice.best_lr = min(ranked)[2] if ranked else None
    return choices


def _at(r: RunResult, lr: float | None) -> bool:
    sweep = membership(r)
    return sweep is None or (lr is not None and math.isclose(float(sweep["lr"]), lr, rel_tol=1e-9))


def at_shared_lr(results: list[RunResult]) -> list[RunResult]:
    """The runs of the shared-lr comparison: unswept runs and every swept method's run at `training.lr`."""
    return [r for r in results if _at(r, float((membership(r) or {}).get("shared_lr", 0)) or None)]


def at_best_lr(results: list[RunResult], choices: dict[tuple[str, str], Choice]) -> list[RunResult]:
    """Each swept method's runs at its chosen lr, labelled as in the suite (so targets and the
    reference name them), beside the unswept runs."""
    out = []
    for r in results:
        sweep = membership(r)
        if sweep is None:
            out.append(r)
        elif _at(r, choices[(r.run.task, sweep["label"])].best_lr):
            out.append(replace(r, run=replace(r.run, method=sweep["label"])))
    return out


def section(choices: dict[tuple[str, str], Choice], at_best: list[str]) -> list[str]:
    """The report's "Learning-rate sweep" section: every lr's selection loss, the choice, and the
    comparison of each method at its best lr (`at_best`: headline, findings and claims lines)."""
    from disha_bench.analysis import report_format as fmt
    from disha_bench.analysis.report_tables import _table
    from disha_bench.config.sweep import lr_text

    lines = ["## Learning-rate sweep", "",
             "Each method's lr is chosen per task on the held-out loss at the budget, mean over seeds (held-out examples "
             "that are also in the evaluation sample left out; ties: the shared lr, then the smaller). **bold** = chosen, "
             "(shared) = the suite's `training.lr`, the lr of every table above.", ""]
    rows = []
    for (task, label), c in sorted(choices.items()):
        cells = [f"{fmt.sig3(loss) if loss is not None else 'no loss (a seed failed or diverged)'}" for loss in c.losses.values()]
        shown = [f"{'**' if lr == c.best_lr else ''}{lr_text(lr)}{' (shared)' if math.isclose(lr, c.shared_lr) else ''}: "
                 f"{cell}{'**' if lr == c.best_lr else ''}" for lr, cell in zip(c.losses, cells)]
        rows.append([task, label, lr_text(c.best_lr) if c.best_lr is not None else fmt.DASH, "; ".join(shown)])
    lines += _table(["task", "method", "best lr", "held-out loss at budget by lr (selection set)"], rows)
    lines += ["", "### Each method at its best lr", "",
              "> The lr was chosen on these same seeds' held-out loss, so the held-out-loss comparisons below are optimistic "
              "for every method alike (selection and verdict see the same training runs); the task metric is scored on "
              "evaluation examples the choice never saw.", "", *at_best]
    return lines
