"""The generic JSON Lines tasks: your own classification or generation data, options and lines checked.

    pytest tests/test_jsonl_task.py -q

The files are written from the smoke suite's generated examples, so the runs learn something real in
a few steps; a bad option fails at `validate`, a bad line at `run`'s preflight (exit 2, nothing started).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from disha_bench import tasks
from disha_bench.cli import main
from disha_bench.contracts.metrics import recorded_declarations
from disha_bench.contracts.results import COMPLETE, load_results
from disha_bench.tasks.synthetic import _arith_records, _sentiment_records

NAMES = ["negative", "positive"]


def _files(folder: Path) -> dict[str, dict[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for kind, make, shape in (
            ("cls", _sentiment_records, lambda r: {"review": r["text"], "label": NAMES[r["label"]]}),
            ("gen", _arith_records, lambda r: {"prompt": f"Question: {r['question']}\nAnswer:",
                                              "answer": " " + r["answer"].rsplit("#### ", 1)[1]})):
        written[kind] = {}
        for split, seed, n in (("train", 1, 64), ("eval", 2, 16)):
            path = folder / f"{kind}-{split}.jsonl"
            path.write_text("".join(json.dumps(shape(r)) + "\n" for r in make(n, seed=seed)))
            written[kind][split] = str(path)
    return written


def _suite(tmp_path: Path, files: dict, **classification) -> Path:
    suite = {
        "name": "own-data", "model": {"name": "tiny-llama"},
        "tasks": [{"name": "jsonl-classification", "data_files": files["cls"], "labels": NAMES, "text_field": "review",
                   **classification},
                  {"name": "jsonl-generation", "data_files": files["gen"], "stop": ["\n"]}],
        "methods": [{"name": "bone", "r": 16}],
        "training": {"max_steps": 4, "lr": 2.0e-3, "batch_size": 8, "max_length": 64, "warmup_steps": 0},
        "evaluation": {"batch_size": 16, "max_new_tokens": 8, "heldout_examples": 8},
        "output": {"report": False}, "analysis": {"unadapted": False},
    }
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_own_classification_and_generation_data_train_and_score(tmp_path, monkeypatch):
    from disha_bench.running.runner import run_suite

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert run_suite(str(_suite(tmp_path, _files(tmp_path / "data"))), out=str(out)) == 0
    results = {r.run.task: r for r in load_results(out)}
    cls, gen = results["jsonl-classification"], results["jsonl-generation"]
    assert cls.run.status == gen.run.status == COMPLETE
    assert cls.evaluation["n_examples"] == 16 and 0 <= cls.evaluation["accuracy"] <= 1
    assert cls.evaluation["majority_class"]["label"] in (0, 1)  # a real two-class head
    assert gen.evaluation["n_examples"] == 16 and 0 <= gen.evaluation["exact_match"] <= 1
    # each result records the declarations of the metrics it reports (what analysis reads)
    assert recorded_declarations(cls.evaluation) == {"accuracy": tasks.get("jsonl-classification").metrics[0]}
    assert recorded_declarations(gen.evaluation)["exact_match"].is_count
    for r in (cls, gen):  # trained: the held-out curve moved from the unadapted model's loss
        assert len(r.training.steps) == 4 and r.heldout.source == "evaluation file"
        assert r.heldout.points[-1].loss != r.heldout.points[0].loss
        # eval_peak_mb is what evaluation adds (as documented), not an absolute peak: an absolute
        # figure could not lie below the process's usage with the model loaded.
        assert 0 <= r.memory.eval_peak_mb < r.memory.loaded_mb <= r.memory.peak_mb


@pytest.mark.parametrize("change, fragments", [
    ({"labels": ["only"]}, ["tasks[0].labels", "at least 2"]),
    ({"labels": ["a", "a"]}, ["tasks[0].labels", "label 'a' appears twice"]),
    ({"label_fieldd": "x"}, ["tasks[0].label_fieldd", "did you mean 'label_field'?"]),
])
def test_bad_options_fail_at_validate(tmp_path, capsys, change, fragments):
    assert main(["validate", str(_suite(tmp_path, _files(tmp_path / "data"), **change))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert all(f in err for f in fragments), err


def test_labels_are_required_at_validate(tmp_path, capsys):
    path = _suite(tmp_path, _files(tmp_path / "data"))
    suite = yaml.safe_load(path.read_text())
    del suite["tasks"][0]["labels"]
    path.write_text(yaml.safe_dump(suite))
    assert main(["validate", str(path)]) == 2
    assert "tasks[0].labels" in capsys.readouterr().err


@pytest.mark.parametrize("line, fragment", [
    ({"review": "fine", "label": "neutral"}, "label 'neutral' is not one of ['negative', 'positive']"),
    ({"review": 3, "label": "positive"}, "field 'review' is '3' (int); expected a string"),
    ({"text": "fine", "label": 1}, "field 'review' is missing"),
])
def test_a_bad_line_is_refused_before_any_run_naming_file_and_line(tmp_path, capsys, line, fragment):
    files = _files(tmp_path / "data")
    with open(files["cls"]["train"], "a") as f:
        f.write(json.dumps(line) + "\n")
    out = tmp_path / "out"
    assert main(["run", str(_suite(tmp_path, files)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{files['cls']['train']}: line 65: {fragment}" in err, err
    assert not out.exists()


def test_data_files_are_required(tmp_path, capsys):
    path = _suite(tmp_path, _files(tmp_path / "data"))
    suite = yaml.safe_load(path.read_text())
    del suite["tasks"][1]["data_files"]
    path.write_text(yaml.safe_dump(suite))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "jsonl-generation reads your own files" in capsys.readouterr().err
