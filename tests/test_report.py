"""The report: golden file from committed fixtures, format rules, write decisions, runner integration.

    pytest tests/test_report.py -q
    # after an intended format change, re-bless the golden file:
    python -c "import sys; sys.path.insert(0, 'tests'); import test_report; test_report.bless()"
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
from pathlib import Path

import pytest
from report_fixtures import FOLDER, all_results, make, write

from disha_bench.analysis import compare, measures, report
from disha_bench.cli import report as report_command
from disha_bench.config.suite import load_suite
from disha_bench.contracts.results import FAILED, read_result
from disha_bench.core.errors import UserError
from disha_bench.core.io import write_json_atomic
from disha_bench.running import runner

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "report-synth.expected.md"
GOLDEN_COMMAND = "disha-bench report tests/fixtures/report-synth --out reports/synth.md"


def _golden(out: Path) -> str:
    return report.write_report(FOLDER, out, GOLDEN_COMMAND, draw=False).read_text()


def bless() -> None:
    import tempfile

    GOLDEN.write_text(_golden(Path(tempfile.mkdtemp()) / "synth.md"))


def test_golden_report_from_committed_fixtures(tmp_path):
    assert _golden(tmp_path / "synth.md") == GOLDEN.read_text(), "format changed: re-bless (see the module docstring)"


def test_fixtures_on_disk_are_what_the_constructor_makes(tmp_path):
    # Compared as results (fields the schema gained since are filled with their defaults on both sides).
    stored = {p.name: read_result(p).to_dict() for p in FOLDER.glob("*.json")}
    assert stored == {f"{r.run.run_id}.json": r.to_dict() for r in all_results()}


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "synth.md"
    report.write_report(FOLDER, out, "x")
    return out


def _tables(text: str) -> list[list[str]]:
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def test_headline_first_short_rows_and_reference_rows(md):
    text = md.read_text()
    assert text.index("## Headline") < text.index("## Findings") < text.index("## Details")
    headline, cost = _tables(text)[:2]
    for table in (headline, cost):
        assert len(table[0].strip("|").split("|")) <= 8
        assert all(len(re.sub(r"\s*\|\s*", "|", row)) <= 160 for row in table)
    assert any(row.startswith("| *unadapted model* | 50.0 |") for row in headline)
    assert any(row.startswith("| *majority class* | 56.2 |") for row in headline)
    assert "| lora (reference) | 75.0 (n=2) |" in text  # one failed seed: n shown where it differs
    assert "**" not in "\n".join(headline + cost)  # no bold, ties or not


def test_markers_only_on_significant_family_comparisons(md):
    analyses = compare.analyze_suite(measures.load_checked(FOLDER))
    for a in analyses:
        for (label, key), c in a.comparisons.items():
            assert c.verdict is None or key in a.family + a.cost_family  # descriptive rows get no verdict
            if c.p_holm is None:
                assert not c.significant and c.verdict in (None, "not resolved")
    text = md.read_text()
    details = text[text.index("## Details"):]
    marked = [l for l in details.splitlines() if "▲" in l or "▼" in l]
    assert marked and all("◆" in l or "◇" in l for l in marked)  # only the two declared families carry markers


def test_tiny_eval_sets_as_counts_censoring_and_status_rows(md):
    text = md.read_text()
    assert "| bone | accuracy | higher | 39/48 [" in text  # pooled over 3 seeds x 16 examples, Wilson
    assert "evaluation_failed | curve and costs; no metrics" in text and "| stopped_by_budget |" in text
    assert "| failed | nothing | worker exited with code -9 |" in text
    assert "| *unadapted model* | held-out loss at step 0 | lower | 2.04 |" in text


def test_intervals_never_leave_their_domain(tmp_path):
    report.write_report(FOLDER, tmp_path / "d.md", "x", draw=False)
    rows = list(csv.DictReader((tmp_path / "d.csv").open()))
    assert {r["task"] for r in rows} == {"synth-cls", "synth-gen"}
    assert {r["method"] for r in rows if not r["n"]} == {"unadapted model", "majority class"}
    for r in rows:
        if r["ci_low"]:
            lo, hi = float(r["ci_low"]), float(r["ci_high"])
            assert lo <= float(r["mean"]) <= hi
            if r["metric"] == "accuracy":
                assert 0 <= lo and hi <= 1
            else:
                assert lo >= 0  # losses, memory, time, throughput, steps


def test_missed_and_invalid_targets(tmp_path):
    # 0.3 is below every curve: never reached (">budget", 0/n); 5.0 is above the step-0 loss: invalid.
    out = report.write_report(FOLDER, tmp_path / "t.md", "x", targets=[0.3, 5.0], draw=False).read_text()
    assert "| >20 (median) |" in out and "| 0/3 |" in out
    assert "(3 invalid)" in out
    assert "steps to target (k/n)" in out and ">" in out.split("## Findings")[0]


def test_mixed_provenance_is_flagged_and_rows_marked(md):
    text = md.read_text()
    assert text.splitlines()[1].startswith("> **Mixed provenance:** rows come from 2 commits")
    assert "† 0ddba11999@ci-box (1 runs)" in text
    assert "| bat† @ synth-gen |" in text
    # The reproducing command is the full suite run, not the partial --only --fresh re-run.
    assert "- Reproduce: `disha-bench run suites/synth.yaml`" in text


def test_findings_and_claims_are_generated(md):
    text = md.read_text()
    findings = text[text.index("## Findings"):text.index("## The paper's claims")]
    assert ("bone's held-out loss at budget is 0.34 [0.18, 0.49] lower than lora's on synth-gen (n=3 seeds, primary family, "
            "Holm-adjusted p = 0.011, margin 0.01)") in findings.replace("\n  ", " ")
    claims = text[text.index("## The paper's claims"):text.index("## Details")]
    assert claims.count("\n1. ") == 1 and "   - not resolved on synth-gen (peak memory bone/lora 0.803×" in claims
    assert "margin 3.4%: holds; training time" in claims.replace("\n     ", " ")  # memory and time decided apart
    assert "margin 6.25 pp" in claims  # a proportion's margin is at least one example of 16
    assert "Protocol: one shared learning rate (0.001), as the paper" in findings


def test_plots_and_csv_beside_the_markdown(md):
    for name in ("synth-forest.png", "synth-synth-cls-heldout.png", "synth-synth-gen-pareto.png"):
        assert f"]({name})" in md.read_text()
        assert (md.parent / name).stat().st_size > 1000
    assert (md.parent / "synth.csv").read_text().startswith("task,method,metric,direction,mean")


def test_a_report_is_not_replaced_by_one_from_fewer_complete_runs(tmp_path, capsys):
    out = tmp_path / "r.md"
    assert report.write_report(FOLDER, out, "x", draw=False)
    before = out.read_text()
    fewer = write(tmp_path / "fewer", [r for r in all_results() if r.run.seed != 2])
    assert report.write_report(fewer, out, "x", draw=False) is None
    assert out.read_text() == before and "kept" in capsys.readouterr().out
    assert report.write_report(fewer, out, "x", draw=False, force=True) == out
    assert out.read_text() != before


def _failed_results(folder: Path) -> Path:
    for r in all_results():
        r.run.status, r.run.error = FAILED, "no data"
        write_json_atomic(folder / f"{r.run.run_id}.json", r.to_dict())
    return folder


def test_runner_never_touches_reports_except_for_a_full_default_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The smoke suite keeps no leaderboard (output.leaderboard: false, so that the quick start leaves a
    # checkout clean); as a suite that keeps one it shows the rules.
    suite, _ = load_suite(str(ROOT / "suites" / "smoke.yaml"), ["output.leaderboard=true"])
    committed = tmp_path / "reports" / "smoke.md"
    committed.parent.mkdir()
    committed.write_text("<!-- disha-bench report: 6 complete runs of 6 -->\nthe committed leaderboard\n")
    scratch = shutil.copytree(FOLDER, tmp_path / "scratch")
    assert runner._write_report(suite, scratch, "c", full_run=True) == scratch / "smoke.md"  # scratch --out
    default = shutil.copytree(FOLDER, tmp_path / "results" / "smoke")
    assert runner._write_report(suite, default, "c", full_run=False) == default / "smoke.md"  # --only
    failing = _failed_results(tmp_path / "results" / "smoke-failed")
    assert runner._write_report(suite, failing, "c", full_run=True) == failing / "smoke.md"
    assert committed.read_text().endswith("the committed leaderboard\n")
    assert sorted(p.name for p in committed.parent.iterdir()) == ["smoke.md"]
    # Every run of a full default run failing: the committed report is kept.
    shutil.rmtree(default)
    _failed_results(default)
    assert runner._write_report(suite, default, "c", full_run=True) is None
    assert committed.read_text().endswith("the committed leaderboard\n")
    # A full default run with more complete runs replaces it, with its CSV beside it.
    shutil.rmtree(default)
    shutil.copytree(FOLDER, default)
    assert runner._write_report(suite, default, "c", full_run=True) == Path("reports/smoke.md")
    assert (tmp_path / "reports" / "smoke.csv").exists()


def test_cli_and_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    report_command.register(parser.add_subparsers())
    args = parser.parse_args(["report", str(FOLDER), "--reference", "bone", "--target", "frac:0.5:bone"])
    assert args.func(args) == 0
    text = (tmp_path / "reports" / "synth.md").read_text()
    assert "Reference method: bone" in text and "frac:0.5:bone" in text
    with pytest.raises(UserError, match="expected a loss"):
        report.write_report(FOLDER, tmp_path / "x.md", targets=["last:lora"])
    with pytest.raises(UserError, match="not found"):
        report.write_report(tmp_path / "missing", tmp_path / "x.md")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.json").write_text("{not json")
    with pytest.raises(UserError, match="none of the 1 .json files"):
        report.write_report(tmp_path / "junk", tmp_path / "x.md")


def test_an_older_run_of_the_same_seed_is_set_aside_and_said(tmp_path):
    runs = all_results()
    older = make("synth-gen", "bone", 0)
    older.run.run_id, older.run.finished_at = "synth-gen-bone-s0-11112222", "2026-11-01T00:00:00+00:00"
    for p in older.heldout.points:
        p.loss += 5.0  # would wreck bone's figures if it were averaged in
    text = report.write_report(write(tmp_path / "dup", runs + [older]), tmp_path / "d.md", "x", draw=False).read_text()
    assert "> **1 runs set aside**" in text and "synth-gen-bone-s0-11112222 set aside" in text
    golden = GOLDEN.read_text()
    assert text[text.index("## Headline"):] == golden[golden.index("## Headline"):]


def test_results_without_heldout_curves_still_report(tmp_path):
    # Results written before schema v2 (no held-out curve, training peak only): no target figures, no crash.
    old = []
    for r in all_results()[:7]:
        r.heldout = None
        if r.memory:
            r.memory.peak_mb, r.memory.per_rank_peak_mb, r.memory.train_peak_mb = None, [], 500.0
        old.append(r)
    text = report.write_report(write(tmp_path / "old", old), tmp_path / "o.md", "x", draw=False).read_text()
    assert "unresolved" in text and "500 MB" in text


@pytest.mark.parametrize("shift, n_examples, verdict", [
    # Shifts vary a little by seed: identical ones have no spread and get only the sign test (issue 21).
    ([0.001, 0.002, 0.0015], 1_000_000, "holds"), ([-0.05, -0.06, -0.055], 1_000_000, "does not hold"),
    ([-0.004, -0.005, -0.0045], 1_000_000, "holds"),  # below 0 but inside the margin: matches, not "does not hold"
    ([0.1, -0.1, 0.0], 1_000_000, "not resolved"),
    ([0.0] * 3, 16, "not resolved"),  # equal in every seed, but 16 examples cannot show a 1 pp match
])
def test_matches_only_within_the_equivalence_margin(shift, n_examples, verdict):
    from disha_bench.analysis import findings

    runs = [make("synth-cls", m, s) for m in ("lora", "bone", "bat") for s in (0, 1, 2)]
    for r in runs:
        base = 0.80 + 0.01 * r.run.seed
        r.evaluation["accuracy"] = base + (shift[r.run.seed] if r.run.method == "bat" else 0.0)
        r.evaluation["n_examples"] = n_examples
    lines = findings.claims(compare.analyze_suite(runs))
    claim2 = lines[lines.index(next(l for l in lines if l.startswith("2."))) + 1]
    assert claim2.startswith(f"   - {verdict} on synth-cls"), claim2


def test_number_formats():
    from disha_bench.analysis import report_format as fmt

    assert fmt.mean_ci(0.8123, 0.7801, 0.8444, "%") == "81.2 [78.0, 84.4]"  # half-width 3.2: 2 significant digits
    assert fmt.mean_ci(1.23456, 1.2301, 1.2390) == "1.2346 [1.2301, 1.2390]"
    assert fmt.mean_ci(1500.0, 1400.0, 1600.0, "MB") == "1.46 [1.37, 1.56] GB"
    assert fmt.mean_ci(0.75, 0.75, 0.75, "%") == "75.0 (no spread)"
    assert fmt.memory(512.0) == "512 MB" and fmt.memory(2048.0) == "2.00 GB"
    assert fmt.ratio(0.553, 0.41, 0.742) == "0.55× [0.41, 0.74]"
    assert fmt.ratio(5.26, 6.1e-18, 4.1e18) == "5.26× [<0.01, >100]"  # two seeds: the interval says "unknown"
    assert fmt.difference(0.05, 0.01, 0.09, "%") == "+5.0 [+1.0, +9.0] pp"
    assert fmt.counts(3, 48, 0.0215, 0.168) == "3/48 [2.1, 16.8]%"
    assert fmt.censored(None, True, 30, "steps") == ">30" and fmt.censored(12.4, False, 30, "steps") == "12"
    assert fmt.params(24576) == "24.6K" and fmt.params(7_000_000) == "7.00M"


def test_headline_of_a_glue_sized_suite_stays_within_160_characters(tmp_path):
    runs = []
    for task in ("sst2", "mrpc", "cola", "qnli", "stsb"):
        for label, like in (("lora", "lora"), ("pissa", "bone"), ("dora", "lora"), ("bone", "bone"), ("bat", "bat")):
            for seed in (0, 1, 2):
                r = make("synth-cls", like, seed)
                r.run.task, r.run.method, r.run.run_id = task, label, f"{task}-{label}-s{seed}-0000abcd"
                runs.append(r)
    text = report.write_report(write(tmp_path / "glue", runs), tmp_path / "g.md", "x", draw=False).read_text()
    headline, cost = _tables(text)[:2]
    assert headline[0].count("|") - 1 == 7  # method, 5 tasks, average
    assert all(len(re.sub(r"\s*\|\s*", "|", row)) <= 160 for row in headline + cost)


def test_suite_margins_reach_the_verdicts(tmp_path):
    from disha_bench.config.expansion import expand_runs

    # The suite's analysis.margins travel with every run (not into its id) and decide its verdicts.
    wide, _ = load_suite(str(ROOT / "suites" / "smoke.yaml"), ["analysis.margins.heldout_loss=5"])
    default, _ = load_suite(str(ROOT / "suites" / "smoke.yaml"))
    assert [r.run_id for r in expand_runs(default)] == [r.run_id for r in expand_runs(wide)]
    recorded = expand_runs(wide)[0].analysis.margins
    assert recorded["heldout_loss"] == 5 and recorded["memory"] == 0.03
    runs = [r for r in all_results() if r.run.task == "synth-gen"]
    before = compare.analyze_suite(runs)[0]
    assert before.comparisons[("bone", "heldout_final")].verdict == "better"
    for r in runs:
        r.run.analysis = {**r.run.analysis, "margins": recorded}
    after = compare.analyze_suite(runs)[0]
    assert after.margins["heldout_loss"] == 5
    assert after.comparisons[("bone", "heldout_final")].verdict == "matches"  # 0.34 lower, well inside ±5


def test_pareto_does_not_rank_costs_within_noise():
    """Issue 25: every method's CPU peak lay within 1 MB of 759 MB, the axis spanned that megabyte and
    Bone looked lighter. Such a cost is drawn as a tie, with a note; real differences keep their front."""
    from disha_bench.analysis import plots

    results = [make("synth-cls", m, s) for m in ("lora", "bone", "bat") for s in (0, 1, 2)]
    apart = compare.analyze_suite(results, "lora", [], 0.8)[0]
    fig, drawn = plots.pareto_figure(apart)
    memory_axis = fig.axes[0]
    assert drawn and not [t for t in memory_axis.texts if "within noise" in t.get_text()]
    for i, r in enumerate(results):
        r.memory.peak_mb = r.memory.per_rank_peak_mb[0] = 759.0 + 0.1 * (i % 4)
    close = compare.analyze_suite(results, "lora", [], 0.8)[0]
    fig, drawn = plots.pareto_figure(close)
    memory_axis = fig.axes[0]
    (note,) = [t.get_text() for t in memory_axis.texts if "within noise" in t.get_text()]
    assert note.startswith("all methods within ") and " MB " in note
    low, high = memory_axis.get_xlim()
    assert high - low > 50  # not stretched over a fraction of a megabyte
    assert len(memory_axis.lines) == len([line for line in memory_axis.lines if line.get_linestyle() != "--"])


def test_the_suite_description_kept_beside_the_results_heads_the_report(tmp_path):
    folder = write(tmp_path / "results", all_results())
    out = tmp_path / "r.md"
    header = "- Suite: Two tasks, three methods (its file as run: `suite.yaml` beside the raw results)"
    report.write_report(folder, out, "x", draw=False)
    assert "- Suite:" not in out.read_text()
    (folder / "suite.yaml").write_text(f"name: {all_results()[0].run.suite}\ndescription: >-\n  Two tasks,\n  three methods\n")
    report.write_report(folder, out, "x", draw=False, force=True)
    assert header in out.read_text().splitlines()
    for not_this_suite in ("name: another\ndescription: Two tasks, three methods\n", "name: [unclosed\n", ""):
        (folder / "suite.yaml").write_text(not_this_suite)
        report.write_report(folder, out, "x", draw=False, force=True)
        assert "- Suite:" not in out.read_text(), not_this_suite
