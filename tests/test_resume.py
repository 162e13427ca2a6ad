"""Mid-run checkpoints and time budgets with real DeepSpeed engines on CPU (tiny Llama).

    python3 -m pytest -q tests/test_resume.py

- Resume equals uninterrupted, under ZeRO-2 and ZeRO-3 on 2 ranks (torchrun, gloo): one run is
  stopped by SIGTERM to the suite process at step 3 (its workers save a checkpoint within the grace),
  re-run, killed by SIGKILL at step 5 (the last checkpoint is step 4's), and re-run to the end. Its
  loss curve, learning rates, gradient norms and metrics equal those of an uninterrupted run.
- `training.max_time` stops a run: stopped_by_budget, evaluated, final.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from disha_bench.contracts import checkpoints as checkpoint_layout
from disha_bench.contracts.results import BUDGET_STOPPED, COMPLETE, load_results, read_result
from disha_bench.training import checkpointer as checkpoint

SUITE = {
    "name": "resume-test",
    "model": {"name": "tiny-llama"},
    "tasks": [{"name": "synthetic-sentiment", "train_limit": 64, "eval_limit": 16}],
    "methods": [{"name": "bone", "r": 16}],
    "training": {"max_steps": 6, "lr": 1.0e-3, "batch_size": 2, "max_length": 32, "zero_stage": 2, "warmup_steps": 0},
    "seeds": [0],
    "evaluation": {"batch_size": 8},
    "output": {"report": False, "checkpoint_every": 2},
    "analysis": {"unadapted": False},  # no reference run: these tests are about one run
}


def _suite(tmp_path: Path, **training) -> Path:
    suite = json.loads(json.dumps(SUITE))
    suite["training"].update(training)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _cli(suite: Path, out: Path, *extra: str, pause: int | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(checkpoint.PAUSE_ENV, None)
    if pause:
        env[checkpoint.PAUSE_ENV] = str(pause)
    log = open(out.parent / f"{out.name}-{time.monotonic_ns()}.out", "w")
    return subprocess.Popen([sys.executable, "-m", "disha_bench.cli", "run", str(suite), "--out", str(out), *extra],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_for_pause(proc: subprocess.Popen, out: Path, step: int) -> None:
    """Until the run prints that it paused at `step` (checkpoint.PAUSE_ENV)."""
    deadline = time.time() + 900
    logs = out / ".runs"
    while time.time() < deadline:
        if any(f"paused at step {step}" in p.read_text(errors="replace") for p in logs.glob("*.log")):
            return
        assert proc.poll() is None, f"the suite ended before pausing at step {step}: {_logs(out)}"
        time.sleep(0.5)
    raise AssertionError(f"no pause at step {step}: {_logs(out)}")


def _logs(out: Path) -> str:
    return "".join(p.read_text()[-3000:] for p in (out / ".runs").glob("*.log")) if (out / ".runs").exists() else ""


def _latest_step(out: Path) -> tuple[int, str]:
    (run_dir,) = [p for p in (out / ".runs").iterdir() if p.is_dir()]
    marker = checkpoint_layout.read_marker(checkpoint_layout.latest(run_dir / "checkpoints"))
    return marker["step"], marker["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_resume_after_sigterm_and_sigkill_equals_uninterrupted(tmp_path, stage):
    deepspeed = {"zero_optimization": {"stage3_param_persistence_threshold": 0}} if stage == 3 else {}
    suite = _suite(tmp_path, zero_stage=stage, deepspeed=deepspeed)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert _cli(suite, reference, "--nproc", "2").wait(timeout=900) == 0, _logs(reference)

    # SIGTERM to the suite process at step 3: forwarded, the workers save step 3 and exit; no result.
    proc = _cli(suite, resumed, "--nproc", "2", pause=3)
    _wait_for_pause(proc, resumed, 3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143
    assert not list(resumed.glob("*.json"))
    assert _latest_step(resumed) == (3, "signal")

    # Resumed, then SIGKILL of everything at step 5: the last complete checkpoint is step 4's.
    proc = _cli(suite, resumed, "--nproc", "2", pause=5)
    _wait_for_pause(proc, resumed, 5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _latest_step(resumed) == (4, "every")

    assert _cli(suite, resumed, "--nproc", "2").wait(timeout=900) == 0, _logs(resumed)
    (ref,), (res,) = load_results(reference), load_results(resumed)
    assert ref.run.status == res.run.status == COMPLETE
    assert ref.run.resumed_from_step is None and res.run.resumed_from_step == 4
    assert [s.step for s in res.training.steps] == list(range(1, 7))
    for field in ("loss", "lr", "grad_norm", "tokens"):
        assert [getattr(s, field) for s in res.training.steps] == [getattr(s, field) for s in ref.training.steps], field
    assert res.evaluation == ref.evaluation
    if ref.heldout is not None:
        assert [(p.step, p.loss, p.tokens) for p in res.heldout.points] == [(p.step, p.loss, p.tokens) for p in ref.heldout.points]
    # Training time adds up over the three segments: at least every step's own time.
    assert res.throughput.train_time_s >= sum(s.step_time_s for s in res.training.steps)
    assert not (resumed / ".runs" / res.run.run_id / "checkpoints").exists()  # removed with the result


@pytest.mark.slow
def test_max_time_stops_the_run_which_is_still_evaluated(tmp_path):
    import contextlib
    import io

    from disha_bench.running.runner import run_suite

    suite = _suite(tmp_path, max_time=1e-6, batch_size=4)
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_suite(str(suite), out=str(out)) == 0, _logs(out)
    (result,) = load_results(out)
    assert result.run.status == BUDGET_STOPPED, result.run.error
    assert result.training.stopped_at_step == 1 and len(result.training.steps) == 1
    assert result.evaluation["n_examples"] == 16 and "accuracy" in result.evaluation
    # Final: a re-run skips it.
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert run_suite(str(suite), out=str(out)) == 0
    assert "stopped_by_budget, skipped" in printed.getvalue()
    assert read_result(out / f"{result.run.run_id}.json").run.finished_at == result.run.finished_at


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path):
    """Issue 25: a damaged checkpoint made every re-run fail; now it is set aside with a warning and the
    run resumes from the previous complete checkpoint, to the same curve as an uninterrupted run."""
    suite = _suite(tmp_path)
    arith = yaml.safe_load(suite.read_text())  # a causal LM: its checkpoints hold the tied output layer
    arith["tasks"] = [{"name": "synthetic-arith", "train_limit": 64, "eval_limit": 4}]
    arith["evaluation"].update(max_new_tokens=16, heldout_examples=8)
    suite.write_text(yaml.safe_dump(arith))
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert _cli(suite, reference).wait(timeout=900) == 0, _logs(reference)
    proc = _cli(suite, resumed, pause=5)
    _wait_for_pause(proc, resumed, 5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143
    (run_dir,) = [p for p in (resumed / ".runs").iterdir() if p.is_dir()]
    kept = [p.name for p in checkpoint_layout.complete_checkpoints(run_dir / "checkpoints")]
    assert kept == ["step-00000004", "step-00000005"]  # the last two
    # README: a checkpoint leaves frozen parameters out, yet DeepSpeed's module file still holds the
    # output layer tied to the (frozen) input embedding, far larger than this adapter.
    import torch

    (module_file,) = (run_dir / "checkpoints" / "step-00000004" / checkpoint.DS_TAG).glob("*model_states.pt")
    module = torch.load(module_file, weights_only=False)["module"]
    tied = sum(t.numel() for name, t in module.items() if "lm_head" in name)
    adapter = sum(t.numel() for name, t in module.items() if "miss_block" in name)
    assert tied > 100 * adapter > 0, sorted(module)
    (run_dir / "checkpoints" / "step-00000005" / checkpoint_layout.STATE_FILE).write_text("{")

    rerun = _cli(suite, resumed)
    assert rerun.wait(timeout=900) == 0, _logs(resumed)
    console = max(tmp_path.glob("resumed-*.out"), key=lambda p: p.stat().st_mtime).read_text()
    assert "warning: checkpoint step-00000005 is damaged (state.json has 1 bytes" in console, console
    assert "resuming from the previous complete checkpoint, step-00000004" in console
    (ref,), (res,) = load_results(reference), load_results(resumed)
    assert res.run.status == COMPLETE and res.run.resumed_from_step == 4
    for field in ("loss", "lr", "grad_norm", "tokens"):
        assert [getattr(s, field) for s in res.training.steps] == [getattr(s, field) for s in ref.training.steps], field
    assert res.evaluation == ref.evaluation
