"""Verdicts of the committed reports: each reads off the adjusted interval beside it, and none moves
when one run's cost figures move by their measured repeatability.

    python -m pytest -q tests/test_verdict_stability.py
"""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import pytest

from disha_bench.analysis import compare, findings, verdicts
from disha_bench.contracts.results import load_results

REPORTS = Path(__file__).resolve().parents[1] / "reports"
SUITES = ("nlg-cpu", "nlu-cpu")


def _verdicts(results) -> tuple[dict, list[str]]:
    analyses = compare.analyze_suite(results)
    decided = {(a.task, label, key): c.verdict for a in analyses for (label, key), c in a.comparisons.items()}
    claims = [line.split(" (")[0] for line in findings.claims(analyses)]  # "   - holds on gsm8k"
    return decided, claims


def _move_costs(r, memory: float, speed: float) -> None:
    """One run's cost readings moved: peak memory x memory, tokens/s x speed (training time / speed)."""
    r.memory.peak_mb *= memory
    r.memory.per_rank_peak_mb = [v * memory for v in r.memory.per_rank_peak_mb]
    r.throughput.tokens_per_s *= speed
    r.throughput.train_time_s /= speed
    for point in r.heldout.points:
        point.train_time_s /= speed


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("direction", [1, -1])
def test_no_verdict_moves_when_one_run_moves_by_its_repeatability(suite, direction):
    results = load_results(REPORTS / "results" / suite)
    before = _verdicts(results)
    # v2 results carry single readings: moved by what a re-run of one of them moved (issue 21).
    memory = 1 + direction * verdicts.SINGLE_READING_REPEATABILITY["peak_mb"]
    speed = 1 + direction * verdicts.SINGLE_READING_REPEATABILITY["tokens_per_s"]
    tasks = sorted({r.run.task for r in results})
    for task in tasks:
        for method in sorted({r.run.method for r in results if r.run.task == task and r.run.method != "unadapted"}):
            moved = copy.deepcopy(results)
            target = next(r for r in moved if (r.run.task, r.run.method, r.run.seed) == (task, method, 0))
            _move_costs(target, memory, speed)
            assert _verdicts(moved) == before, (suite, task, method, direction)


@pytest.mark.parametrize("suite", SUITES)
def test_every_primary_row_shows_its_adjusted_interval_and_p_and_no_verdict_contradicts_it(suite):
    with open(REPORTS / f"{suite}.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["verdict"]]
    assert rows
    for row in rows:
        if not row["p_holm"]:  # untestable (a seed missed the target, fewer than 2 seeds): never decided
            assert row["verdict"] == "not resolved", row
            continue
        assert row["p_holm"] and row["adj_low"] and row["adj_high"] and row["margin"], row
        low, high, estimate, margin = (float(row[k]) for k in ("adj_low", "adj_high", "vs_reference", "margin"))
        ratio = "×" in row["metric"] or row["metric"].startswith(("peak memory", "tokens/s", "training time", "steps to",
                                                                   "tokens to", "time to", "wall-clock"))
        if ratio:
            low, high = (math.log(x) if x > 0 else -math.inf for x in (low, high))
            estimate, margin = math.log(estimate), math.log1p(margin)
        clear = low > 0 or high < 0
        assert clear == (float(row["p_holm"]) < 0.05), row  # the interval and the adjusted p agree
        if row["verdict"] in ("better", "worse"):
            assert clear and abs(estimate) > margin, row
            up = estimate > 0
            assert (up == (row["direction"] == "higher")) == (row["verdict"] == "better"), row
        elif row["verdict"] == "matches":
            assert -margin <= low and high <= margin, row
        elif "repeatability" not in row["verdict"]:  # a cost verdict one re-reading would flip is withheld
            assert not (clear and abs(estimate) > margin) and not (-margin <= low and high <= margin), row


@pytest.mark.parametrize("suite", SUITES)
def test_every_primary_row_of_the_markdown_carries_adjusted_p_and_verdict(suite):
    lines = (REPORTS / f"{suite}.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| method | figure |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[5:8] == ["vs lora", "adj. p", "verdict"]
    primary = [[c.strip() for c in line.strip("|").split("|")] for line in lines
               if line.startswith("| ") and "◆" in line and not line.startswith("| lora |")]
    assert primary
    for cells in primary:
        assert cells[7] in ("better", "worse", "matches", "not resolved"), cells
        assert cells[6] or cells[5] == "censored", cells  # the adjusted p beside every testable row
