"""Regression check: store a baseline of a results folder, later compare a fresh run with it.

    disha-bench baseline results/smoke -o suites/baselines/smoke.json
    disha-bench check results/smoke --baseline suites/baselines/smoke.json     # exit 1 on a regression

The baseline holds, per (task, method label), over its complete runs: the mean smoothed loss curve
and its per-step std across seeds, steps to each target loss, and the primary task metric. `check`
compares the mean over the current complete seeds with it. The tolerance of each figure is

    tol = max(k * std_over_seeds, floor_abs, floor_rel * |baseline mean|)

with the constants in the file's `tolerances` (edit them there). A loss curve regresses when more than
`max_outside_fraction` of its steps lie above mean + tol (one noisy step is not a regression); steps to
target (not reached = budget+1) regress when higher by more than tol; the metric when worse by more
than tol; a run that diverged or failed where the baseline's same seed completed is a regression.
The floors make a re-run on another machine (last-bit float differences) pass, while a learning rate
100x lower leaves the curve far above the band and fails. Runs absent from the baseline are listed
but do not fail.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import re
from pathlib import Path
from typing import Any

from disha_bench import convergence, stats
from disha_bench.errors import UserError
from disha_bench.report import _higher, load_checked, settings_from
from disha_bench.results import COMPLETE, RunResult

FORMAT = "disha-bench-baseline"
VERSION = 1
DEFAULT_TOLERANCES = {
    "k": 3.0,
    "loss_floor_abs": 0.02,
    "loss_floor_rel": 0.05,
    "max_outside_fraction": 0.1,
    "steps_floor_abs": 3,
    "steps_floor_rel": 0.15,
    "metric_floor_abs": 0.03,
    "metric_floor_rel": 0.05,
}
OK, WORSE, BETTER, INFO = "ok", "REGRESSION", "improved", "not compared"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("baseline", help="store a regression baseline from a results folder")
    p.add_argument("results_dir", help="folder of result files, e.g. results/smoke")
    p.add_argument("-o", "--out", required=True, help="baseline file to write (JSON)")
    p.add_argument("--target", action="append", dest="targets", help="target loss spec, repeatable (default: the suite's)")
    p.add_argument("--ema", type=float, help="EMA smoothing factor (default: the suite's, else 0.9)")
    p.set_defaults(func=lambda a: (print(f"wrote {write_baseline(a.results_dir, a.out, a.targets, a.ema)}"), 0)[1])
    p = subparsers.add_parser("check", help="compare a results folder with a baseline; exit 1 on a regression")
    p.add_argument("results_dir", help="folder of result files, e.g. results/smoke")
    p.add_argument("--baseline", required=True, help="file written by `disha-bench baseline`")
    p.set_defaults(func=lambda a: check(a.results_dir, a.baseline))


def _group(results: list[RunResult]) -> dict[tuple[str, str], list[RunResult]]:
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.run.task, r.run.method), []).append(r)
    return groups


def _curves(runs: list[RunResult], ema: float) -> tuple[list[int], list[list[float]]]:
    """Steps and smoothed curves of the complete runs, cut to the shortest."""
    curves = [(([s.step for s in r.training.steps]), convergence.smooth([s.loss for s in r.training.steps], ema))
              for r in runs if r.run.status == COMPLETE and r.training and r.training.steps]
    if not curves:
        return [], []
    n = min(len(c[0]) for c in curves)
    return curves[0][0][:n], [c[1][:n] for c in curves]


def _steps_to(runs: list[RunResult], target: float, ema: float) -> list[int | None]:
    return [convergence.summarize(r.training.steps, [target], ema)["targets"][0]["step"]
            for r in runs if r.run.status == COMPLETE and r.training]


def _primary(runs: list[RunResult]) -> tuple[str | None, list[float]]:
    name = next((r.evaluation.get("primary_metric") for r in runs if r.evaluation.get("primary_metric")), None)
    return name, [r.evaluation.get(name) for r in runs if r.run.status == COMPLETE] if name else []


def build_baseline(results: list[RunResult], targets: list | None = None, ema: float | None = None) -> dict[str, Any]:
    specs, ema = settings_from(results, targets, ema)
    entries = []
    for (task, label), runs in _group(results).items():
        done = [r for r in runs if r.run.status == COMPLETE]
        if not done:
            continue
        steps, curves = _curves(done, ema)
        per_step = [stats.aggregate(col) for col in zip(*curves)]
        resolved = convergence.resolve_targets(specs, [r for r in results if r.run.task == task], ema)
        name, values = _primary(done)
        entries.append({
            "task": task, "method": label,
            "seeds_complete": sorted(r.run.seed for r in done),
            "run_ids": sorted(r.run.run_id for r in done),
            "loss": {"steps": steps, "mean": [a["mean"] for a in per_step], "std": [a["std"] or 0.0 for a in per_step]},
            "targets": [{"spec": spec, "target": t, "steps": _steps_to(done, t, ema)}
                        for spec, t in zip(specs, resolved) if t is not None],
            "metric": {"name": name, "values": values} if name else None,
        })
    if not entries:
        raise UserError("no complete run to take a baseline from")
    meta = results[0].meta
    return {"format": FORMAT, "version": VERSION,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "suite": results[0].run.suite, "git_commit": meta.git_commit, "git_dirty": meta.git_dirty,
            "ema": ema, "tolerances": dict(DEFAULT_TOLERANCES), "entries": entries}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.7g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def write_baseline(results_dir: str | Path, out: str | Path, targets: list | None = None, ema: float | None = None) -> Path:
    data = build_baseline(load_checked(results_dir), targets, ema)
    text = json.dumps(_rounded(data), indent=2)
    # One line per list of numbers (curves, step counts), so the file stays readable and diffable.
    text = re.sub(r"\[([^\[\]{}\"]*)\]", lambda m: "[" + ", ".join(p.strip() for p in m.group(1).split(",") if p.strip()) + "]", text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(out)
    return out


def load_baseline(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError("baseline file not found; write one with `disha-bench baseline RESULTS_DIR -o FILE`", file=str(path))
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"not valid JSON (line {err.lineno}: {err.msg})", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read ({err})", file=str(path)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"not a disha-bench baseline (expected \"format\": \"{FORMAT}\")", file=str(path))
    if data.get("version") != VERSION or not isinstance(data.get("entries"), list):
        raise UserError(f"unsupported baseline version {data.get('version')!r} or no entries", file=str(path))
    try:
        for e in data["entries"]:
            e["task"], e["method"], e["loss"]["mean"], e["loss"]["std"], e["loss"]["steps"]  # noqa: B018
    except (KeyError, TypeError):
        raise UserError("corrupt baseline: an entry lacks task, method or loss", file=str(path)) from None
    return data


def _tol(tols: dict, kind: str, std: float | None, mean: float) -> float:
    return max(tols["k"] * (std or 0.0), tols[f"{kind}_floor_abs"], tols[f"{kind}_floor_rel"] * abs(mean))


def _run_id_note(current: list[str], stored: list[str]) -> str:
    """Run ids derive from the resolved configuration and seed: say whether the runs compared are the same."""
    if current == stored:
        return ""
    if set(current) <= set(stored):
        return f"{len(current)} of the baseline's {len(stored)} seeds"
    return "run ids differ: configuration or seeds changed"


def _row(task: str, label: str, metric: str, base: Any, cur: Any, change: str, tol: str, verdict: str, note: str = "") -> dict:
    return {"task": task, "method": label, "metric": metric, "baseline": base, "current": cur,
            "change": change, "tolerance": tol, "verdict": verdict, "note": note}


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def compare(results: list[RunResult], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per compared figure (see the module docstring for the rules)."""
    tols = {**DEFAULT_TOLERANCES, **(baseline.get("tolerances") or {})}
    ema = float(baseline.get("ema", 0.9))
    groups = _group(results)
    rows = []
    for e in baseline["entries"]:
        task, label = e["task"], e["method"]
        runs = groups.pop((task, label), None)
        if runs is None:
            rows.append(_row(task, label, "runs", f"{len(e.get('seeds_complete', []))} complete", "none", "", "", INFO,
                             "in the baseline, not in these results (not a failure)"))
            continue
        done = [r for r in runs if r.run.status == COMPLETE]
        note = _run_id_note(sorted(r.run.run_id for r in done), e.get("run_ids") or [])
        lost = [r for r in runs if r.run.status != COMPLETE and r.run.seed in e.get("seeds_complete", [])]
        if lost:
            rows.append(_row(task, label, "status", "complete", ", ".join(f"seed {r.run.seed} {r.run.status}" for r in lost),
                             "", "", WORSE, "; ".join(f"{r.run.run_id}: {r.run.error or r.run.status}" for r in lost)))
        if not done:
            continue
        rows.append(_curve_row(task, label, e, done, ema, tols, note))
        for t in e.get("targets", []):
            rows.append(_target_row(task, label, t, done, e["loss"]["steps"][-1], ema, tols))
        if e.get("metric"):
            rows.append(_metric_row(task, label, e["metric"], done, tols))
    for (task, label), runs in groups.items():
        rows.append(_row(task, label, "runs", "none", f"{sum(r.run.status == COMPLETE for r in runs)}/{len(runs)} complete",
                         "", "", INFO, "not in the baseline (not a failure)"))
    return rows


def _curve_row(task: str, label: str, e: dict, done: list[RunResult], ema: float, tols: dict, note: str) -> dict:
    steps, curves = _curves(done, ema)
    base = dict(zip(e["loss"]["steps"], zip(e["loss"]["mean"], e["loss"]["std"])))
    pairs = [(sum(c[i] for c in curves) / len(curves), *base[s]) for i, s in enumerate(steps) if s in base]
    if not pairs:
        return _row(task, label, "loss curve", "", "", "", "", INFO, "no step in common with the baseline")
    above = sum(cur > mean + _tol(tols, "loss", std, mean) for cur, mean, std in pairs)
    below = sum(cur < mean - _tol(tols, "loss", std, mean) for cur, mean, std in pairs)
    cur, mean, std = pairs[-1]
    limit = tols["max_outside_fraction"] * len(pairs)
    verdict = WORSE if above > limit else BETTER if below > limit else OK
    extra = f"compared {len(pairs)} of {len(base)} baseline steps" if len(pairs) < len(base) else ""
    change = f"{cur - mean:+.4g} at final step; {above}/{len(pairs)} steps above band, {below} below"
    return _row(task, label, "loss curve", f"final {_f(mean)}", f"final {_f(cur)}", change,
                f"±{_tol(tols, 'loss', std, mean):.3g} at final", verdict, "; ".join(x for x in (note, extra) if x))


def _censored(values: list[int | None], budget: int) -> list[int]:
    # Not reached within the budget counts as budget+1 (a lower bound), so a seed that ends a hair
    # above the target on another machine moves the mean by a fraction of a step instead of failing.
    return [budget + 1 if v is None else v for v in values]


def _target_row(task: str, label: str, t: dict, done: list[RunResult], budget: int, ema: float, tols: dict) -> dict:
    name = f"steps to loss ≤ {t['target']:.4g}"
    base_vals, cur_vals = t["steps"], _steps_to(done, t["target"], ema)
    cur_budget = max(r.training.steps[-1].step for r in done)
    b, c = stats.aggregate(_censored(base_vals, budget)), stats.aggregate(_censored(cur_vals, cur_budget))
    shown_b = f"{_f(b['mean'])} ({sum(v is not None for v in base_vals)}/{len(base_vals)} reached)"
    shown_c = f"{_f(c['mean'])} ({sum(v is not None for v in cur_vals)}/{len(cur_vals)} reached)"
    if b["mean"] is None or c["mean"] is None:
        return _row(task, label, name, shown_b, shown_c, "", "", INFO, "no runs")
    tol = _tol(tols, "steps", b["std"], b["mean"])
    delta = c["mean"] - b["mean"]
    return _row(task, label, name, shown_b, shown_c, f"{delta:+.4g}", f"±{tol:.3g}",
                WORSE if delta > tol else BETTER if delta < -tol else OK, "not reached = budget+1 steps")


def _metric_row(task: str, label: str, m: dict, done: list[RunResult], tols: dict) -> dict:
    b = stats.aggregate(m["values"])
    c = stats.aggregate([r.evaluation.get(m["name"]) for r in done])
    if b["mean"] is None or c["mean"] is None:
        return _row(task, label, m["name"], _f(b["mean"]), _f(c["mean"]), "", "", INFO, "metric missing")
    tol = _tol(tols, "metric", b["std"], b["mean"])
    delta = c["mean"] - b["mean"]
    worse = -delta if _higher(m["name"]) else delta
    return _row(task, label, m["name"], _f(b["mean"]), _f(c["mean"]), f"{delta:+.4g}", f"±{tol:.3g}",
                WORSE if worse > tol else BETTER if worse < -tol else OK)


def check(results_dir: str | Path, baseline_path: str | Path) -> int:
    """Print the comparison table; 1 when anything regressed, else 0."""
    from tabulate import tabulate

    baseline = load_baseline(baseline_path)
    rows = compare(load_checked(results_dir), baseline)
    print(tabulate([list(r.values()) for r in rows], list(rows[0].keys()) if rows else [], tablefmt="simple",
                   disable_numparse=True))
    bad = [r for r in rows if r["verdict"] == WORSE]
    unmatched = [r for r in rows if r["verdict"] == INFO]
    if unmatched:
        print(f"\n{len(unmatched)} row(s) not compared (missing from one side): reported, not failures.")
    if bad:
        print(f"\nREGRESSION against {baseline_path}:")
        for r in bad:
            print(f"  {r['task']} / {r['method']}: {r['metric']} {r['baseline']} -> {r['current']} ({r['change']})")
        return 1
    print(f"\nno regression against {baseline_path}")
    return 0
