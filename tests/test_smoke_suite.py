"""The smoke suite end to end, checked against the committed baseline (what CI runs on every change).

Runs in the test process so that the forked workers share the imports the other tests already
paid for; the NLU half (LoRA matched to Bone, Bone, Bat under ZeRO-2) keeps CI under 30 minutes.
The whole suite: `disha-bench run suites/smoke.yaml && disha-bench check results/smoke --baseline
suites/baselines/smoke.json`.
"""

from __future__ import annotations

from pathlib import Path

import os

import pytest

from disha_bench.check import check
from disha_bench.results import load_results
from disha_bench.runner import run_suite

ROOT = Path(__file__).resolve().parents[1]

# Opt-in: a child forked after this process ran torch CPU ops can hang in OpenMP (seen here after a
# 512x512 matmul in the parent), and earlier test files run such ops. Run alone:
# DISHA_SLOW_TESTS=1 pytest tests/test_smoke_suite.py
pytestmark = pytest.mark.skipif(os.environ.get("DISHA_SLOW_TESTS") != "1", reason="set DISHA_SLOW_TESTS=1; run this file alone")


def test_smoke_suite_runs_resumes_and_matches_the_baseline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "smoke"
    code = run_suite(str(ROOT / "suites" / "smoke.yaml"), out=str(out), only=["synthetic-sentiment/*"],
                     overrides=["output.report=false"])
    logs = "".join(p.read_text()[-2000:] for p in (out / ".runs").glob("*.log"))
    assert code == 0, logs
    results = load_results(out)
    assert sorted(r.run.method for r in results) == ["bat", "bone", "lora"]
    assert all(r.run.status == "complete" and len(r.training.steps) == 30 for r in results)
    lora = next(r for r in results if r.run.method == "lora")
    assert lora.training.matching["count"] == lora.training.matching["target_count"]  # matched to Bone

    assert check(out, ROOT / "suites" / "baselines" / "smoke.json") == 0, capsys.readouterr().out

    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    assert run_suite(str(ROOT / "suites" / "smoke.yaml"), out=str(out), only=["synthetic-sentiment/*"],
                     overrides=["output.report=false"]) == 0
    assert capsys.readouterr().out.count("skipped") == 3
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before
