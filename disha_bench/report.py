"""The markdown leaderboard: one table per task, aggregated over seeds with 95% intervals, plus plots.

    disha-bench report results/smoke                 # writes reports/smoke.md and PNGs beside it
    disha-bench report results/smoke --out reports/x.md --target 0.5 --target final:lora

Every figure is mean +- std [95% t-interval] n=<seeds> over the runs that completed; failed and
diverged runs are listed below the table, never averaged in. A claim that one method converges
faster than another is printed only when the two intervals do not overlap (disha_bench.stats).
Metrics are recomputed from each result's step log, so targets and smoothing can change without
re-running anything (definitions: disha_bench.convergence).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from disha_bench import convergence, stats
from disha_bench.errors import UserError
from disha_bench.results import COMPLETE, RunResult, load_results

DEFAULT_EMA = 0.9
DEFAULT_TARGETS = [f"final:{convergence.WORST}"]
# Evaluation metrics are higher-is-better (Task.primary_metric) except these loss-like names.
_LOWER_IS_BETTER = re.compile(r"loss|error|perplexity|ppl|wer|cer|mse|mae", re.I)
DASH = "–"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="write the markdown leaderboard of a results folder",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", help="folder of result files, e.g. results/smoke")
    p.add_argument("--out", "-o", help="markdown file to write (default: reports/<suite>.md); PNGs go beside it")
    p.add_argument("--target", action="append", dest="targets", metavar="LOSS|final:LABEL|min:LABEL",
                   help="convergence target, repeatable (default: the suite's targets, else final:*)")
    p.add_argument("--ema", type=float, help="EMA smoothing factor in [0, 1) (default: the suite's, else 0.9)")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    path = write_report(args.results_dir, args.out, shlex.join(["disha-bench", *sys.argv[1:]]), args.targets, args.ema)
    print(f"wrote {path}")
    return 0


def load_checked(results_dir: str | Path) -> list[RunResult]:
    """The readable results of a folder; UserError when there is none to work with."""
    path = Path(results_dir)
    if not path.is_dir():
        raise UserError("results folder not found" if not path.exists() else "not a folder", file=str(path))
    files = list(path.glob("*.json"))
    if not files:
        raise UserError("no result files (*.json) here; run `disha-bench run SUITE` first", file=str(path))
    results = load_results(path)
    if not results:
        raise UserError(f"none of the {len(files)} .json files is a readable result file", file=str(path))
    return results


def settings_from(results: list[RunResult], targets: list | None, ema: float | None) -> tuple[list, float]:
    """Targets and EMA factor: explicit arguments, else what the runner recorded, else defaults."""
    for r in results:
        conv = r.convergence or {}
        if targets is None and conv.get("target_specs"):
            targets = list(conv["target_specs"])
        if ema is None and (conv.get("definitions") or {}).get("ema"):
            ema = conv["definitions"]["ema"]["beta"]
    targets = list(targets) if targets else list(DEFAULT_TARGETS)
    for spec in targets:
        convergence.parse_target(spec, key="--target")
    ema = DEFAULT_EMA if ema is None else float(ema)
    if not 0 <= ema < 1:
        raise UserError(f"ema must be in [0, 1), got {ema}", key="--ema")
    return targets, ema


@dataclass
class RunRow:
    """One run's figures, as the leaderboard needs them."""

    result: RunResult
    """The result file."""
    summary: dict[str, Any]
    """convergence.summarize of its step log with the task's resolved targets."""

    def value(self, key: str) -> Any:
        r, s = self.result, self.summary
        if key == "params":
            return r.training.trainable_params if r.training else None
        if key.startswith("metric:"):
            return r.evaluation.get(key[7:])
        if key.startswith("target:"):
            targets = s.get("targets") or []
            i = int(key[7:])
            return targets[i]["step"] if i < len(targets) else None
        if key.startswith("budget:"):
            return (s.get("loss_at_budget") or {}).get(key[7:])
        if key == "memory":
            return r.memory.train_peak_mb if r.memory else None
        if key == "tokens_per_s":
            return r.throughput.tokens_per_s if r.throughput else None
        if key == "wall":
            return r.run.wall_time_s
        return s.get(key)


def build_rows(results: list[RunResult], targets_abs: list[float | None], ema: float) -> list[RunRow]:
    rows = []
    for r in results:
        steps = r.training.steps if r.training else []
        budget = ((r.run.config or {}).get("training") or {}).get("max_steps")
        rows.append(RunRow(r, convergence.summarize(steps, targets_abs, ema, budget=budget)))
    return rows


@dataclass
class Column:
    title: str
    """Header text."""
    key: str
    """What RunRow.value returns for this column."""
    better: str | None
    """`low`, `high` or None (informational, never bold)."""
    kind: str = "num"
    """`num`, `params` or `steps` (steps: runs that never reached the target are counted apart)."""


def columns_for(task_rows: list[RunRow], targets_abs: list[float | None], specs: list) -> list[Column]:
    primary = next((r.result.evaluation.get("primary_metric") for r in task_rows if r.result.evaluation.get("primary_metric")), None)
    others = sorted({k for r in task_rows for k, v in r.result.evaluation.items()
                     if k not in ("primary_metric", "n_examples", primary) and isinstance(v, (int, float)) and not isinstance(v, bool)})
    cols = [Column("trainable params", "params", None, "params")]
    for name in ([primary] if primary else []) + others:
        cols.append(Column(name + (" (primary)" if name == primary else ""), f"metric:{name}",
                           "low" if _LOWER_IS_BETTER.search(name) else "high"))
    for i, (t, spec) in enumerate(zip(targets_abs, specs)):
        if t is not None:
            shown = f"{_num(t)}" + ("" if isinstance(spec, (int, float)) else f" ({spec})")
            cols.append(Column(f"steps to loss ≤ {shown}", f"target:{i}", "low", "steps"))
    cols += [Column("loss @25%", "budget:25%", "low"), Column("loss @50%", "budget:50%", "low"),
             Column("final loss", "budget:100%", "low"), Column("curve area", "curve_area", "low"),
             Column(f"grad norm (first {convergence.GRAD_NORM_FIRST_K})", "grad_norm_start_mean", None),
             Column("peak train MB", "memory", "low"), Column("tokens/s", "tokens_per_s", "high"),
             Column("wall time s", "wall", "low")]
    return cols


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return DASH
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _params(x: float | None) -> str:
    if x is None:
        return DASH
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}K" if x >= 1e3 else f"{x:.0f}"


def fmt_agg(agg: dict[str, Any], fmt: Callable[[Any], str] = _num) -> str:
    if agg["n"] == 0:
        return DASH
    if agg["n"] == 1:
        return f"{fmt(agg['mean'])} (n=1)"
    return f"{fmt(agg['mean'])} ± {fmt(agg['std'])} [{fmt(agg['ci_low'])}, {fmt(agg['ci_high'])}] n={agg['n']}"


def _cell(col: Column, values: list[Any]) -> tuple[str, dict[str, Any], bool]:
    """(text, aggregate, eligible for bold) of one method's column."""
    if col.kind == "params":
        distinct = sorted({v for v in values if v is not None})
        agg = stats.aggregate(values)
        return (DASH if not distinct else "/".join(_params(v) for v in distinct)), agg, False
    agg = stats.aggregate(values)
    text = fmt_agg(agg)
    if col.kind == "steps":
        missed = sum(v is None for v in values)
        if missed:
            text = f"not reached ({missed}/{len(values)})" if missed == len(values) else f"{text}; {missed}/{len(values)} not reached"
        return text, agg, missed == 0 and agg["n"] > 0
    return text, agg, agg["n"] > 0


def leaderboard(task_rows: list[RunRow], cols: list[Column]) -> tuple[list[str], list[list[str]], dict]:
    """Header, table rows (best per column bold) and {(label, key): aggregate} for the comparisons."""
    labels = sorted({r.result.run.method for r in task_rows})
    cells, aggs = {}, {}
    for label in labels:
        runs = [r for r in task_rows if r.result.run.method == label]
        complete = [r for r in runs if r.result.run.status == COMPLETE]
        cells[label] = {"runs": f"{len(complete)}/{len(runs)}"}
        for col in cols:
            text, agg, eligible = _cell(col, [r.value(col.key) for r in complete]) if complete else (DASH, stats.aggregate([]), False)
            cells[label][col.key] = (text, agg, eligible)
            aggs[(label, col.key)] = agg
    for col in cols:
        if not col.better:
            continue
        means = [cells[l][col.key][1]["mean"] for l in labels if cells[l][col.key][2]]
        if means:
            best = min(means) if col.better == "low" else max(means)
            for l in labels:
                text, agg, eligible = cells[l][col.key]
                if eligible and agg["mean"] == best:
                    cells[l][col.key] = (f"**{text}**", agg, eligible)
    primary = next((c.key for c in cols if c.key.startswith("metric:")), None)

    def order(label: str) -> tuple:
        # Best primary metric first; methods without a complete run last.
        m = aggs.get((label, primary), {}).get("mean") if primary else None
        return (m is None, -(m or 0) if primary and _higher(primary) else (m or 0), label)

    header = ["method", "runs ok"] + [c.title for c in cols]
    table = [[label, cells[label]["runs"]] + [cells[label][c.key][0] for c in cols] for label in sorted(labels, key=order)]
    return header, table, aggs


def _separated(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("ci_low") is None or b.get("ci_low") is None:
        return False
    return a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"]


def _resolve_train_targets(specs: list, results: list[RunResult], ema: float) -> list[float | None]:
    """Targets on the smoothed training loss (this report's curves): final:/min: of a method's complete runs."""
    per_label: dict[str, dict[str, list[float]]] = {}
    for r in results:
        if r.run.status == COMPLETE and r.training and r.training.steps:
            curve = convergence.smooth([s.loss for s in r.training.steps], ema)
            entry = per_label.setdefault(r.run.method, {"final": [], "min": []})
            entry["final"].append(curve[-1])
            entry["min"].append(min(curve))
    out = []
    for spec in specs:
        t = convergence.parse_target(spec)
        if t.kind == "abs":
            out.append(t.value)
            continue
        kind = "min" if t.kind == "min" else "final"
        means = {k: sum(v[kind]) / len(v[kind]) for k, v in per_label.items() if v[kind]}
        level = max(means.values(), default=None) if t.label == convergence.WORST else means.get(t.label)
        if t.kind == "frac" and level is not None:
            starts = [r.training.steps[0].loss for r in results if r.run.status == COMPLETE and r.training and r.training.steps]
            level = sum(starts) / len(starts) + t.value * (level - sum(starts) / len(starts))
        out.append(level)
    return out


def _higher(key: str) -> bool:
    return not _LOWER_IS_BETTER.search(key)


# ---------------------------------------------------------------------------------------------
# Comparisons: a claim only where the 95% intervals separate


def _agg_steps(rows: list[RunRow], key: str, censor: bool) -> dict | None:
    values = []
    for r in rows:
        v = r.value(key)
        if v is None:
            if not censor:
                return None  # a method that missed the target in some seed cannot be the faster one
            # Never reached: the true step count is beyond the budget, so budget+1 is a lower bound
            # and substituting it can only make this method look faster than it is.
            v = (r.summary.get("budget_steps") or r.summary.get("n_steps") or 0) + 1
        values.append(v)
    return stats.aggregate(values)


def comparisons(task_rows: list[RunRow], cols: list[Column]) -> list[str]:
    from itertools import combinations

    labels = sorted({r.result.run.method for r in task_rows})
    done = {l: [r for r in task_rows if r.result.run.method == l and r.result.run.status == COMPLETE] for l in labels}
    picked = [c for c in cols if c.kind == "steps" or c.key == "curve_area"]
    picked += [c for c in cols if c.key.startswith("metric:")][:1]
    lines = []
    for col in picked:
        unresolved = []
        for a, b in combinations(labels, 2):
            claim = _claim(col, a, b, done[a], done[b]) or _claim(col, b, a, done[b], done[a])
            if claim:
                lines.append(f"- {claim}")
            else:
                unresolved.append(f"{a} vs {b}")
        if unresolved:
            lines.append(f"- {col.title}: difference not resolved (95% intervals overlap, or fewer than 2 complete seeds) "
                         f"for {', '.join(unresolved)}.")
    return lines


def _claim(col: Column, a: str, b: str, rows_a: list[RunRow], rows_b: list[RunRow]) -> str | None:
    """The sentence 'a is better than b' when the intervals separate in a's favour, else None."""
    if not rows_a or not rows_b:
        return None
    if col.kind == "steps":
        agg_a, agg_b = _agg_steps(rows_a, col.key, False), _agg_steps(rows_b, col.key, True)
    else:
        agg_a, agg_b = (stats.aggregate([r.value(col.key) for r in rows]) for rows in (rows_a, rows_b))
    if agg_a is None or agg_b is None or not _separated(agg_a, agg_b):
        return None
    a_lower = agg_a["mean"] < agg_b["mean"]
    ci = f"95% CI {_num(agg_a['ci_low'])}–{_num(agg_a['ci_high'])} vs {_num(agg_b['ci_low'])}–{_num(agg_b['ci_high'])}"
    n = f"n={agg_a['n']} vs {agg_b['n']}"
    if col.kind == "steps":
        if not a_lower:
            return None
        target = col.title.removeprefix("steps to loss ≤ ")
        missed = sum(r.value(col.key) is None for r in rows_b)
        note = f"; {missed} run(s) of {b} never reached it, counted as budget+1" if missed else ""
        return f"**{a}** reaches loss {target} in fewer steps than **{b}** ({ci} steps, {n}{note})."
    if col.key == "curve_area":
        return f"**{a}** converges faster than **{b}** over the whole budget: smaller loss-curve area ({ci}, {n})." if a_lower else None
    if a_lower != (col.better == "low"):
        return None
    return f"**{a}** has a better {col.title} than **{b}** ({ci}, {n})."


# ---------------------------------------------------------------------------------------------
# Plots (Agg canvas, no pyplot global state)


def _color(label: str, task_rows: list[RunRow]) -> str:
    # The same method gets the same colour in both plots of a task.
    from matplotlib import rcParams

    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    return cycle[sorted({r.result.run.method for r in task_rows}).index(label) % len(cycle)]


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def plot_losses(task: str, task_rows: list[RunRow], targets_abs: list, ema: float, path: Path) -> None:
    import numpy as np

    fig, ax = _figure()
    top = []
    for label in sorted({r.result.run.method for r in task_rows}):
        done = [r.summary for r in task_rows if r.result.run.method == label and r.result.run.status == COMPLETE and r.summary["n_steps"]]
        color = _color(label, task_rows)
        if done:
            n = min(s["n_steps"] for s in done)
            curves = np.array([s["smoothed_loss"][:n] for s in done])
            x, mean = done[0]["steps"][:n], curves.mean(axis=0)
            ax.plot(x, mean, color=color, label=f"{label} (n={len(done)})")
            if len(done) > 1:
                lo, hi = zip(*((a["ci_low"], a["ci_high"]) for a in (stats.aggregate(col) for col in curves.T)))
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
            top.append(float(np.nanmax(curves)))
        for r in task_rows:
            if r.result.run.method == label and r.result.run.status != COMPLETE and r.summary["n_steps"]:
                ax.plot(r.summary["steps"], r.summary["smoothed_loss"], color=color, linestyle=":", linewidth=1,
                        label=f"{label} seed {r.result.run.seed} ({r.result.run.status})")
    for t in targets_abs:
        if t is not None:
            ax.axhline(t, color="grey", linestyle="--", linewidth=0.8)
    if top:
        ax.set_ylim(top=max(top) * 1.05)  # keep diverged curves from flattening the rest
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training loss, EMA β={ema:g}")
    ax.set_title(f"{task}: mean over seeds, band = 95% CI of the mean")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right")  # loss curves fall, so the top right is free
    fig.tight_layout()
    fig.savefig(path)


def plot_pareto(task: str, task_rows: list[RunRow], aggs: dict, primary_key: str, path: Path) -> bool:
    """Peak train memory vs primary metric, with the Pareto front; False when memory is missing."""
    points = []
    for label in sorted({r.result.run.method for r in task_rows}):
        mem, met = aggs.get((label, "memory")), aggs.get((label, primary_key))
        if mem and met and mem["mean"] is not None and met["mean"] is not None:
            points.append((mem["mean"], met["mean"], mem["std"] or 0, met["std"] or 0, label))
    if not points:
        return False
    fig, ax = _figure()
    for x, y, dx, dy, label in points:
        ax.errorbar([x], [y], xerr=[dx], yerr=[dy], fmt="o", capsize=3, color=_color(label, task_rows))
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    high = _higher(primary_key)
    front, best = [], None
    for x, y, *_ in sorted(points):
        if best is None or (y > best if high else y < best):
            front.append((x, y))
            best = y
    ax.plot(*zip(*front), color="grey", linestyle="--", linewidth=0.8, drawstyle="steps-post", label="Pareto front")
    ax.set_xlabel("peak train memory, MB (mean ± std)")
    ax.set_ylabel(f"{primary_key[7:]} (mean ± std)")
    ax.set_title(f"{task}: memory vs task metric")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    return True


# ---------------------------------------------------------------------------------------------
# The document


def _esc(text: Any) -> str:
    # Markdown table cells: a pipe ends the cell, a newline ends the row.
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _distinct(values: list[Any]) -> str:
    seen = list(dict.fromkeys(v for v in values if v not in (None, "", {})))
    if not seen:
        return DASH
    return seen[0] if len(seen) == 1 else "varies between runs: " + "; ".join(seen)


def _header(suite: str, results: list[RunResult], command: str, specs: list, ema: float) -> list[str]:
    metas = [r.meta for r in results]
    statuses = [r.run.status for r in results]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    git = _distinct([f"{m.git_commit}{' (dirty)' if m.git_dirty else ''}" if m.git_commit else None for m in metas])
    info = [
        ("suite", suite),
        ("generated", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("report command", _code(command) if command else DASH),
        ("suite command", _distinct([_code(m.command) if m.command else None for m in metas])),
        ("git commit", git),
        ("hardware", _distinct([", ".join(f"{k}: {v}" for k, v in m.hardware.items()) for m in metas])),
        ("versions", _distinct([", ".join(f"{k} {v}" for k, v in m.versions.items()) for m in metas])),
        ("runs", f"{len(results)}: {counts}"),
        ("smoothing", f"EMA β={ema:g}, bias-corrected (time constant {1 / (1 - ema):.3g} steps)"),
        ("targets", ", ".join(str(s) for s in specs) + f" (`final:{convergence.WORST}` = the worst method's mean final loss)"),
    ]
    from tabulate import tabulate

    return [f"# disha-bench report: {suite}", "",
            tabulate([(k, _esc(v)) for k, v in info], ["", ""], tablefmt="github", disable_numparse=True), "",
            "Cells: mean ± std [95% t-interval of the mean] n=complete seeds; **bold** = best mean of the column "
            "(lower for losses, steps, memory and time; higher for task metrics and tokens/s; parameters and "
            "grad norm are not ranked). Loss figures use the smoothed curve; loss @25% is at a quarter of "
            "max_steps; curve area = mean smoothed loss / loss of step 1 (1 = no progress). "
            "Failed and diverged runs are excluded from the figures and listed per task.", ""]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "task"


def write_report(results_dir: str | Path, out_path: str | Path | None = None, command: str = "",
                 targets: list | None = None, ema: float | None = None) -> Path:
    """Write the leaderboard of `results_dir` to `out_path` (default reports/<suite>.md) and its PNGs beside it."""
    from tabulate import tabulate

    results = load_checked(results_dir)
    specs, ema = settings_from(results, targets, ema)
    suites = [r.run.suite for r in results]
    suite = max(dict.fromkeys(suites), key=suites.count)
    out = Path(out_path) if out_path else Path("reports") / f"{_slug(suite)}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = _header(suite, results, command, specs, ema)
    for task in dict.fromkeys(r.run.task for r in results):
        task_results = [r for r in results if r.run.task == task]
        targets_abs = _resolve_train_targets(specs, task_results, ema)
        rows = build_rows(task_results, targets_abs, ema)
        cols = columns_for(rows, targets_abs, specs)
        header, table, aggs = leaderboard(rows, cols)
        lines += [f"## {task}", "", tabulate(table, header, tablefmt="github", disable_numparse=True), ""]
        missing = [str(s) for s, t in zip(specs, targets_abs) if t is None]
        if missing:
            lines += [f"Targets not resolved on this task (no complete run of that method): {', '.join(missing)}.", ""]
        lines += ["**Comparisons**", "", *comparisons(rows, cols), ""]
        loss_png = out.parent / f"{out.stem}-{_slug(task)}-loss.png"
        plot_losses(task, rows, targets_abs, ema, loss_png)
        lines += [f"![{task}: loss curves]({loss_png.name})", ""]
        primary = next((c.key for c in cols if c.key.startswith("metric:")), None)
        pareto_png = out.parent / f"{out.stem}-{_slug(task)}-memory.png"
        if primary and plot_pareto(task, rows, aggs, primary, pareto_png):
            lines += [f"![{task}: peak memory vs {primary[7:]}]({pareto_png.name})", ""]
        else:
            lines += ["(No memory-vs-metric plot: no complete run recorded both.)", ""]
        bad = [r.result for r in rows if r.result.run.status != COMPLETE]
        if bad:
            failed = [[_esc(r.run.run_id), _esc(r.run.method), r.run.seed, r.run.status,
                       (r.training.stopped_at_step if r.training else None) or DASH, _esc(r.run.error or DASH)] for r in bad]
            lines += ["**Failed and diverged runs** (not in the figures above)", "",
                      tabulate(failed, ["run", "method", "seed", "status", "stopped at step", "error"],
                               tablefmt="github", disable_numparse=True), ""]
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(out)  # a reader (or GitHub) never sees half a report
    return out
