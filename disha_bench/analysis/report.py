"""The report of a results folder: headline tables first, findings, claims, then details per task.

    disha-bench report results/nlu-cpu --out reports/nlu-cpu.md     # + reports/nlu-cpu.csv and PNGs
    disha-bench report results/smoke --target frac:0.5:lora --reference lora

Layout: a headline (method x task table of each task's primary metric; a compact cost table:
trainable params, peak memory, tokens/s, training time to target, each with its ratio to the
reference), findings generated from the comparisons that hold after Holm's correction, one line per
claim of the paper, then per task a long-format table (metric, direction, mean, 95% interval,
per-seed values, difference from the reference, reached k/n) and plots. Statistics:
disha_bench.analysis.stats; comparisons: disha_bench.analysis.compare; number format:
disha_bench.analysis.report_format.

A report is never replaced by one built from fewer complete runs unless `--force` is given: the
first line of every report records its count of complete runs.
"""

from __future__ import annotations

import csv
import io
import math
import re
import shlex
import statistics
import textwrap
from collections import Counter
from pathlib import Path

from disha_bench.analysis import compare as an
from disha_bench.analysis import findings, measures, plots, report_tables, sweep, verdicts
from disha_bench.analysis import report_format as fmt
from disha_bench.analysis.compare import TaskAnalysis
from disha_bench.analysis.measures import load_checked
from disha_bench.config.targets import DEFAULT_EMA
from disha_bench.contracts.results import BUDGET_STOPPED, COMPLETE, DIVERGED, EVAL_FAILED, FAILED, SUITE_FILE, RunResult
from disha_bench.core.errors import UserError, ensure_writable
from disha_bench.core.io import atomic_write_text

_STAMP = re.compile(r"<!-- disha-bench report: (\d+) complete runs")


def _check_labels(results: list[RunResult], reference: str | None, targets: list[str]) -> None:
    """--reference and --target name methods of these results (a typo would silently compare nothing)."""
    from disha_bench.config.targets import WORST, parse_target
    from disha_bench.core.errors import did_you_mean

    labels = sorted({r.run.method for r in results})
    if reference is not None and reference not in labels:
        raise UserError(f"no method labelled '{reference}' in these results; {did_you_mean(reference, labels)}",
                        key="--reference")
    for spec in targets:
        label = parse_target(spec, key="--target").label
        if label is not None and label != WORST and label not in labels:
            raise UserError(f"target {spec!r}: no method labelled '{label}' in these results; "
                            f"{did_you_mean(label, labels)}", key="--target")


def settings_from(results: list[RunResult], targets: list | None, ema: float | None) -> tuple[list, float]:
    """Targets and EMA factor: explicit arguments, else what the runs recorded, else defaults."""
    from disha_bench.config.targets import parse_target

    for r in results:
        if targets is None and (r.run.analysis or {}).get("targets"):
            targets = list(r.run.analysis["targets"])
        beta = ((r.convergence or {}).get("definitions") or {}).get("ema", {}).get("beta")
        if ema is None and beta is not None:
            ema = beta
    for spec in targets or []:
        parse_target(spec, key="--target")
    ema = DEFAULT_EMA if ema is None else float(ema)
    if not 0 <= ema < 1:
        raise UserError(f"ema must be in [0, 1), got {ema}", key="--ema")
    return list(targets or []), ema


# ---------------------------------------------------------------------------------------------
# Provenance


def _reproducing_command(results: list[RunResult], results_dir: Path | None = None) -> str:
    """The suite command that re-runs everything: the most common recorded one without --only / --fresh.
    Its --out is the folder the report reads when that is a relative path (a re-run writes where the
    report looks); an absolute --out of the machine that ran it is dropped."""
    commands = Counter(r.meta.command for r in results if r.meta.command)
    if not commands:
        return fmt.DASH
    words = [part for w in shlex.split(commands.most_common(1)[0][0])
             for part in (w.split("=", 1) if w.startswith("--") else [w])]
    kept: list[str] = []
    recorded_out = None
    arguments = iter(words)
    for w in arguments:
        if w in ("--only", "--out"):
            value = next(arguments, "")
            if w == "--out" and not Path(value).is_absolute():
                recorded_out = value
        elif w != "--fresh":
            kept.append(w)
    out = str(results_dir) if results_dir and not Path(results_dir).is_absolute() else recorded_out
    return shlex.join(kept + (["--out", out] if out else []))


def provenance_marks(results: list[RunResult]) -> tuple[dict[str, str], list[str]]:
    """{provenance: mark} ('' for the most common one) and warning lines for the top of the report."""
    counts = Counter(measures.provenance(r) for r in results)
    ordered = [p for p, _ in counts.most_common()]
    marks = {p: ("" if i == 0 else "†" * i) for i, p in enumerate(ordered)}
    warnings = []
    commits = {(r.meta.git_commit or "unknown") for r in results}
    machines = {measures.provenance(r).split("@", 1)[1] for r in results}
    if len(commits) > 1:
        warnings.append(f"rows come from {len(commits)} commits")
    if any(r.meta.git_dirty for r in results):
        warnings.append("some runs were made from a checkout with uncommitted changes (+dirty)")
    if len(machines) > 1:
        warnings.append(f"rows come from {len(machines)} machines (memory and throughput compare only within one)")
    lines = []
    if warnings:
        lines = [f"> **Mixed provenance:** {'; '.join(warnings)}."]
        if len(marks) > 1:
            lines[0] += " Rows marked † come from:"
            lines += [f"> {m or '(unmarked)'} {p} ({counts[p]} runs)" + "  " for p, m in marks.items()]
    return marks, lines


def suite_description(results_dir: Path, suite: str) -> str | None:
    """The description in the suite file kept beside the results (None: no such file, none in it, or
    the file is another suite's)."""
    import yaml

    try:
        raw = yaml.safe_load((Path(results_dir) / SUITE_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(raw, dict) or raw.get("name") != suite:
        return None
    description = raw.get("description")
    return " ".join(description.split()).rstrip(".") if isinstance(description, str) and description.strip() else None


def _header(suite: str, results: list[RunResult], command: str, analyses: list[TaskAnalysis],
            results_dir: Path | None = None) -> list[str]:
    statuses = Counter(r.run.status for r in results)
    seeds = sorted({r.run.seed for r in results})
    generated = max((r.run.finished_at for r in results if r.run.finished_at), default="")
    versions = Counter(", ".join(f"{k} {v}" for k, v in r.meta.versions.items()) for r in results if r.meta.versions)
    reference = next((a.reference for a in analyses if a.reference), None)
    provenances = Counter(measures.provenance(r) for r in results)
    description = suite_description(results_dir, suite) if results_dir else None
    return [
        f"# disha-bench report: {suite}", "",
        *([f"- Suite: {description} (its file as run: `{SUITE_FILE}` beside the raw results)"] if description else []),
        f"- Reproduce: `{_reproducing_command(results, results_dir)}`" + (
            "" if command.startswith("disha-bench run") else f", then `{command or 'disha-bench report RESULTS_DIR'}`"),
        f"- Runs: {len(results)} ({', '.join(f'{n} {s}' for s, n in statuses.items())}); seeds {seeds}; latest result {generated}",
        f"- Reference method: {reference or 'none (pass --reference)'}",
        _wall_clock(results),
        f"- Versions: {versions.most_common(1)[0][0] if versions else fmt.DASH}",
        "- Made from (commit@machine): " + ", ".join(f"{p} ({n} runs)" for p, n in provenances.most_common()),
    ]


def _wall_clock(results: list[RunResult]) -> str:
    """What the runs cost end to end (model loading, training, held-out curve, evaluation)."""
    times = sorted(r.run.wall_time_s for r in results if r.run.wall_time_s)
    if not times:
        return f"- Wall clock: {fmt.DASH}"
    median = statistics.median(times)
    return (f"- Wall clock: {sum(times) / 60:.0f} min for the {len(times)} runs, {median:.0f} s per run "
            f"(median; {times[0]:.0f}-{times[-1]:.0f} s), loading, training, held-out curve and evaluation included")


# ---------------------------------------------------------------------------------------------
# The document


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "task"


def _status_table(a: TaskAnalysis, results: list[RunResult]) -> list[str]:
    """Runs that did not complete, with what of them is used."""
    use = {BUDGET_STOPPED: "curve, costs and metrics (stopped early)", EVAL_FAILED: "curve and costs; no metrics",
           DIVERGED: "nothing", FAILED: "nothing"}
    bad = [r for r in results if r.run.task == a.task and r.run.status != COMPLETE]
    if not bad:
        return []
    rows = [[r.run.method, str(r.run.seed), r.run.status, use.get(r.run.status, ""), (r.run.error or fmt.DASH)[:120]]
            for r in sorted(bad, key=lambda r: (r.run.method, r.run.seed))]
    return ["", "Runs that did not complete:", ""] + report_tables._table(["method", "seed", "status", "used for", "error"], rows)


def build_document(results: list[RunResult], analyses: list[TaskAnalysis], suite: str, command: str,
                   out: Path | None, damaged: dict[Path, str] | None = None, results_dir: Path | None = None) -> list[str]:
    """The markdown lines; plots are written beside `out` when it is given. `damaged`: result files
    that could not be read ({path: why}), counted and named at the top; `results_dir`: the folder read
    (its suite file's description heads the report; re-runs write there)."""
    marks, warnings = provenance_marks(results)
    if damaged:
        warnings += [f"> **{len(damaged)} damaged result files, not used** (a re-run of the suite runs them again):"]
        warnings += [f"> {path.name}: {why}  " for path, why in sorted(damaged.items())]
    _, set_aside = an.latest_per_seed(results)
    if set_aside:
        warnings += [f"> **{len(set_aside)} runs set aside** (same task, method and seed as a newer run):"]
        warnings += [f"> {line}  " for line in set_aside[:10]] + ([f"> ... and {len(set_aside) - 10} more"] if len(set_aside) > 10 else [])
    complete = sum(r.run.status == COMPLETE for r in results)
    unreadable = f", {len(damaged)} damaged result files" if damaged else ""
    lines = [f"<!-- disha-bench report: {complete} complete runs of {len(results)}{unreadable}; regenerate, do not edit -->"]
    lines += warnings + ([""] if warnings else [])
    lines += _header(suite, results, command, analyses, results_dir)
    lines += ["", "## Headline", "", *report_tables.headline(analyses, marks), "",
              *report_tables.cost_table(analyses, marks), "", "## Findings", "", findings.protocol(sweep.at_shared_lr(results)), "",
              *findings.findings(analyses), "", "## The paper's claims", "", *findings.claims(analyses), "",
              *_rules(analyses), ""]
    if out is not None and plots.forest(analyses, out.parent / f"{out.stem}-forest.png"):
        lines += [f"![paired differences from the reference]({out.stem}-forest.png)", ""]
    lines += ["## Details", ""]
    for a in analyses:
        targets = ", ".join(f"{spec} = {fmt.sig3(v) if v is not None else 'unresolved'}" for spec, v in a.targets)
        table = report_tables.details(a, marks)
        lines += [f"### {a.task}", "", f"Held-out targets: {targets}. ◆ = primary family, ◇ = cost family (each "
                  "Holm-corrected; their 'vs' interval is the adjusted one); other rows: plain 95% intervals, no verdict.", ""]
        lines += (["<details><summary>all figures</summary>", ""] + table + ["", "</details>"]) if len(table) > 30 else table
        lines += _status_table(a, results)
        if out is not None:
            for kind, draw in (("heldout", plots.heldout), ("pareto", plots.pareto)):
                name = f"{out.stem}-{_slug(a.task)}-{kind}.png"
                if draw(a, out.parent / name):
                    lines += ["", f"![{a.task}: {kind}]({name})"]
        lines.append("")
    return lines


def _rules(analyses: list[TaskAnalysis]) -> list[str]:
    """How every verdict above was reached, and what these seeds could have detected."""
    margins = analyses[0].margins if analyses else verdicts.DEFAULT_MARGINS
    lines = [f"Verdicts: 'better'/'worse' need the Holm-adjusted interval clear of no difference and the estimate beyond "
             f"the margin (a cost's: beyond its repeatability too); 'matches' needs that interval inside ±margin; else "
             f"'not resolved'. Families per task: primary (held-out loss at budget, steps to the first target) and cost "
             f"(peak memory, tokens/s, training time); two methods other than the reference: a family of the claim's own "
             f"comparisons. Margins (suite `analysis.margins`): held-out loss {margins['heldout_loss']:g}, proportions the "
             f"larger of {margins['proportion'] * 100:g} pp and one example, other metrics {margins['metric']:g}, memory "
             f"{margins['memory']:.0%}, tokens/s {margins['speed']:.0%}, time {margins['time']:.0%}, steps to target "
             f"{margins['steps']:.0%}. A cost is known per run within its repeatability (the range of its repeated "
             f"measurements, else a single reading's re-run change) and compared as that interval; a cost verdict stands "
             f"only if moving any one run's reading by its repeatability leaves it unchanged. Steps to target: the first held-out point at or below the target whose next point "
             f"is too (a single dip does not count); the crossing lies after the previous point and is compared as that "
             f"interval (both extremes tested, the weaker counts), never interpolated."]
    mde = findings.minimum_detectable_lines(analyses)
    return lines + (["", "Minimum detectable effect of the primary comparisons:", *mde] if mde else [])


def _wrap(lines: list[str], width: int = 150) -> list[str]:
    """Prose lines wrapped (tables, images and comments are left as they are)."""
    out = []
    for line in lines:
        if len(line) <= width or line.startswith(("|", "!", "<")):
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip(" -0123456789.>")))
        prefix = "> " if line.startswith(">") else indent
        out += textwrap.wrap(line, width, subsequent_indent=prefix, break_long_words=False, break_on_hyphens=False)
    return out


def write_csv(path: Path, analyses: list[TaskAnalysis]) -> None:
    """One row per task x method x figure: mean, interval, n, per-seed values, reference comparison."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "method", "metric", "direction", "mean", "ci_low", "ci_high", "n", "per_seed", "reached",
                     "vs_reference", "vs_low", "vs_high", "p", "p_holm", "significant", "adj_low", "adj_high", "margin",
                     "verdict"])
    for a in analyses:
        for row in report_tables.detail_rows(a):
            c, reached = row["comparison"], row["reached"]
            writer.writerow([a.task, row["method"], row["metric"], row["direction"], _g(row["mean"]), _g(row["ci_low"]),
                             _g(row["ci_high"]), row["n"], ";".join(f"{s}:{_g(v)}" for s, v in sorted(row["per_seed"].items())),
                             f"{reached['reached']}/{reached['n']}" if reached else "",
                             _g(c.estimate) if c else "", _g(c.ci_low) if c else "", _g(c.ci_high) if c else "",
                             _g(c.p_value) if c else "", _g(c.p_holm) if c else "", (c.significant if c and c.p_holm is not None else ""),
                             _g(c.adj_low) if c else "", _g(c.adj_high) if c else "", _g(c.margin) if c else "",
                             verdicts.verdict_text(c) if c else ""])
        for name, values in a.reference_rows.items():  # unadapted model, majority class: one value each
            for key, value in values.items():
                e = a.endpoint(key)
                title = "held-out loss at step 0" if key == "heldout_final" else e.title if e else key
                writer.writerow([a.task, name, title, e.direction_text() if e else "", _g(value)] + [""] * 15)
    atomic_write_text(path, buffer.getvalue())


def _g(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.6g}"  # an unbounded interval end reads inf / -inf


def complete_runs_of(path: Path) -> int | None:
    """The complete-run count recorded on the first line of an existing report (None: no report)."""
    try:
        first = path.read_text().split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return None
    match = _STAMP.search(first)
    return int(match.group(1)) if match else 0


def write_report(results_dir: str | Path, out_path: str | Path | None = None, command: str = "",
                 targets: list | None = None, ema: float | None = None, reference: str | None = None,
                 force: bool = False, draw: bool = True) -> Path | None:
    """Write the report of `results_dir` (default reports/<suite>.md), its CSV and PNGs beside it.

    Returns None, writing nothing, when `out_path` holds a report of more complete runs (or this one
    has none) and `force` is not set.
    """
    results = load_checked(results_dir)
    specs, ema = settings_from(results, targets, ema)
    suites = [r.run.suite for r in results]
    suite = max(dict.fromkeys(suites), key=suites.count)
    out = Path(out_path) if out_path else Path("reports") / f"{_slug(suite)}.md"
    complete = sum(r.run.status == COMPLETE for r in results)
    existing = complete_runs_of(out)
    if not force and existing is not None and (complete == 0 or complete < existing):
        print(f"kept {out}: it was built from {existing} complete runs, these results have {complete} "
              f"(use `disha-bench report {results_dir} --out {out} --force` to replace it)", flush=True)
        return None
    swept = any(sweep.membership(r) for r in results)
    analyses = an.analyze_suite(sweep.at_shared_lr(results) if swept else results, reference, specs, ema)
    ensure_writable(out.parent, "report")
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = build_document(results, analyses, suite, command, out if draw else None, measures.damaged_files(results_dir),
                           Path(results_dir))
    if swept:
        lines += _sweep_lines(results, reference, specs, ema)
    write_csv(out.with_suffix(".csv"), analyses)
    atomic_write_text(out, "\n".join(_wrap(lines)).rstrip("\n") + "\n")
    print(f"wrote {out} and {out.with_suffix('.csv').name}", flush=True)
    return out


def _sweep_lines(results: list[RunResult], reference: str | None, specs: list, ema: float) -> list[str]:
    """The learning-rate sweep section: the choice per method, then the comparison at each one's best lr."""
    choices = sweep.choose(results)
    best = an.analyze_suite(sweep.at_best_lr(results, choices), reference, specs, ema)
    marks, _ = provenance_marks(results)
    at_best = [*report_tables.headline(best, marks), "", "Findings at the best lr:", "", *findings.findings(best), "",
               "The paper's claims at the best lr:", "", *findings.claims(best), ""]
    return ["", *sweep.section(choices, at_best)]


def destination(suite_name: str, results_dir: Path, full_run: bool) -> Path:
    """Where `disha-bench run` writes its report: the suite's leaderboard in reports/ only for a full
    run into the default results folder; beside the results for a scratch --out or an --only run."""
    default = Path("results") / suite_name
    if full_run and results_dir.resolve() == default.resolve():
        return Path("reports") / f"{suite_name}.md"
    return results_dir / f"{suite_name}.md"
