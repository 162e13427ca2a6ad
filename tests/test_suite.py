"""Suite files: bad input gives one line naming file, key and expectation (exit 2); run ids are stable."""

from __future__ import annotations

import copy

import pytest
import yaml

from disha_bench.cli import main
from disha_bench.config.expansion import expand_runs
from disha_bench.config.suite import load_suite

GOOD = {
    "name": "t",
    "model": {"name": "tiny-llama"},
    "tasks": [{"name": "synthetic-sentiment", "train_limit": 16}],
    "methods": [{"name": "lora", "r": 4}, {"name": "bone", "r": 16}, {"name": "bat", "r": 16}],
    "training": {"max_steps": 2, "batch_size": 2},
    "seeds": [0, 1],
}


def _with(path: str, value):
    """GOOD with the dotted `path` set to `value` (list items by index)."""
    suite = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = suite
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return yaml.safe_dump(suite)


BAD_SUITES = [
    # (id, file content or None for "no file", fragments the error must contain)
    ("empty", "", ["empty"]),
    ("not-yaml", "name: [unclosed\n", ["not valid YAML"]),
    ("top-level-list", "- a\n- b\n", ["top level is a list", "expected a mapping"]),
    ("unknown-key", _with("training.max_step", 3), ["training.max_step", "unknown key"]),
    ("unknown-top-key", _with("sedes", [1]), ["sedes", "unknown key"]),
    ("wrong-type", _with("training.lr", "fast"), ["training.lr", "fast"]),
    ("negative-steps", _with("training.max_steps", -5), ["training.max_steps", "greater than 0"]),
    ("zero-batch", _with("training.batch_size", 0), ["training.batch_size", "greater than 0"]),
    ("zero-stage-5", _with("training.zero_stage", 5), ["training.zero_stage", "5"]),
    ("unknown-precision", _with("training.precision", "fp8"), ["training.precision", "fp8"]),
    ("seed-not-int", _with("seeds", [0, 1.5]), ["seeds[1]", "integer"]),
    ("seed-string", _with("seeds", ["one"]), ["seeds[0]", "integer"]),
    ("unknown-method", _with("methods.1.name", "bonee"), ["methods[1].name", "did you mean 'bone'"]),
    ("unknown-task", _with("tasks.0.name", "synthetic-sentimnt"), ["tasks[0].name", "did you mean 'synthetic-sentiment'"]),
    ("unknown-task-option", _with("tasks.0.train_sise", 3), ["tasks[0].train_sise", "did you mean 'train_size'"]),
    ("unknown-model", _with("model.name", "tiny-lama"), ["model.name", "did you mean 'tiny-llama'"]),
    ("missing-model-dir", _with("model.name", "./no/such/dir"), ["model.name", "does not exist"]),
    ("negative-rank", _with("methods.0.r", -4), ["methods[0].r"]),
    ("unknown-method-param", _with("methods.0.rank", 4), ["methods[0].rank"]),
    ("match-unknown-label", _with("methods.0", {"name": "lora", "match_params": "bonne"}), ["methods[0].match_params", "bone"]),
    ("negative-method-lr", _with("methods.2.lr", -1e-4), ["methods[2].lr", "greater than 0"]),
    ("missing-methods", yaml.safe_dump({k: v for k, v in GOOD.items() if k != "methods"}), ["methods", "missing"]),
    # task options: enums, ranges and types come from each task's typed Options
    ("train-source-typo", _with("tasks.0", {"name": "humaneval", "train_source": "metamth"}),
     ["tasks[0].train_source", "'codefeedback' or 'stdlib'", '"metamth"']),
    ("zero-samples", _with("tasks.0", {"name": "humaneval", "num_samples": 0}), ["tasks[0].num_samples", ">= 1", "got 0"]),
    ("samples-as-string", _with("tasks.0", {"name": "humaneval", "num_samples": "3"}), ["tasks[0].num_samples", "integer"]),
    ("flag-as-int", _with("tasks.0", {"name": "humaneval", "unsafe_no_isolation": 1}), ["unsafe_no_isolation", "true or false"]),
    ("gsm8k-source", _with("tasks.0", {"name": "gsm8k", "train_source": "metamath"}), ["tasks[0].train_source", "'metamathqa'"]),
    ("zero-train-size", _with("tasks.0.train_size", 0), ["tasks[0].train_size", "> 0"]),
    # method parameters
    ("bad-relative-alpha", _with("methods.0.alpha", "2x"), ["methods[0].alpha", "'<k>r'", '"2x"']),
    ("misspelt-label", _with("methods.0.lable", "x"), ["methods[0].lable", "did you mean 'label'"]),
    ("kernel-enum", _with("methods.2.kernel", "fast"), ["methods[2].kernel", "'efficient' or 'peft'"]),
    ("dropout-range", _with("methods.1.dropout", 1.5), ["methods[1].dropout", "< 1"]),
    ("target-unknown-label", _with("convergence", {"targets": ["final:lorra"]}), ["convergence.targets", "lora"]),
    # a task's own training keys: the same checks as the suite's, named under the task
    ("task-training-typo", _with("tasks.0.training", {"max_step": 3}), ["tasks[0].training.max_step", "did you mean 'max_steps'"]),
    ("task-training-steps", _with("tasks.0.training", {"max_steps": 0}), ["tasks[0].training.max_steps", "> 0"]),
    ("task-training-not-mapping", _with("tasks.0.training", 300), ["tasks[0].training", "mapping"]),
    ("task-training-warmup", _with("tasks.0.training", {"warmup_steps": 5}), ["tasks[0].training.warmup_steps", "longer than training"]),
]


@pytest.mark.parametrize("content,fragments", [case[1:] for case in BAD_SUITES], ids=[case[0] for case in BAD_SUITES])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_suite_is_one_line_exit_2_and_touches_nothing(tmp_path, capsys, content, fragments, command):
    suite = tmp_path / "suite.yaml"
    suite.write_text(content)
    out = tmp_path / "out"
    argv = [command, str(suite)] + (["--out", str(out)] if command == "run" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"error: {suite}: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not out.exists()


def test_fp16_on_cpu_is_rejected(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("fp16 is valid where CUDA exists")
    suite = tmp_path / "s.yaml"
    suite.write_text(_with("training.precision", "fp16"))
    assert main(["validate", str(suite)]) == 2
    assert "training.precision: fp16 needs CUDA" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["missing.yaml", "."])
def test_missing_file_and_directory(tmp_path, capsys, target):
    path = tmp_path / target
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and ("not found" in err or "directory" in err)


def test_set_overrides_and_bad_set(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(GOOD))
    loaded, _ = load_suite(suite, ["training.lr=1e-4", "methods.0.r=8", "seeds=[3]"])
    assert loaded.training.lr == 1e-4 and loaded.methods[0].model_extra["r"] == 8 and loaded.seeds == [3]
    assert main(["validate", str(suite), "--set", "training.zero_stage=7"]) == 2
    assert "training.zero_stage" in capsys.readouterr().err
    assert main(["validate", str(suite), "--set", "methods.9.r=1"]) == 2
    assert "methods.9" in capsys.readouterr().err


def test_validate_ok_counts_runs(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(GOOD))
    assert main(["validate", str(suite)]) == 0
    assert "= 6 runs" in capsys.readouterr().out


def test_run_ids_are_stable_and_local_to_the_edited_method(tmp_path):
    suite_path = tmp_path / "s.yaml"
    suite_path.write_text(yaml.safe_dump(GOOD))
    before = {r.run_id for r in expand_runs(load_suite(suite_path)[0])}
    again = {r.run_id for r in expand_runs(load_suite(suite_path)[0])}
    after = {r.run_id for r in expand_runs(load_suite(suite_path, ["methods.0.r=8"])[0])}
    assert before == again and len(before) == 7  # 1 task x 3 methods x 2 seeds + the unadapted run
    changed = before - after
    assert len(changed) == 2 and all("-lora-" in run_id for run_id in changed)


def test_runs_are_seed_major_with_methods_interleaved_and_one_unadapted_run_per_task(tmp_path):
    suite_path = tmp_path / "s.yaml"
    suite_path.write_text(_with("tasks", [{"name": "synthetic-sentiment"}, {"name": "synthetic-arith"}]))
    order = [(r.seed, r.task.name, r.method.label) for r in expand_runs(load_suite(suite_path)[0])]
    methods = ["lora", "bone", "bat"]
    assert order == (
        [(0, task, label) for task in ("synthetic-sentiment", "synthetic-arith") for label in ["unadapted", *methods]]
        + [(1, task, label) for task in ("synthetic-sentiment", "synthetic-arith") for label in methods]
    )
    runs = expand_runs(load_suite(suite_path, ["analysis.unadapted=false"])[0])
    assert len(runs) == 12 and not any(r.is_unadapted for r in runs)
    first = expand_runs(load_suite(suite_path)[0])[0]
    assert first.analysis.reference == "lora" and first.analysis.targets == []


def test_a_method_lr_replaces_training_lr_for_that_method_only(tmp_path):
    suite_path = tmp_path / "s.yaml"
    suite_path.write_text(yaml.safe_dump(GOOD))
    before = {r.run_id: r.training.lr for r in expand_runs(load_suite(suite_path)[0])}
    runs = expand_runs(load_suite(suite_path, ["methods.2.lr=1e-5"])[0])
    assert {r.training.lr for r in runs if r.method.name == "bat"} == {1e-5}
    assert all(before.get(r.run_id) == r.training.lr for r in runs if r.method.name != "bat")


def test_a_task_training_key_sets_that_tasks_budget_and_leaves_other_run_ids_alone(tmp_path):
    suite_path = tmp_path / "s.yaml"
    suite_path.write_text(_with("tasks", [{"name": "synthetic-sentiment"}, {"name": "synthetic-arith"}]))
    before = {r.run_id: r for r in expand_runs(load_suite(suite_path)[0])}
    runs = expand_runs(load_suite(suite_path, ["tasks.1.training.max_steps=5", "methods.2.lr=1e-5"])[0])
    arith = [r for r in runs if r.task.name == "synthetic-arith"]
    assert {r.training.max_steps for r in arith} == {5} and {r.training.batch_size for r in arith} == {2}
    assert {r.training.lr for r in arith if r.method.name == "bat"} == {1e-5}  # a method's lr still wins
    sentiment = [r for r in runs if r.task.name == "synthetic-sentiment"]
    assert {r.training.max_steps for r in sentiment} == {2}
    unchanged = {r.run_id for r in sentiment if r.method.name != "bat"}
    assert unchanged and unchanged <= set(before)  # the task key is not hashed into the other tasks' runs
    assert "training" not in arith[0].task.model_dump()  # recorded once, in the run's resolved training


def test_good_values_of_every_kind_are_accepted(tmp_path, capsys):
    """An int where a float is expected (timeout_s: 5, top_p: 1), `alpha: 2r`, a YAML 1.2 float."""
    suite = copy.deepcopy(GOOD)
    suite["tasks"] = [{"name": "humaneval", "train_source": "stdlib", "timeout_s": 5, "num_samples": 2, "top_p": 1}]
    suite["methods"][0].update(alpha="2r", dropout=0)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite).replace("max_steps: 2", "max_steps: 2\n  lr: 3e-5"))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    loaded, _ = load_suite(path)
    assert loaded.training.lr == 3e-5  # PyYAML alone reads 3e-5 as a string
    runs = expand_runs(loaded)
    assert {r.task.timeout_s for r in runs if r.method.name != "none"} == {5.0}
    # r is fixed, so the relative alpha reaches the run as a number: 2 x 4
    assert {r.method.params["alpha"] for r in runs if r.method.name == "lora"} == {8.0}


def test_committed_suites_validate(capsys):
    from pathlib import Path

    for suite in sorted(Path(__file__).parent.parent.glob("suites/*.yaml")):
        assert main(["validate", str(suite)]) == 0, capsys.readouterr().err
