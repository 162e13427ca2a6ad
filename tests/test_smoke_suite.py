"""The smoke suite end to end, checked against the committed baseline (CI also runs it from the CLI).

Runs in the test process: its workers fork from one preloaded fork server (see worker.py), so the
six runs (LoRA matched to Bone, Bone, Bat on an NLU and an NLG task, ZeRO-2) take seconds, not
six interpreter start-ups. The same from a shell:
`disha-bench run suites/smoke.yaml && disha-bench check results/smoke --baseline suites/baselines/smoke.json`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from disha_bench.analysis.check import check
from disha_bench.contracts.results import load_results
from disha_bench.running.runner import run_suite

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "suites" / "smoke.yaml")


def test_smoke_suite_runs_resumes_and_matches_the_baseline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a report in ./reports would be a bug: a scratch --out writes it beside the results
    out = tmp_path / "smoke"
    code = run_suite(SMOKE, out=str(out))
    logs = "".join(p.read_text()[-2000:] for p in (out / ".runs").glob("*.log"))
    assert code == 0, logs
    results = load_results(out)
    assert sorted((r.run.task, r.run.method) for r in results) == [
        (task, method) for task in ("synthetic-arith", "synthetic-sentiment") for method in ("bat", "bone", "lora", "unadapted")
    ]
    trained = [r for r in results if r.run.method != "unadapted"]
    assert all(r.run.status == "complete" and len(r.training.steps) == 30 for r in trained)
    # Every run's held-out curve starts at the unadapted model's loss: the unadapted run's only point.
    for unadapted in (r for r in results if r.run.method == "unadapted"):
        assert unadapted.run.status == "complete" and unadapted.training.steps == [] and unadapted.evaluation["n_examples"] > 0
        (point,) = unadapted.heldout.points
        for r in (r for r in trained if r.run.task == unadapted.run.task):  # adapters start as the identity
            assert r.heldout.points[0].loss == pytest.approx(point.loss, rel=1e-4), r.run.method
        assert [p.step for p in trained[0].heldout.points] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    # Schema v3: every held-out point has each example's loss, every evaluation each example's score.
    for r in results:
        ids = r.heldout.example_ids
        assert len(ids) == r.heldout.n_examples and all(len(p.per_example) == len(ids) for p in r.heldout.points)
        per_example = r.evaluation["per_example"]
        assert len(per_example["ids"]) == r.evaluation["n_examples"] == len(per_example[r.evaluation["primary_metric"]])
        assert sum(per_example[r.evaluation["primary_metric"]]) / len(per_example["ids"]) == pytest.approx(
            r.evaluation[r.evaluation["primary_metric"]])
        if r.run.task == "synthetic-sentiment":
            assert len(per_example["prediction"]) == len(per_example["label"]) == len(per_example["ids"])
            point = r.heldout.points[-1]  # classification: the held-out loss is the mean of the examples'
            assert sum(point.per_example) / len(ids) == pytest.approx(point.loss, rel=1e-5)
    # The cost phase: every trained run has its 3 interleaved repeats, each method once per round.
    for task in ("synthetic-arith", "synthetic-sentiment"):
        costs = {r.run.method: r.cost for r in trained if r.run.task == task}
        assert all(len(c.repeats) == 3 and all(x.steps == 12 and x.peak_mb > 0 and x.step_time_s > 0 for x in c.repeats)
                   for c in costs.values()), costs
        rounds = [sorted(m for m, c in costs.items() for x in c.repeats if x.position // 3 == k) for k in range(3)]
        assert rounds == [["bat", "bone", "lora"]] * 3
    sentiment = next(r for r in trained if r.run.task == "synthetic-sentiment")
    assert sentiment.evaluation["majority_class"]["accuracy"] <= 0.7  # balanced generated labels
    lora = next(r for r in results if r.run.method == "lora")
    assert lora.training.matching["count"] == lora.training.matching["target_count"]  # matched to Bone
    report = (out / "smoke.md").read_text()
    assert not (tmp_path / "reports").exists()
    assert (out / "suite.yaml").read_text() == Path(SMOKE).read_text()  # the suite that made these results, kept beside them
    assert "\n- Suite: Pipeline check" in report
    assert all(f"| {method}" in report for method in ("lora (reference)", "bone", "bat"))

    capsys.readouterr()
    assert check(out, ROOT / "suites" / "baselines" / "smoke.json") == 0, capsys.readouterr().out

    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    assert run_suite(SMOKE, out=str(out), overrides=["output.report=false"]) == 0
    assert capsys.readouterr().out.count("skipped") == 8
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before

    # --fresh --only: only the selected runs re-run; only their earlier results are set aside
    assert run_suite(SMOKE, out=str(out), only=["*/bat"], fresh=True, overrides=["output.report=false"]) == 0
    moved = sorted(p.name for p in (out / ".superseded").glob("*/*.json"))
    assert len(moved) == 2 and all("-bat-" in name for name in moved), moved
    after = {p.name: p.read_bytes() for p in out.glob("*.json")}
    assert after.keys() == before.keys()
    assert {n: b for n, b in after.items() if "-bat-" not in n} == {n: b for n, b in before.items() if "-bat-" not in n}
    assert all(r.run.status == "complete" for r in load_results(out))
