"""Regression check: store a baseline of a results folder, later compare a fresh run with it, seed by seed.

    disha-bench run suites/smoke.yaml --out /tmp/smoke3 --set 'seeds=[0,1,2]'
    disha-bench baseline /tmp/smoke3 -o suites/baselines/smoke.json
    disha-bench check results/smoke --baseline suites/baselines/smoke.json     # exit 1 on a regression

Training is deterministic for a seed, so a fresh run is compared with the baseline's run of the same
(task, method label, seed) - never by run id, so a change below the configuration (an adapter
silently built wrong) is still paired with the run it should reproduce. Per pair:

- held-out loss curve and training loss curve, step by step: regression when any common step differs
  by more than max(curve_abs, curve_rel * |baseline|) (cross-platform float differences stay far
  below; a halved learning rate or another adapter goes far above);
- every evaluation metric: more than max(metric_abs, metric_examples / n_examples) apart (proportions
  on a few examples move by whole examples);
- step time and peak memory from the cost phase's interleaved repeats (running/cost.py), as a ratio
  to the reference method's of the same seed: regression when the step-time ratio grew by more than
  25% (a 1.5x slower step exceeds it, machine noise does not: check_calibration.py) or the memory
  ratio by more than 5%;
- without cost repeats on both sides, peak memory and tokens/s of the runs' single readings as a
  ratio to the reference's: regression when the ratio grew (memory) by more than 25% or shrank
  (throughput) to less than a third. Loose on purpose: on a shared 2-core machine the tokens/s ratio
  of two tiny smoke runs moved by 2x between two runs of the same commit;
- a metric with one value in every run of its task, in the baseline and now (exact match 0
  everywhere), is reported as not compared;
- a run that completed in the baseline and did not now is a regression;
- a baseline run with no result here, and a result file here that is damaged (truncated, edited, not
  a result: `results.verify_result`), fail the check: a lost result must never pass as "no regression".

Curve tolerances are calibrated on replicate runs when the baseline is written with `--replicate`
(check_calibration.py). Tolerances are stored in the baseline file (`tolerances`; edit them there).
Runs present only in the results are listed and do not fail. "configuration changed" names the keys of
the resolved run configuration that differ (library versions are not configuration).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any, Sequence

from disha_bench.analysis import measures
from disha_bench.analysis.check_calibration import COST_TOLERANCES, calibrate_curves, config_changes, constant_metrics, cost_rows, cost_summary
from disha_bench.analysis.compare import latest_per_seed
from disha_bench.analysis.convergence import heldout_points
from disha_bench.analysis.measures import damaged_files, load_checked
from disha_bench.contracts.results import EVALUATED_STATUSES, TRAINED_STATUSES, RunResult
from disha_bench.core.errors import UserError
from disha_bench.core.io import atomic_write_text

FORMAT = "disha-bench-baseline"
VERSION = 3
READABLE_VERSIONS = (2, 3)
"""Version 2 baselines (no cost figures, no configurations) are still compared on what they hold."""
DEFAULT_TOLERANCES = {
    "curve_abs": 0.005,
    "curve_rel": 0.002,
    "metric_abs": 0.005,
    "metric_examples": 1.5,
    "memory_ratio": 0.25,
    "throughput_ratio": 2.0,
}
OK, WORSE, BETTER, INFO = "ok", "REGRESSION", "improved", "not compared"
Key = tuple[str, str, int]


def _reference(results: list[RunResult]) -> str | None:
    return next((r.run.analysis.get("reference") for r in results if (r.run.analysis or {}).get("reference")), None)


def _ratios(results: list[RunResult], reference: str | None) -> dict[Key, dict[str, float | None]]:
    """Peak memory and tokens/s of each run over the reference method's run of the same task and seed."""
    by_key = {(r.run.task, r.run.method, r.run.seed): r for r in results if r.run.status in TRAINED_STATUSES}
    out = {}
    for (task, method, seed), r in by_key.items():
        ref = by_key.get((task, reference, seed)) if reference else None
        entry = {}
        for name in ("peak_mb", "tokens_per_s"):
            a, b = (measures.value_of(x, name) if x else None for x in (r, ref))
            entry[name] = a / b if a and b else None
        out[(task, method, seed)] = entry
    return out


def _entry(r: RunResult, ratios: dict[str, float | None], cost: dict[str, Any] | None) -> dict[str, Any]:
    points = heldout_points(r)
    steps = r.training.steps if r.training else []
    return {
        "task": r.run.task, "method": r.run.method, "seed": r.run.seed, "run_id": r.run.run_id, "status": r.run.status,
        "heldout": {"steps": [p.step for p in points], "loss": [p.loss for p in points]},
        "train_loss": {"steps": [s.step for s in steps], "loss": [s.loss for s in steps]},
        "metrics": measures.numeric_metrics(r) if r.run.status in EVALUATED_STATUSES else {},
        "n_examples": r.evaluation.get("n_examples"),
        "ratios_to_reference": ratios,
        "cost": cost,
        "config": r.run.config,
    }


def build_baseline(results: list[RunResult], reference: str | None = None,
                   replicates: Sequence[list[RunResult]] = ()) -> dict[str, Any]:
    results, _ = latest_per_seed(results)
    reference = reference or _reference(results)
    ratios = _ratios(results, reference)
    costs = cost_summary(results, reference)
    runs = [_entry(r, ratios[key], costs.get(key)) for r in results if r.run.status in TRAINED_STATUSES
            for key in [(r.run.task, r.run.method, r.run.seed)]]
    if not runs:
        raise UserError("no trained run to take a baseline from")
    meta = results[0].meta
    tolerances = {**DEFAULT_TOLERANCES, **COST_TOLERANCES}
    calibration = calibrate_curves(results, [latest_per_seed(r)[0] for r in replicates])
    if replicates and calibration is None:
        raise UserError("--replicate: no run of the replicate folder has the same task, method and seed as a baseline run")
    if calibration is not None:
        tolerances.update({k: v for k, v in calibration.items() if k != "calibration"})
    return {"format": FORMAT, "version": VERSION,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "suite": results[0].run.suite, "git_commit": meta.git_commit, "git_dirty": meta.git_dirty,
            "reference": reference, "tolerances": tolerances,
            "curve_calibration": calibration["calibration"] if calibration else "none: default curve tolerances",
            "constant_metrics": constant_metrics(results),
            "runs": sorted(runs, key=lambda e: (e["task"], e["method"], e["seed"]))}


def write_baseline(results_dir: str | Path, out: str | Path, reference: str | None = None,
                   replicates: Sequence[str | Path] = ()) -> Path:
    data = build_baseline(load_checked(results_dir), reference, [load_checked(d) for d in replicates])
    configs = {}
    for i, e in enumerate(data["runs"]):  # each run's configuration on one line of its own
        configs[f'"@config{i}@"'], e["config"] = json.dumps(e["config"], sort_keys=True), f"@config{i}@"
    text = json.dumps(data, indent=2)
    for placeholder, config in configs.items():
        text = text.replace(placeholder, config)
    # One line per list of numbers (curves), so the file stays readable and diffable.
    text = re.sub(r"\[([^\[\]{}\"]*)\]", lambda m: "[" + ", ".join(p.strip() for p in m.group(1).split(",") if p.strip()) + "]", text)
    out = Path(out)
    atomic_write_text(out, text + "\n")
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
    if data.get("version") not in READABLE_VERSIONS or not isinstance(data.get("runs"), list):
        raise UserError(f"baseline version {data.get('version')!r}, expected {VERSION}: regenerate it with "
                        f"`disha-bench baseline RESULTS_DIR -o {path}`", file=str(path))
    try:
        for e in data["runs"]:
            e["task"], e["method"], int(e["seed"]), e["heldout"]["loss"], e["train_loss"]["loss"]  # noqa: B018
    except (KeyError, TypeError, ValueError):
        raise UserError("corrupt baseline: a run lacks task, method, seed or curves", file=str(path)) from None
    return data


def _row(e: dict, metric: str, base: Any, cur: Any, change: str, tol: str, verdict: str, note: str = "") -> dict:
    return {"run": f"{e['task']}/{e['method']}/s{e['seed']}", "figure": metric, "baseline": base, "current": cur,
            "change": change, "tolerance": tol, "verdict": verdict, "note": note}


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.5g}"


def _curve_row(e: dict, name: str, base: dict, steps: list[int], losses: list[float], tols: dict) -> dict | None:
    stored = dict(zip(base["steps"], base["loss"]))
    common = [(s, stored[s], v) for s, v in zip(steps, losses) if s in stored]
    if not stored and not steps:
        return None  # no such curve on either side (the unadapted reference trains nothing)
    if not stored or not common:
        side = "baseline" if not stored else "current run" if not steps else "both (no common step)"
        return _row(e, name, f"{len(stored)} points", f"{len(steps)} points", "", "", INFO, f"no curve on {side}")
    worst = max(common, key=lambda c: abs(c[2] - c[1]) / max(tols["curve_abs"], tols["curve_rel"] * abs(c[1])))
    step, b, c = worst
    tol = max(tols["curve_abs"], tols["curve_rel"] * abs(b))
    outside = sum(abs(v - s) > max(tols["curve_abs"], tols["curve_rel"] * abs(s)) for _, s, v in common)
    note = f"compared {len(common)} of {len(stored)} steps" if len(common) < len(stored) else ""
    return _row(e, name, f"{_f(b)} @ step {step}", _f(c), f"{c - b:+.3g}; {outside}/{len(common)} steps outside",
                f"±{tol:.3g}", WORSE if outside else OK, note)


def _metric_rows(e: dict, r: RunResult, tols: dict, constant: dict[str, float]) -> list[dict]:
    rows, current = [], measures.numeric_metrics(r)
    n = e.get("n_examples") or r.evaluation.get("n_examples")
    for name, b in sorted(e["metrics"].items()):
        c = current.get(name)
        if c is None:
            rows.append(_row(e, name, _f(b), "–", "", "", WORSE, "metric missing now"))
            continue
        if name in constant and c == b:
            rows.append(_row(e, name, _f(b), _f(c), "", "", INFO, f"{_f(b)} in every run of the task: says nothing"))
            continue
        share = measures.declaration(r, name).is_proportion  # `metric_examples` examples' worth of a [0, 1] score
        tol = max(tols["metric_abs"], tols["metric_examples"] / n if n and share else 0.0)
        rows.append(_row(e, name, _f(b), _f(c), f"{c - b:+.3g}", f"±{tol:.3g}", WORSE if abs(c - b) > tol else OK))
    return rows


def _ratio_rows(e: dict, ratios: dict, tols: dict, reference: str | None) -> list[dict]:
    rows = []
    for name, key, worse_if_higher in (("peak memory", "peak_mb", True), ("tokens/s", "tokens_per_s", False)):
        b, c = (e.get("ratios_to_reference") or {}).get(key), ratios.get(key)
        label = f"{name} / {reference}'s"
        if e["method"] == reference:
            continue
        if b is None and c is None:
            continue  # nothing to compare on either side (e.g. the unadapted reference has no throughput)
        if b is None or c is None:
            rows.append(_row(e, label, _f(b), _f(c), "", "", INFO, "no reference run of this seed on one side"))
            continue
        tol = tols["memory_ratio" if key == "peak_mb" else "throughput_ratio"]
        change = c / b
        worse = change > 1 + tol if worse_if_higher else change < 1 / (1 + tol)
        better = change < 1 / (1 + tol) if worse_if_higher else change > 1 + tol
        rows.append(_row(e, label, f"{b:.3g}×", f"{c:.3g}×", f"{change:.3g}× of baseline", f"×{1 + tol:.3g}",
                         WORSE if worse else BETTER if better else OK, "same-seed ratio, loose"))
    return rows


def compare(results: list[RunResult], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per compared figure (see the module docstring for the rules)."""
    tols = {**DEFAULT_TOLERANCES, **(baseline.get("tolerances") or {})}
    results, _ = latest_per_seed(results)  # one run per seed: the newest, if a folder holds several
    reference = baseline.get("reference") or _reference(results)
    current = {(r.run.task, r.run.method, r.run.seed): r for r in results}
    ratios = _ratios(results, reference)
    costs = cost_summary(results, reference)
    # Constant in the baseline and still constant now: compared, it would only say "0 == 0".
    now_constant = constant_metrics(results)
    constant = {task: {m: v for m, v in metrics.items() if now_constant.get(task, {}).get(m) == v}
                for task, metrics in (baseline.get("constant_metrics") or {}).items()}
    rows = []
    for e in baseline["runs"]:
        key = (e["task"], e["method"], int(e["seed"]))
        r = current.pop(key, None)
        if r is None:
            rows.append(_row(e, "run", e["status"], "none", "", "", WORSE, "in the baseline, no whole result here"))
            continue
        note = _config_note(e, r)
        if r.run.status not in TRAINED_STATUSES or (e["metrics"] and r.run.status not in EVALUATED_STATUSES):
            rows.append(_row(e, "status", e["status"], r.run.status, "", "", WORSE, r.run.error or note))
            continue
        points = heldout_points(r)
        steps = r.training.steps if r.training else []
        curve_rows = [_curve_row(e, "held-out loss", e["heldout"], [p.step for p in points], [p.loss for p in points], tols),
                      _curve_row(e, "train loss", e["train_loss"], [s.step for s in steps], [s.loss for s in steps], tols)]
        curves = [row for row in curve_rows if row is not None]
        if curves and note:
            curves[0]["note"] = "; ".join(x for x in (curves[0]["note"], note) if x)
        rows += curves
        rows += _metric_rows(e, r, tols, constant.get(e["task"], {}))
        if e.get("cost") and key in costs and e["method"] != reference:
            rows += cost_rows(e, costs[key], tols, str(reference), _row)
        else:
            rows += _ratio_rows(e, ratios.get(key, {}), tols, reference)
    for (task, method, seed), r in sorted(current.items()):
        rows.append(_row({"task": task, "method": method, "seed": seed}, "run", "none", r.run.status, "", "", INFO,
                         "not in the baseline (not a failure)"))
    return rows


def _config_note(e: dict, r: RunResult) -> str:
    """"configuration changed" with the keys that changed; by run id only for a v2 baseline."""
    if "config" in e:
        changed = config_changes(e["config"], r.run.config)
        return f"configuration changed: {', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}" if changed else ""
    return "" if r.run.run_id == e.get("run_id") else f"run id {r.run.run_id} (baseline {e.get('run_id')}): configuration changed"


def check(results_dir: str | Path, baseline_path: str | Path) -> int:
    """Print the comparison table; 1 when anything regressed, else 0."""
    from tabulate import tabulate

    baseline = load_baseline(baseline_path)
    rows = compare(load_checked(results_dir), baseline)
    for path, why in sorted(damaged_files(results_dir).items()):
        rows.append({"run": path.name, "figure": "result file", "baseline": "", "current": "damaged", "change": "",
                     "tolerance": "", "verdict": WORSE, "note": why})
    print(tabulate([list(r.values()) for r in rows], list(rows[0].keys()) if rows else [], tablefmt="simple",
                   disable_numparse=True))
    bad = [r for r in rows if r["verdict"] == WORSE]
    unmatched = [r for r in rows if r["verdict"] == INFO]
    if unmatched:
        print(f"\n{len(unmatched)} row(s) not compared (missing from one side, or constant in every run): "
              "reported, not failures.")
    if bad:
        print(f"\nREGRESSION against {baseline_path}:")
        for r in bad:
            print(f"  {r['run']}: {r['figure']} {r['baseline']} -> {r['current']} ({r['change']})")
        return 1
    print(f"\nno regression against {baseline_path}")
    return 0
