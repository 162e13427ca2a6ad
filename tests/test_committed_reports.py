"""The committed leaderboards are what their committed raw results give, and stay inside their domains.

    python -m pytest -q tests/test_committed_reports.py

Every `reports/<suite>.md` with raw results in `reports/results/<suite>/` is regenerated here (without
plots) and compared with the committed markdown and CSV, so a report edited by hand, or left stale
after a format change, fails CI. Its intervals are then checked against their quantity's domain.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import pytest

from disha_bench import tasks
from disha_bench.analysis import report
from disha_bench.analysis.measures import provenance
from disha_bench.contracts.metrics import by_name
from disha_bench.contracts.results import COST_DIR, load_results

REPORTS = Path(__file__).resolve().parents[1] / "reports"
SUITES = sorted(p.stem for p in REPORTS.glob("*.md") if (REPORTS / "results" / p.stem).is_dir())
RAW_FOLDERS = sorted({p.parent for p in (REPORTS / "results").rglob("*.json") if p.parent.name != COST_DIR})
"""Every folder of committed raw results, those of suites still running across sessions included
(`reports/results/in-progress/<suite>/`, which have no report yet)."""


def _command(suite: str) -> str:
    return f"disha-bench report reports/results/{suite} --out reports/{suite}.md --force"


def _without_plots(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("![")]


def test_every_committed_cpu_report_has_its_raw_results():
    assert {"smoke", "nlu-cpu", "nlg-cpu"} <= set(SUITES)


@pytest.mark.parametrize("suite", SUITES)
def test_committed_report_is_regenerated_exactly_from_its_raw_results(suite, tmp_path, monkeypatch):
    monkeypatch.chdir(REPORTS.parent)  # read as the command reads it: the re-run's --out is this relative folder
    fresh = report.write_report(Path("reports/results") / suite, tmp_path / f"{suite}.md", _command(suite), draw=False)
    assert _without_plots(fresh.read_text()) == _without_plots((REPORTS / f"{suite}.md").read_text()), (
        f"reports/{suite}.md differs from what its results give: run `{_command(suite)}`")
    assert fresh.with_suffix(".csv").read_text() == (REPORTS / f"{suite}.csv").read_text()


def _domain(task: str, metric: str) -> tuple[float, float]:
    """A task metric's declared range (proportions [0, 1], correlations [-1, 1]); everything else a
    report shows (losses, memory, speed, time, steps, counts) is non-negative."""
    declared = by_name(tasks.REGISTRY.get(task).metrics).get(metric)
    return declared.domain if declared is not None else (0.0, math.inf)


@pytest.mark.parametrize("suite", SUITES)
def test_no_committed_interval_leaves_its_domain(suite):
    with open(REPORTS / f"{suite}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    for row in rows:
        low, high = _domain(row["task"], row["metric"])
        for key in ("mean", "ci_low", "ci_high"):
            if row[key]:
                assert low <= float(row[key]) <= high, (suite, row["task"], row["method"], row["metric"], key, row[key])
        if (low, high) == (0.0, 1.0):  # a difference of two proportions
            for key in ("vs_low", "vs_high"):
                if row[key]:
                    assert -1.0 <= float(row[key]) <= 1.0, (suite, row["task"], row["method"], row["metric"], key)
        if row["significant"] == "True":
            assert float(row["p_holm"]) < 0.05


@pytest.mark.parametrize("folder", RAW_FOLDERS, ids=lambda p: str(p.relative_to(REPORTS / "results")))
def test_each_seed_of_committed_results_ran_from_one_clean_commit_on_one_machine(folder):
    """A seed's methods are compared with each other (paired), costs included, so each seed must come
    from one commit without local changes and one machine, even when a suite spans sessions."""
    by_seed: dict[int, set[str]] = defaultdict(set)
    for result in load_results(folder):
        assert result.meta is not None and result.meta.git_dirty is False, (folder, result.run.run_id)
        by_seed[result.run.seed].add(provenance(result))
    assert by_seed
    assert {seed: origins for seed, origins in by_seed.items() if len(origins) > 1} == {}, folder
