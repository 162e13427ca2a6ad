"""A learning-rate sweep end to end: `run` trains every method at every lr (LoRA sized against the swept
Bone by its suite label), and the report chooses each one's lr and compares them at it."""

from __future__ import annotations

import contextlib
import io

import yaml

from disha_bench.analysis.measures import load_checked
from disha_bench.running.runner import run_suite

SUITE = {
    "name": "sweep-test",
    "model": {"name": "tiny-llama"},
    "tasks": [{"name": "synthetic-sentiment", "train_limit": 32, "eval_limit": 8}],
    "methods": [{"name": "lora", "match_params": "bone", "alpha": "2r"}, {"name": "bone", "r": 16}],
    "sweep": {"lr": [1.0e-3, 3.0e-3]},
    "training": {"max_steps": 3, "lr": 1.0e-3, "batch_size": 4, "max_length": 32, "zero_stage": 2, "warmup_steps": 0},
    "seeds": [0],
    "evaluation": {"batch_size": 8, "heldout_examples": 8},
}


def test_a_swept_suite_runs_and_reports_each_method_at_its_best_lr(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    out = tmp_path / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_suite(str(suite), out=str(out), overrides=[]) == 0, printed.getvalue()[-3000:]
    results = load_checked(out)
    assert sorted((r.run.method, r.run.config["training"]["lr"]) for r in results if r.run.method != "unadapted") == [
        ("bone", 1e-3), ("bone@lr=3e-3", 3e-3), ("lora", 1e-3), ("lora@lr=3e-3", 3e-3)]
    assert all(r.run.status == "complete" for r in results), [r.run.error for r in results]
    lora = [r for r in results if r.run.method.startswith("lora")]
    assert len({r.training.trainable_params for r in lora}) == 1  # matched to bone at both lrs
    assert {r.run.analysis["sweep"]["lr"] for r in lora} == {1e-3, 3e-3}
    text = (out / "sweep-test.md").read_text()
    assert "## Learning-rate sweep" in text and "### Each method at its best lr" in text
    assert "Protocol: one shared learning rate (0.001), as the paper" in text  # the tables above the sweep's
    assert "| synthetic-sentiment | bone |" in text and "| synthetic-sentiment | lora |" in text
