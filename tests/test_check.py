"""Baseline and regression check on synthetic results.

    pytest tests/test_check.py -q
"""

import argparse
import json
import math

import pytest

from disha_bench import check
from disha_bench.errors import UserError
from disha_bench.results import RunInfo, RunResult, StepLog, Training, write_json_atomic

TAU = {"bone": 3.0, "lora": 12.0}


def make(method, seed, lr_factor=1.0, shift=0.0, wobble=0.0, status="complete", task="t", config_hash="aaaa"):
    """Loss 0.5 + 2 exp(-lr_factor (t-1) / tau) + a seed-dependent ripple; `wobble`: relative last-bit-like noise."""
    losses = [(0.5 + 2.0 * math.exp(-lr_factor * (t - 1) / TAU[method]) + 0.02 * ((seed + t) % 3) + shift)
              * (1 + wobble * math.sin(t)) for t in range(1, 51)]
    return RunResult(
        run=RunInfo(run_id=f"{task}-{method}-s{seed}-{config_hash}", suite="synth", task=task, method=method,
                    seed=seed, status=status, error="loss is NaN" if status == "diverged" else None),
        training=Training(trainable_params=1, total_params=2, steps=[
            StepLog(step=i + 1, loss=v, lr=1e-3, grad_norm=1.0, tokens=64, step_time_s=0.1) for i, v in enumerate(losses)]),
        evaluation={"accuracy": (0.8 if method == "bone" else 0.7) + 0.01 * seed - (0.3 if lr_factor < 1 else 0) + wobble,
                    "primary_metric": "accuracy", "n_examples": 100},
    )


def write(folder, results):
    for r in results:
        write_json_atomic(folder / f"{r.run.run_id}.json", r.to_dict())
    return folder


@pytest.fixture
def baseline(tmp_path):
    results = write(tmp_path / "base", [make(m, s) for m in TAU for s in (0, 1, 2)])
    path = check.write_baseline(results, tmp_path / "baselines" / "synth.json", targets=[1.0, "final:lora"], ema=0.9)
    return results, path


def test_baseline_file_is_readable_json(baseline):
    _, path = baseline
    text = path.read_text()
    data = json.loads(text)
    assert data["format"] == check.FORMAT and data["ema"] == 0.9
    assert data["tolerances"] == check.DEFAULT_TOLERANCES
    entry = next(e for e in data["entries"] if e["method"] == "bone")
    assert entry["seeds_complete"] == [0, 1, 2] and len(entry["loss"]["mean"]) == 50
    assert [t["spec"] for t in entry["targets"]] == [1.0, "final:lora"]
    assert entry["metric"]["name"] == "accuracy"
    assert '"mean": [' in text and text.count("\n") < 200  # curves on one line each


def test_identical_results_pass(baseline, capsys):
    results, path = baseline
    assert check.check(results, path) == 0
    out = capsys.readouterr().out
    assert "no regression" in out and "REGRESSION" not in out


def test_rerun_on_another_machine_passes(baseline, tmp_path, capsys):
    _, path = baseline
    folder = write(tmp_path / "rerun", [make(m, s, wobble=1e-4) for m in TAU for s in (0, 1, 2)])
    assert check.check(folder, path) == 0, capsys.readouterr().out


def test_near_miss_of_a_relative_target_passes(baseline, tmp_path, capsys):
    # final:lora sits at lora's mean final loss, so seeds end right around it; a shift of 0.004 (within
    # the loss floor) makes every lora seed miss it. Counted as budget+1 steps, that is not a regression.
    _, path = baseline
    folder = write(tmp_path / "near", [make(m, s, shift=0.004) for m in TAU for s in (0, 1, 2)])
    assert check.check(folder, path) == 0
    assert "(0/3 reached)" in capsys.readouterr().out


def test_curve_shifted_up_fails_naming_method_and_metric(baseline, tmp_path, capsys):
    _, path = baseline
    folder = write(tmp_path / "up", [make("bone", s, shift=1.0) for s in (0, 1, 2)] + [make("lora", s) for s in (0, 1, 2)])
    assert check.check(folder, path) == 1
    out = capsys.readouterr().out
    assert "t / bone: loss curve" in out
    assert "t / lora" not in out.split("REGRESSION against")[1]


def test_learning_rate_100x_lower_fails(baseline, tmp_path, capsys):
    _, path = baseline
    folder = write(tmp_path / "lowlr", [make(m, s, lr_factor=0.01, config_hash="bbbb") for m in TAU for s in (0, 1, 2)])
    assert check.check(folder, path) == 1
    out = capsys.readouterr().out
    for text in ("t / bone: loss curve", "t / lora: loss curve", "t / bone: steps to loss", "t / bone: accuracy",
                 "run ids differ"):
        assert text in out, text


def test_diverged_seed_is_a_regression(baseline, tmp_path, capsys):
    _, path = baseline
    runs = [make(m, s) for m in TAU for s in (0, 1, 2) if (m, s) != ("lora", 2)] + [make("lora", 2, status="diverged")]
    assert check.check(write(tmp_path / "div", runs), path) == 1
    assert "t / lora: status" in capsys.readouterr().out


def test_runs_missing_from_either_side_are_reported_not_failures(baseline, tmp_path, capsys):
    _, path = baseline
    runs = [make("bone", s) for s in (0, 1, 2)] + [make("bone", s, task="other") for s in (0, 1)]
    assert check.check(write(tmp_path / "partial", runs), path) == 0
    out = capsys.readouterr().out
    assert "not in the baseline (not a failure)" in out and "not in these results (not a failure)" in out


def test_bad_baseline_files_are_user_errors(baseline, tmp_path):
    results, _ = baseline
    with pytest.raises(UserError, match="baseline file not found"):
        check.check(results, tmp_path / "nope.json")
    (tmp_path / "corrupt.json").write_text('{"format": "disha-bench-baseline", ')
    with pytest.raises(UserError, match="not valid JSON"):
        check.check(results, tmp_path / "corrupt.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="not a disha-bench baseline"):
        check.check(results, tmp_path / "other.json")


def test_cli_commands(baseline, tmp_path, capsys):
    results, path = baseline
    parser = argparse.ArgumentParser()
    check.register(parser.add_subparsers())
    args = parser.parse_args(["baseline", str(results), "-o", str(tmp_path / "b2.json")])
    assert args.func(args) == 0 and (tmp_path / "b2.json").exists()
    args = parser.parse_args(["check", str(results), "--baseline", str(tmp_path / "b2.json")])
    assert args.func(args) == 0
