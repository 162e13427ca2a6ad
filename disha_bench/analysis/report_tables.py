"""The report's tables: headline (primary metric per task, costs), details per task, and their rows.

    python -c "from disha_bench.analysis import compare, measures, report_tables; print('\\n'.join(report_tables.headline(compare.analyze_suite(measures.load_checked('results/smoke')), {})))"

Rules: cells unpadded; a marker only on a decided verdict (better/worse: adjusted interval clear of
no difference and the estimate beyond the margin) of a comparison with the reference; no bold; number format from disha_bench.analysis.report_format; `detail_rows` also feeds the CSV.
"""

from __future__ import annotations

from disha_bench.analysis import compare as an
from disha_bench.analysis import measures, stats
from disha_bench.analysis import report_format as fmt
from disha_bench.analysis.compare import TaskAnalysis

TINY_EVAL = 100
"""Evaluation sets smaller than this show proportions as pooled counts with a Wilson interval (3/48)."""
MARKER_LEGEND = ("▲/▼: better/worse than the reference, paired by seed: Holm-adjusted interval clear of no difference "
                 "and the estimate beyond the margin")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub table with cells unpadded (rows stay short)."""
    esc = [[str(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in [header, *rows]]
    return ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in esc[1:])]


def _marker(c: stats.Paired | None, better: str | None) -> str:
    if c is None or c.verdict not in ("better", "worse") or c.estimate is None or better is None:
        return ""
    up = c.estimate > (1.0 if c.ratio else 0.0)
    return " ▲" if up == (better == "high") else " ▼"


def _mean(a: TaskAnalysis, label: str, key: str) -> dict:
    e = a.endpoint(key)
    return stats.aggregate(a.methods[label].values.get(key, {}).values(), domain=e.domain if e else stats.UNBOUNDED)


def _mark(a: TaskAnalysis, label: str, marks: dict[str, str]) -> str:
    """The provenance marks of a method's runs on one task ('' when all come from the main provenance)."""
    found = {marks.get(measures.provenance(r), "") for r in a.methods[label].runs} if label in a.methods else set()
    return "".join(sorted(m for m in found if m))


def headline(analyses: list[TaskAnalysis], marks: dict[str, str]) -> list[str]:
    labels = list(dict.fromkeys(l for a in analyses for l in a.methods))
    tasks = [a for a in analyses if a.primary]
    average = len(tasks) > 1 and len({a.known_endpoint(f"metric:{a.primary}").unit for a in tasks}) == 1
    header = ["method"] + [f"{a.task} ({a.primary})" for a in tasks] + (["average"] if average else [])
    rows, n_max = [], max((len(f.values.get(f"metric:{a.primary}", {})) for a in tasks for f in a.methods.values()), default=0)
    for label in labels:
        cells, means = [], []
        for a in tasks:
            key = f"metric:{a.primary}"
            if label not in a.methods:
                cells.append(fmt.DASH)
                continue
            e = a.known_endpoint(key)
            agg = _mean(a, label, key)
            means.append(agg["mean"])
            n_note = f" (n={agg['n']})" if agg["mean"] is not None and agg["n"] < n_max else ""
            cells.append(fmt.plain(agg["mean"], e.unit) + _marker(a.comparisons.get((label, key)), e.better) + n_note
                         + _mark(a, label, marks))
        if average:
            unit = tasks[0].known_endpoint(f"metric:{tasks[0].primary}").unit
            ok = len(means) == len(tasks) and None not in means
            cells.append(fmt.plain(sum(means) / len(means), unit) if ok else fmt.DASH)
        name = label + (" (reference)" if any(a.reference == label for a in analyses) else "")
        rows.append([name] + cells)
    for ref_row in ("unadapted model", "majority class"):
        cells = [fmt.plain(a.reference_rows.get(ref_row, {}).get(f"metric:{a.primary}"),
                           a.known_endpoint(f"metric:{a.primary}").unit) for a in tasks]
        if any(c != fmt.DASH for c in cells):
            rows.append([f"*{ref_row}*"] + cells + ([fmt.DASH] if average else []))
    units = {a.known_endpoint(f"metric:{a.primary}").unit for a in tasks}
    note = (f"Mean over n={n_max} seeds per cell (fewer where shown){'; proportions in %' if '%' in units else ''}. "
            f"{MARKER_LEGEND}.")
    return _table(header, rows) + ["", note] if tasks else ["(No task recorded a primary metric.)"]


def _cost_cells(a: TaskAnalysis, label: str, key: str) -> tuple[str, str]:
    """(absolute, ratio to the reference with marker) for one cost figure of one task."""
    figures = a.methods[label]
    if key.startswith("steps_to_target"):
        s = figures.reached.get(key, {})
        absolute = (fmt.censored(s.get("median"), bool(s.get("censored")), s.get("budget"), "steps") +
                    f" ({s.get('reached', 0)}/{s.get('n', 0)})") if s.get("n") else fmt.DASH
    else:
        absolute = fmt.plain(_mean(a, label, key)["mean"], a.known_endpoint(key).unit)
    if label == a.reference:
        return absolute, "1×" if absolute != fmt.DASH else fmt.DASH
    c = a.comparisons.get((label, key))
    return absolute, (fmt.ratio(c.estimate) + _marker(c, a.known_endpoint(key).better)) if c and c.estimate is not None else fmt.DASH


def cost_table(analyses: list[TaskAnalysis], marks: dict[str, str]) -> list[str]:
    """One row per method (per task when the suite has several), reference ratios beside each figure."""
    header = ["method", "params", "peak mem", "×ref", "tokens/s", "×ref", "steps to target (k/n)", "×ref"]
    rows = []
    for a in analyses:
        for label in a.methods:
            name = label + _mark(a, label, marks) + (f" @ {a.task}" if len(analyses) > 1 else "")
            cells = [fmt.plain(_mean(a, label, "params")["mean"], "params")]
            for key in ("peak_mb", "tokens_per_s", "steps_to_target:0"):
                cells += list(_cost_cells(a, label, key))
            rows.append([name] + cells)
    target = analyses[0].targets[0][0] if analyses and analyses[0].targets else fmt.DASH
    old = any(not measures.memory_is_absolute(r) for a in analyses for f in a.methods.values() for r in f.runs if r.memory)
    note = ("Peak memory: absolute peak of the run, maximum over ranks" +
            (" (results before schema v2: the training peak above the start-up baseline)" if old else "") +
            f". Steps to target: median of the first held-out point by which each seed reached the first target ({target}) "
            "and stayed below it, `>N` when fewer than half the seeds reach it; ×ref: paired geometric mean ratio to the "
            "reference (steps: interval-censored, the midpoint of each seed's crossing interval).")
    return _table(header, rows) + ["", note + " " + repeatability_note(analyses)]


def repeatability_note(analyses: list[TaskAnalysis]) -> str:
    """Where each cost figure comes from, with its repeatability (a cost difference must exceed it)."""
    parts = []
    for a in analyses:
        cells = [f"{(e.title if (e := a.endpoint(key)) else key)} {value:.1%} ({source})"
                 for key, (value, source) in a.repeatability.items()]
        if cells:
            parts.append(f"{a.task}: " + ", ".join(cells))
    return ("Repeatability of the cost figures (a cost difference is claimed only beyond it and the margin): "
            + "; ".join(parts) + ".") if parts else ""


def _per_seed(figures: an.MethodFigures, key: str, unit: str) -> str:
    values = figures.values.get(key, {})
    bounds = figures.bounds.get(key) if key.startswith(an.CONVERGENCE_KEYS) else None
    if bounds:  # interval-censored: where the crossing can lie
        return " ".join("miss" if b is None else fmt.plain(b[1], unit) if fmt.plain(b[0], unit) == fmt.plain(b[1], unit)
                        else f"{fmt.plain(b[0], unit)}-{fmt.plain(b[1], unit)}" for _, b in sorted(bounds.items()))
    return " ".join(f"{fmt.plain(v, unit) if v is not None else 'miss'}" for _, v in sorted(values.items())) or fmt.DASH


def detail_rows(a: TaskAnalysis) -> list[dict]:
    """Long format: one row per method x figure (also the CSV's rows)."""
    rows = []
    for label, figures in a.methods.items():
        for e in a.endpoints:
            values = figures.values.get(e.key)
            if not values:
                continue
            agg = stats.aggregate(values.values(), domain=e.domain)
            c = a.comparisons.get((label, e.key))
            reached = figures.reached.get(e.key)
            rows.append({"task": a.task, "method": label, "metric": e.title, "key": e.key,
                         "direction": e.direction_text(), "unit": e.unit,
                         "mean": agg["mean"], "ci_low": agg["ci_low"], "ci_high": agg["ci_high"], "n": agg["n"],
                         "per_seed": values, "reached": reached, "comparison": c,
                         "primary_endpoint": e.key in a.family, "cost_family": e.key in a.cost_family})
    return rows


def _mean_cell(row: dict, a: TaskAnalysis) -> str:
    if row["reached"]:
        s = row["reached"]
        return fmt.censored(s["median"], s["censored"], s["budget"], row["unit"]) + " (median)"
    scores = a.methods[row["method"]].examples.get(row["key"])
    if scores and set(scores) >= {s for s, v in row["per_seed"].items() if v is not None}:
        # Per-example outputs: the mean with a two-way bootstrap interval over seeds and examples
        # (not counts pooled over seeds, which would treat every seed's examples as new ones).
        c = stats.paired_examples({s: dict.fromkeys(v, 0.0) for s, v in scores.items()}, scores)
        low, high = stats.clip(c.ci_low, c.ci_high, a.known_endpoint(row["key"]).domain)
        return fmt.mean_ci(c.estimate, low, high, row["unit"]) + " (seeds x examples)"
    endpoint = a.endpoint(row["key"])
    n_examples = a.methods[row["method"]].n_examples if endpoint is not None and endpoint.count else None
    if n_examples and n_examples < TINY_EVAL:
        correct = [round(v * n_examples) for v in row["per_seed"].values() if v is not None]
        k, n = sum(correct), n_examples * len(correct)
        return fmt.counts(k, n, *stats.wilson(k, n))
    return fmt.mean_ci(row["mean"], row["ci_low"], row["ci_high"], row["unit"])


def _versus(row: dict) -> str:
    """The difference from the reference: with the family-adjusted interval where a verdict is decided,
    the plain 95% one elsewhere."""
    c = row["comparison"]
    if c is None:
        return ""
    if c.extra.get("censored"):
        return "censored"
    low, high = (c.adj_low, c.adj_high) if c.verdict is not None else (c.ci_low, c.ci_high)
    text = fmt.ratio(c.estimate, low, high) if c.ratio else fmt.difference(c.estimate, low, high, row["unit"])
    return text + _marker(c, "high" if row["direction"] == "higher" else "low" if row["direction"] else None)


def _decision(row: dict) -> tuple[str, str]:
    """(adjusted p, verdict) cells of a decided comparison."""
    c = row["comparison"]
    if c is None or c.verdict is None:
        return "", ""
    from disha_bench.analysis.verdicts import verdict_text

    return (fmt.DASH if c.p_holm is None else f"{c.p_holm:.2g}"), verdict_text(c)


def details(a: TaskAnalysis, marks: dict[str, str] | None = None) -> list[str]:
    rows = []
    for row in detail_rows(a):
        reached = f"{row['reached']['reached']}/{row['reached']['n']}" if row["reached"] else ""
        if row["reached"] and row["reached"]["invalid"]:
            reached += f" ({row['reached']['invalid']} invalid)"
        figure = row["metric"] + (" ◆" if row["primary_endpoint"] else " ◇" if row["cost_family"] else "")
        rows.append([row["method"] + _mark(a, row["method"], marks or {}), figure, row["direction"], _mean_cell(row, a),
                     _per_seed(a.methods[row["method"]], row["key"], row["unit"]), _versus(row), *_decision(row), reached])
    for name, values in a.reference_rows.items():
        for key, value in values.items():
            e = a.endpoint(key)
            if e is not None:
                title = "held-out loss at step 0" if key == "heldout_final" else e.title
                rows.append([f"*{name}*", title, e.direction_text(), fmt.plain(value, e.unit), "", "", "", "", ""])
    header = ["method", "figure", "better", "mean [95% CI]", "per seed", f"vs {a.reference or 'reference'}", "adj. p",
              "verdict", "reached"]
    return _table(header, rows)
