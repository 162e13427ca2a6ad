"""Metrics declare themselves: every task declares what its `score` reports, results record the
declarations, and analysis reads them (older results: the task registry's), never the metric's name.

    pytest tests/test_metric_declarations.py -q
"""

from __future__ import annotations

import math

import pytest
from report_fixtures import all_results, write

from disha_bench import cli, tasks
from disha_bench.analysis import compare, measures, report
from disha_bench.contracts.metrics import DECLARATIONS_KEY, Metric, by_name, declare, recorded_declarations
from disha_bench.contracts.results import RunResult
from disha_bench.evaluation.code_execution import mean_pass_at_k
from disha_bench.tasks.base import Task, register

CLASSIFIED = [{"label": 1, "prediction": 1}, {"label": 0, "prediction": 1}, {"label": 0, "prediction": 0}]
SCORED = [{"label": 1.5, "prediction": 2.0}, {"label": 4.0, "prediction": 3.5}, {"label": 0.5, "prediction": 1.0}]
ANSWERED = [{"output": " 3 + 4 = 7\n#### 7", "target": "7"}, {"output": "The answer is: 5", "target": "6"}]


def _reported(name: str) -> set[str]:
    """The metric names task `name`'s scoring reports, from real scoring on a few predictions."""
    task = tasks.get(name)
    if name == "humaneval":  # its score runs the sandbox; pass@k comes from this, at the most samples it takes
        return set(mean_pass_at_k([[True, False] * 50], (1, 10, 100)))
    if name == "stsb":
        return set(task.score(SCORED))
    if task.head == "sequence_classification":
        return set(task.score(CLASSIFIED))
    return set(task.score(ANSWERED))


@pytest.mark.parametrize("name", list(tasks.REGISTRY))
def test_every_task_declares_its_primary_metric_and_every_metric_it_reports(name):
    cls = tasks.REGISTRY.get(name)
    declared = by_name(cls.metrics)
    assert cls.primary_metric in declared
    assert _reported(name) <= set(declared), f"{name} reports a metric it does not declare"
    assert all(metric.help for metric in declared.values())
    if name == "gsm8k":  # its primary under the paper's prompt (`prompt: alpaca`) too
        assert "exact_match_answer" in declared


def test_declarations_round_trip_through_json_with_infinite_bounds():
    loss = Metric("validation_loss", higher_is_better=False, lower=0.0, help="a loss")
    stored = declare({"validation_loss": 0.5}, {"validation_loss": loss})
    assert stored[DECLARATIONS_KEY]["validation_loss"]["upper"] is None  # JSON has no infinity
    assert recorded_declarations(stored) == {"validation_loss": loss}
    assert recorded_declarations({"accuracy": 0.5}) is None  # a v3 result recorded none
    with pytest.raises(ValueError, match="metric 'x'"):
        recorded_declarations({DECLARATIONS_KEY: {"x": {"name": "x"}}})


def test_a_task_must_declare_what_it_reports():
    class Undeclared(Task):
        name, primary_metric = "undeclared-task", "score"

    with pytest.raises(ValueError, match="primary metric 'score' is not declared"):
        register(Undeclared)
    assert "undeclared-task" not in tasks.REGISTRY
    with pytest.raises(ValueError, match="reports metric 'f2' but does not declare it"):
        tasks.get("sst2").declarations(["accuracy", "f2"])


def _as_older_result(r: RunResult, task: str) -> RunResult:
    """`r` as a schema v3 result of `task`: no declarations recorded."""
    r.run.task, r.run.run_id, r.schema_version = task, r.run.run_id.replace("synth-cls", task), 3
    r.evaluation.pop(DECLARATIONS_KEY, None)
    return r


def test_a_result_without_declarations_loads_and_takes_its_tasks(tmp_path):
    runs = [_as_older_result(r, "sst2") for r in all_results() if r.run.task == "synth-cls"]
    loaded = measures.load_checked(write(tmp_path / "v3", runs))
    assert all(r.schema_version == 3 and DECLARATIONS_KEY not in r.evaluation for r in loaded)
    (analysis,) = compare.analyze_suite(loaded)
    accuracy = analysis.endpoint("metric:accuracy")
    assert (accuracy.better, accuracy.domain, accuracy.count, accuracy.unit) == ("high", (0.0, 1.0), True, "%")
    assert analysis.comparisons[("bone", "metric:accuracy")].estimate is not None


def test_an_undeclared_metric_is_a_one_line_error_naming_file_and_metric(tmp_path, capsys):
    runs = [_as_older_result(r, "synth-cls") for r in all_results() if r.run.task == "synth-cls"]
    folder = write(tmp_path / "undeclared", runs)
    assert cli.main(["report", str(folder), "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "synth-cls-bat-s0-0000abcd.json" in err and str(folder) in err
    assert "evaluation.accuracy" in err and "metric 'accuracy' has no declaration" in err
    assert not (tmp_path / "r.md").exists()


def test_analysis_reads_the_declaration_not_the_name(tmp_path):
    """`accuracy` declared lower-is-better and not a count; `zork`, a name that says nothing, declared
    a [0, 1] lower-is-better count: analysis ranks, bounds and resamples both as declared."""
    odd = {"accuracy": Metric("accuracy", higher_is_better=False, lower=0.0, upper=1.0, help="an error share, oddly named"),
           "zork": Metric("zork", higher_is_better=False, lower=0.0, upper=1.0, is_count=True, help="share of misses")}
    runs = []
    for r in all_results():
        if r.run.task == "synth-cls" and "accuracy" in r.evaluation:
            r.evaluation = declare({**r.evaluation, "zork": 1.0 - r.evaluation["accuracy"]}, odd)
        runs.append(r)
    folder = write(tmp_path / "odd", runs)
    (cls, _) = compare.analyze_suite(measures.load_checked(folder))
    accuracy, zork = cls.endpoint("metric:accuracy"), cls.endpoint("metric:zork")
    assert (accuracy.better, accuracy.count) == ("low", False)
    assert (zork.better, zork.domain, zork.count, zork.unit) == ("low", (0.0, 1.0), True, "%")
    # Bone misses fewer examples than LoRA (the reference); the report ranks it so (lower is better)
    assert cls.comparisons[("bone", "metric:zork")].estimate < 0
    rows = {(row["method"], row["metric"]): row for row in _csv(report.write_report(folder, tmp_path / "odd.md", draw=False))}
    assert rows[("bone", "zork")]["direction"] == "lower"
    assert all(0.0 <= float(rows[(m, "zork")][k]) <= 1.0 for m in ("lora", "bone") for k in ("ci_low", "ci_high")
               if rows[(m, "zork")][k])


def test_measures_are_declared_once():
    assert compare.HELDOUT_FINAL.better == "low" and compare.HELDOUT_FINAL.domain == (0.0, math.inf)
    assert compare.SPEED.better == "high" and compare.PARAMS.better is None


def _csv(markdown_path) -> list[dict]:
    import csv

    with open(markdown_path.with_suffix(".csv"), newline="") as handle:
        return list(csv.DictReader(handle))
