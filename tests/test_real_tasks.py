"""GLUE and GSM8K end to end on their real data at tiny size: train, classify or generate, score,
result and report, through the suite runner (HumanEval: tests/test_recipe.py).

    python -m pytest -q tests/test_real_tasks.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_recipe import _run

from disha_bench.contracts.results import COMPLETE, load_results

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("suite, metric, eval_limit", [
    pytest.param("glue-tiny", "accuracy", 16, marks=pytest.mark.needs_data("glue")),
    pytest.param("gsm8k-tiny", "exact_match_strict", 4, marks=pytest.mark.needs_data("gsm8k")),
])
def test_real_task_suite_runs_end_to_end(suite, metric, eval_limit, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("DISHA_BENCH_DATA", str(shared_data))
    out = tmp_path / suite
    code, printed = _run(ROOT / "suites" / f"{suite}.yaml", out)
    assert code == 0, printed[-4000:]
    results = load_results(out)
    assert sorted(r.run.method for r in results) == ["bone", "lora", "unadapted"]
    for r in results:
        assert r.run.status == COMPLETE, r.run.error
        assert r.evaluation["primary_metric"] == metric and 0.0 <= r.evaluation[metric] <= 1.0
        assert r.evaluation["n_examples"] == eval_limit
        assert r.heldout.points[0].step == 0
    report = (out / f"{suite}.md").read_text()
    assert "## Headline" in report and "## The paper's claims" in report
    assert (out / f"{suite}.csv").exists()
