"""Baseline and regression check: constructed results, then the real smoke suite's three cases.

    pytest tests/test_check.py -q

The real cases (one module-scoped set of tiny runs, marked slow; the baseline's curve tolerances
calibrated on a 1-thread replicate): unchanged fresh runs on 2 and 1 threads pass, Bat's step made
1.5x slower (the training loop's test hook, below the configuration) fails on its step time only, a
halved learning rate fails, and Bat silently built as Bone (injected below the configuration by
tests/fixtures/bat_built_as_bone/sitecustomize.py) fails on its curve rows.
"""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from disha_bench.analysis import check
from disha_bench.analysis.check_calibration import CURVE_FLOOR
from disha_bench.cli import check as check_command
from disha_bench.contracts.metrics import declare, share_of_examples
from disha_bench.contracts.results import HeldOut, HeldOutPoint, Memory, RunInfo, RunResult, StepLog, Throughput, Training, write_result
from disha_bench.core.errors import UserError
from disha_bench.core.io import write_json_atomic
from disha_bench.training.loop import SLOWDOWN_ENV

ROOT = Path(__file__).resolve().parents[1]
TAU = {"bone": 3.0, "lora": 12.0}
ACCURACY = share_of_examples("accuracy", "share of the 100 examples classified correctly")


def make(method, seed, lr_factor=1.0, wobble=0.0, status="complete", task="t", config_hash="aaaa", memory=None,
         speed=None, accuracy_shift=0.0, lr=1e-3):
    """A deterministic run: loss 0.5 + 2 exp(-lr_factor t / tau) + a seed ripple; `wobble`: last-bit-like noise."""
    def loss(t):
        return (0.5 + 2.0 * math.exp(-lr_factor * t / TAU[method]) + 0.02 * ((seed + t) % 3)) * (1 + wobble * math.sin(t))

    evaluated = status in ("complete", "stopped_by_budget")
    return RunResult(
        run=RunInfo(run_id=f"{task}-{method}-s{seed}-{config_hash}", suite="synth", task=task, method=method,
                    seed=seed, status=status, error="loss is NaN" if status == "diverged" else None,
                    analysis={"reference": "lora", "targets": []},
                    config={"method": {"name": method}, "training": {"lr": lr, "max_steps": 30}, "seed": seed}),
        training=Training(trainable_params=1, total_params=2, steps=[
            StepLog(step=t, loss=loss(t), lr=1e-3, grad_norm=1.0, tokens=64, step_time_s=0.1) for t in range(1, 31)]),
        heldout=HeldOut(n_examples=32, source="validation split", every=5, points=[
            HeldOutPoint(step=t, loss=loss(t) + 0.1, train_time_s=0.1 * t, tokens=64 * t) for t in range(0, 31, 5)]),
        evaluation=declare({"accuracy": (0.8 if method == "bone" else 0.7) + 0.01 * seed + accuracy_shift,
                            "primary_metric": "accuracy", "n_examples": 100}, {"accuracy": ACCURACY}) if evaluated else {},
        memory=Memory(device="cpu", peak_mb=memory or (900.0 if method == "bone" else 1000.0)),
        throughput=Throughput(tokens_per_s=speed or 500.0),
    )


def write(folder, results):
    for r in results:
        write_json_atomic(folder / f"{r.run.run_id}.json", r.to_dict())
    return folder


@pytest.fixture
def baseline(tmp_path):
    results = write(tmp_path / "base", [make(m, s) for m in TAU for s in (0, 1, 2)])
    return results, check.write_baseline(results, tmp_path / "baselines" / "synth.json")


def _verdicts(capsys) -> str:
    return capsys.readouterr().out


def test_baseline_file_holds_every_seed_on_one_line_per_curve(baseline):
    _, path = baseline
    text = path.read_text()
    data = json.loads(text)
    assert data["format"] == check.FORMAT and data["version"] == 3 and data["reference"] == "lora"
    assert data["tolerances"] == {**check.DEFAULT_TOLERANCES, **check.COST_TOLERANCES}
    bone = next(e for e in data["runs"] if (e["method"], e["seed"]) == ("bone", 1))
    assert bone["heldout"]["steps"] == [0, 5, 10, 15, 20, 25, 30] and len(bone["train_loss"]["loss"]) == 30
    assert bone["metrics"]["accuracy"] == pytest.approx(0.81)
    assert bone["ratios_to_reference"] == {"peak_mb": pytest.approx(0.9), "tokens_per_s": pytest.approx(1.0)}
    assert text.count("\n") < 30 * len(data["runs"])  # each curve on one line


def test_identical_results_and_a_rerun_on_another_machine_pass(baseline, tmp_path, capsys):
    results, path = baseline
    assert check.check(results, path) == 0
    assert "no regression" in _verdicts(capsys)
    rerun = write(tmp_path / "rerun", [make(m, s, wobble=2e-4, speed=350.0) for m in TAU for s in (0, 1, 2)])
    assert check.check(rerun, path) == 0, _verdicts(capsys)  # slower machine: same ratios


def test_any_seed_whose_curve_moves_fails_naming_run_and_figure(baseline, tmp_path, capsys):
    _, path = baseline
    runs = [make(m, s) for m in TAU for s in (0, 1, 2) if (m, s) != ("bone", 2)] + [make("bone", 2, lr_factor=0.5)]
    assert check.check(write(tmp_path / "lr", runs), path) == 1
    out = _verdicts(capsys).split("REGRESSION against")[1]
    assert "t/bone/s2: held-out loss" in out and "t/bone/s2: train loss" in out
    assert "s0" not in out and "lora" not in out


def test_pairing_is_by_task_method_seed_not_run_id(baseline, tmp_path, capsys):
    _, path = baseline
    # Another run id with the same configuration (e.g. other package versions): paired, no note.
    runs = [make(m, s, config_hash="bbbb") for m in TAU for s in (0, 1, 2)]
    assert check.check(write(tmp_path / "ids", runs), path) == 0
    assert "configuration changed" not in _verdicts(capsys)
    # A changed configuration is named by its keys (the curves here are the same, so it passes).
    runs = [make(m, s, config_hash="cccc", lr=2e-3) for m in TAU for s in (0, 1, 2)]
    assert check.check(write(tmp_path / "lr", runs), path) == 0
    assert "configuration changed: training.lr" in _verdicts(capsys)


def test_metric_tolerance_is_about_one_example(baseline, tmp_path, capsys):
    _, path = baseline
    one = [make(m, s, accuracy_shift=0.01 if s == 0 else 0.0) for m in TAU for s in (0, 1, 2)]
    assert check.check(write(tmp_path / "one", one), path) == 0  # 1 of 100 examples flipped
    three = [make(m, s, accuracy_shift=0.03 if (m, s) == ("lora", 0) else 0.0) for m in TAU for s in (0, 1, 2)]
    assert check.check(write(tmp_path / "three", three), path) == 1
    assert "t/lora/s0: accuracy" in _verdicts(capsys)


def test_memory_and_throughput_ratios_are_loose_and_directional(baseline, tmp_path, capsys):
    _, path = baseline
    fatter = [make(m, s, memory=1400.0 if m == "bone" else None) for m in TAU for s in (0, 1, 2)]
    assert check.check(write(tmp_path / "mem", fatter), path) == 1  # 0.9x -> 1.4x of lora's
    assert "peak memory / lora's" in _verdicts(capsys)
    leaner = [make(m, s, memory=800.0 if m == "bone" else None) for m in TAU for s in (0, 1, 2)]
    assert check.check(write(tmp_path / "lean", leaner), path) == 0  # within the loose tolerance
    slower = [make(m, s, speed=100.0 if m == "bone" else None) for m in TAU for s in (0, 1, 2)]
    assert check.check(write(tmp_path / "slow", slower), path) == 1
    assert "tokens/s / lora's" in _verdicts(capsys)


def with_cost(result, step_time, peak=500.0, noise=()):
    """Three interleaved cost repeats of `step_time` (times 1 + noise[i]) and `peak` MB."""
    from disha_bench.contracts.results import Cost, CostRepeat

    factors = list(noise) or [0.0, 0.0, 0.0]
    result.cost = Cost(protocol="3 repeats", repeats=[
        CostRepeat(position=3 * i, steps=4, peak_mb=peak, increment_mb=10.0, tokens_per_s=64 / (step_time * (1 + f)),
                   step_time_s=step_time * (1 + f)) for i, f in enumerate(factors)])
    return result


def costed(tmp_path, name, bone_time=0.1, bone_peak=500.0, noise=()):
    runs = [with_cost(make(m, s), bone_time if m == "bone" else 0.1, bone_peak if m == "bone" else 500.0,
                      noise if m == "bone" else ()) for m in TAU for s in (0, 1, 2)]
    folder = tmp_path / name
    folder.mkdir()
    for r in runs:  # as the cost phase stores them: beside the result, attached on load
        cost, r.cost = r.cost, None
        write_json_atomic(folder / f"{r.run.run_id}.json", r.to_dict())
        write_json_atomic(folder / "cost" / f"{r.run.run_id}.json", {"protocol": cost.protocol,
                          "repeats": [vars(x) for x in cost.repeats]})
    return folder


def test_cost_repeats_catch_a_1_5x_slower_step_and_pass_machine_noise(tmp_path, capsys):
    path = check.write_baseline(costed(tmp_path, "base"), tmp_path / "b.json")
    entry = next(e for e in json.loads(path.read_text())["runs"] if e["method"] == "bone")
    assert entry["cost"]["time_ratio"] == pytest.approx(1.0) and entry["cost"]["repeats"] == 3
    # Machine noise: some repeats disturbed by up to 2x; the fastest repeat is not.
    assert check.check(costed(tmp_path, "noisy", noise=(0.0, 1.0, 0.4)), path) == 0, _verdicts(capsys)
    assert check.check(costed(tmp_path, "slow", bone_time=0.15), path) == 1
    out = _verdicts(capsys).split("REGRESSION against")[1]
    assert "t/bone/s0: step time / lora's (cost phase) 1× -> 1.5×" in out and "t/lora/" not in out
    assert check.check(costed(tmp_path, "fat", bone_peak=550.0), path) == 1
    assert "peak memory / lora's (cost phase)" in _verdicts(capsys)


def test_metrics_constant_in_every_run_are_not_compared(tmp_path, capsys):
    runs = [make(m, s) for m in TAU for s in (0, 1, 2)]
    for r in runs:
        r.evaluation = declare({**r.evaluation, "exact_match": 0.0},
                               {"accuracy": ACCURACY, "exact_match": share_of_examples("exact_match", "never right")})
    path = check.write_baseline(write(tmp_path / "zero", runs), tmp_path / "z.json")
    assert json.loads(path.read_text())["constant_metrics"] == {"t": {"exact_match": 0.0}}
    assert check.check(tmp_path / "zero", path) == 0
    out = _verdicts(capsys)
    assert "exact_match" in out and "0 in every run of the task: says nothing" in out
    assert all("exact_match" not in line or "not compared" in line for line in out.splitlines())


def test_curve_tolerance_is_calibrated_on_replicates(tmp_path, capsys):
    base = write(tmp_path / "base", [make(m, s) for m in TAU for s in (0, 1, 2)])
    replicate = write(tmp_path / "rep", [make(m, s, wobble=1e-6) for m in TAU for s in (0, 1, 2)])
    path = check.write_baseline(base, tmp_path / "cal.json", replicates=[replicate])
    data = json.loads(path.read_text())
    assert data["tolerances"]["curve_abs"] == CURVE_FLOOR and "replicate runs" in data["curve_calibration"]
    assert check.check(replicate, path) == 0
    # 0.2% off: inside the default tolerance, outside the calibrated one.
    drifted = write(tmp_path / "drift", [make(m, s, wobble=2e-3 if (m, s) == ("bone", 1) else 0.0) for m in TAU for s in (0, 1, 2)])
    assert check.check(drifted, path) == 1
    assert "t/bone/s1: held-out loss" in _verdicts(capsys)
    with pytest.raises(UserError, match="--replicate"):
        check.write_baseline(base, tmp_path / "none.json", replicates=[write(tmp_path / "other", [make("bone", 0, task="x")])])


def test_a_seed_that_no_longer_completes_is_a_regression(baseline, tmp_path, capsys):
    _, path = baseline
    runs = [make(m, s) for m in TAU for s in (0, 1, 2) if (m, s) != ("lora", 2)] + [make("lora", 2, status="diverged")]
    assert check.check(write(tmp_path / "div", runs), path) == 1
    assert "t/lora/s2: status" in _verdicts(capsys)


def test_extra_runs_are_reported_and_a_missing_baseline_run_fails(baseline, tmp_path, capsys):
    _, path = baseline
    extra = [make(m, s) for m in TAU for s in (0, 1, 2)] + [make("bone", s, task="other") for s in (0, 1)]
    assert check.check(write(tmp_path / "extra", extra), path) == 0
    assert "not in the baseline (not a failure)" in _verdicts(capsys)
    partial = [make("bone", s) for s in (0, 1, 2)]
    assert check.check(write(tmp_path / "partial", partial), path) == 1
    out = _verdicts(capsys).split("REGRESSION against")[1]
    assert "t/lora/s0: run complete -> none" in out and "bone" not in out


def test_a_damaged_result_fails_the_check_naming_the_file(baseline, tmp_path, capsys):
    """Issue 25: a truncated result file used to pass as "no regression"."""
    _, path = baseline
    folder = tmp_path / "damaged"
    for r in [make(m, s) for m in TAU for s in (0, 1, 2)]:
        write_result(folder / f"{r.run.run_id}.json", r)
    victim = folder / "t-bone-s1-aaaa.json"
    victim.write_bytes(victim.read_bytes()[:500])
    assert check.check(folder, path) == 1
    out = _verdicts(capsys).split("REGRESSION against")[1]
    assert "t/bone/s1: run complete -> none" in out
    assert "t-bone-s1-aaaa.json: result file" in out


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
    (tmp_path / "v1.json").write_text('{"format": "disha-bench-baseline", "version": 1, "entries": []}')
    with pytest.raises(UserError, match="expected 3: regenerate it"):
        check.check(results, tmp_path / "v1.json")


def test_cli_commands(baseline, tmp_path):
    results, _ = baseline
    parser = argparse.ArgumentParser()
    check_command.register(parser.add_subparsers())
    args = parser.parse_args(["baseline", str(results), "-o", str(tmp_path / "b2.json"), "--reference", "bone"])
    assert args.func(args) == 0 and json.loads((tmp_path / "b2.json").read_text())["reference"] == "bone"
    args = parser.parse_args(["check", str(results), "--baseline", str(tmp_path / "b2.json")])
    assert args.func(args) == 0


# ---------------------------------------------------------------------------------------------
# The real smoke suite: tiny runs of LoRA (the reference) and Bat on the NLU task, seed 0.

SMOKE = str(ROOT / "suites" / "smoke.yaml")
ONLY = ["synthetic-sentiment/lora", "synthetic-sentiment/bat"]


def _cli_run(out: Path, extra: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "disha_bench.cli", "run", SMOKE, "--out", str(out),
                           "--set", "output.report=false", *extra], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})}, cwd=out.parent)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    from disha_bench.running.runner import run_suite

    root = tmp_path_factory.mktemp("smoke-check")
    folders = {}
    no_cost = "cost.repeats=0"  # these two fail on their curves; their cost would only cost time
    for name, only, overrides, env in (
            ("base", ONLY, [], {}), ("same", ONLY, [], {}), ("one_thread", ONLY, [], {"OMP_NUM_THREADS": "1"}),
            # Bat's step made 1.5x slower below the configuration (the training loop's test hook).
            ("slow_bat", ONLY, [], {SLOWDOWN_ENV: "bat=1.5"}),
            ("half_lr", ["synthetic-sentiment/bat"], ["training.lr=1e-3", no_cost], {})):
        folders[name] = root / name
        with pytest.MonkeyPatch.context() as patch_env:
            for key, value in env.items():
                patch_env.setenv(key, value)
            assert run_suite(SMOKE, out=str(folders[name]), only=only, overrides=["output.report=false", *overrides]) == 0
    folders["swap"] = root / "swap"
    patch = ROOT / "tests" / "fixtures" / "bat_built_as_bone"
    done = _cli_run(folders["swap"], ["--only", "synthetic-sentiment/bat", "--set", no_cost],
                    {"DISHA_BENCH_FORK": "0", "PYTHONPATH": f"{patch}{os.pathsep}{os.environ.get('PYTHONPATH', ROOT)}"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Curve tolerances calibrated on a replicate at another thread count, as the committed baseline's.
    path = check.write_baseline(folders["base"], root / "baseline.json", reference="lora", replicates=[folders["one_thread"]])
    return folders, path


@pytest.mark.slow
def test_smoke_unchanged_fresh_run_passes(smoke_runs, capsys):
    folders, path = smoke_runs
    assert check.check(folders["same"], path) == 0, _verdicts(capsys)


@pytest.mark.slow
def test_smoke_fresh_run_on_one_thread_passes(smoke_runs, capsys):
    folders, path = smoke_runs
    assert json.loads(path.read_text())["tolerances"]["curve_abs"] < 0.005  # calibrated, tighter than the default
    assert check.check(folders["one_thread"], path) == 0, _verdicts(capsys)


@pytest.mark.slow
def test_smoke_one_method_made_1_5x_slower_fails_on_its_step_time(smoke_runs, capsys):
    folders, path = smoke_runs
    assert check.check(folders["slow_bat"], path) == 1
    out = _verdicts(capsys).split("REGRESSION against")[1]
    assert "synthetic-sentiment/bat/s0: step time / lora's (cost phase)" in out
    assert "loss" not in out and "accuracy" not in out  # only its speed changed


@pytest.mark.slow
def test_smoke_halved_learning_rate_fails(smoke_runs, capsys):
    folders, path = smoke_runs
    assert check.check(folders["half_lr"], path) == 1
    out = _verdicts(capsys).split("REGRESSION against")[1]
    assert "synthetic-sentiment/bat/s0: train loss" in out


@pytest.mark.slow
def test_smoke_bat_built_as_bone_fails_on_its_curves(smoke_runs, capsys):
    folders, path = smoke_runs
    swapped = json.loads(next(folders["swap"].glob("*.json")).read_text())
    base = json.loads(next(folders["base"].glob("*-bat-*.json")).read_text())
    # Same label, configuration and run id: only the adapter code changed.
    assert swapped["run"]["run_id"] == base["run"]["run_id"]
    assert swapped["training"]["trainable_params"] == base["training"]["trainable_params"]
    assert check.check(folders["swap"], path) == 1
    out = _verdicts(capsys).split("REGRESSION against")[1]
    assert "synthetic-sentiment/bat/s0: train loss" in out


def test_unadapted_reference_run_is_checked_on_what_it_has(tmp_path, capsys):
    unadapted = make("lora", 0)
    unadapted.run.method, unadapted.run.run_id = "unadapted", "t-unadapted-s0-aaaa"
    unadapted.training.steps, unadapted.heldout.points, unadapted.throughput = [], unadapted.heldout.points[:1], None
    folder = write(tmp_path / "u", [unadapted, make("lora", 0)])
    path = check.write_baseline(folder, tmp_path / "u.json")
    assert check.check(folder, path) == 0
    out = _verdicts(capsys)
    assert "t/unadapted/s0  held-out loss" in out and "t/unadapted/s0  train loss" not in out
    assert "not compared" not in out


def test_the_committed_smoke_baseline_has_the_current_run_ids():
    """Issue 25: stale run ids made every `check` of a clean checkout note "configuration changed".
    After a change to what a run id covers, refresh them (or regenerate the baseline: README "Test")."""
    from disha_bench.config.expansion import expand_runs
    from disha_bench.config.suite import load_suite

    suite, _ = load_suite(SMOKE)
    current = {(r.task.name, r.method.label, r.seed): r.run_id for r in expand_runs(suite)}
    stored = json.loads((ROOT / "suites" / "baselines" / "smoke.json").read_text())["runs"]
    assert {(e["task"], e["method"], e["seed"]): e["run_id"] for e in stored} == current
