"""Checkpoint bookkeeping, `disha-bench status` and the launcher's input checks, without training.

    python3 -m pytest -q tests/test_checkpoint.py

(Saving and resuming real DeepSpeed engines: tests/test_resume.py; Slurm jobs: test_slurm_launcher.py.)
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import yaml

from disha_bench.cli import main
from disha_bench.contracts import checkpoints as checkpoint_layout
from disha_bench.contracts.results import BUDGET_STOPPED, COMPLETE, EVAL_FAILED, FAILED, Meta, RunInfo, RunResult, StepLog, write_result
from disha_bench.running import spawn
from disha_bench.running.ownership import RunLock, lock_path
from disha_bench.running.status import DONE, PENDING, RUNNING, collect
from disha_bench.training import checkpointer as checkpoint
from disha_bench.training.loop import FitState
from disha_bench.training.resume import FitControl, fit_state_from_json, fit_state_to_json
from disha_bench.training.sampler import GlobalBatches

SUITE = {
    "name": "ckpt-test",
    "model": {"name": "tiny-llama"},
    "tasks": [{"name": "synthetic-sentiment", "train_limit": 8}],
    "methods": [{"name": "bone", "r": 16}, {"name": "pissa", "r": 4}, {"name": "olora", "r": 4}],
    "training": {"max_steps": 4},
    "output": {"report": False},
    "analysis": {"unadapted": False},  # no reference run: these tests are about one run
}


def _complete_checkpoint(root, step, reason="every"):
    path = root / checkpoint_layout.step_dir_name(step)
    path.mkdir(parents=True)
    (path / checkpoint_layout.MARKER).write_text(json.dumps({"step": step, "reason": reason, "saved_at": 0.0, "host": "h"}))
    return path


def test_only_complete_checkpoints_count_and_discard_removes_them(tmp_path):
    root = checkpoint_layout.checkpoints_root(tmp_path, "run-a")
    _complete_checkpoint(root, 2)
    _complete_checkpoint(root, 10)
    (root / ".tmp-step-00000012").mkdir()  # being written when the run was killed
    (root / "step-00000014").mkdir()  # renamed without its marker: never happens, never trusted
    assert checkpoint_layout.latest(root).name == "step-00000010"
    assert checkpoint_layout.read_marker(checkpoint_layout.latest(root))["step"] == 10
    checkpoint_layout.discard(tmp_path, ["run-a"])
    assert not root.exists() and checkpoint_layout.latest(root) is None


def test_fit_state_survives_json_and_the_sampler_continues_exactly():
    sampler = GlobalBatches(10, 3, 1, 0, seed=5)
    for _ in range(5):  # into the second epoch
        sampler.next()
    state = FitState(sampler, step=5, steps=[StepLog(i, 1.0 / i, 1e-3, 0.5, 30, 0.1) for i in range(1, 6)],
                     train_time_s=0.5, resumed_from_step=3)
    data = json.loads(json.dumps(fit_state_to_json(state)))
    assert "sampler" not in data and "resumed_from_step" not in data
    fresh = GlobalBatches(10, 3, 1, 0, seed=5)
    fresh.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    restored = fit_state_from_json(data, fresh)
    assert restored.steps == state.steps and isinstance(restored.steps[0], StepLog)
    assert (restored.step, restored.train_time_s, restored.status) == (5, 0.5, COMPLETE)
    assert [fresh.next() for _ in range(7)] == [sampler.next() for _ in range(7)]


def test_pause_hook_matches_run_ids(monkeypatch):
    monkeypatch.setenv(checkpoint.PAUSE_ENV, "3:*bone*")
    assert checkpoint._pause_step("sst2-bone-s0-abc") == 3 and checkpoint._pause_step("sst2-lora-s0-abc") == 0
    monkeypatch.setenv(checkpoint.PAUSE_ENV, "7")
    assert checkpoint._pause_step("anything") == 7
    monkeypatch.delenv(checkpoint.PAUSE_ENV)
    assert checkpoint._pause_step("anything") == 0


def test_frozen_weights_are_saved_only_for_methods_that_rewrite_them(tmp_path):
    from disha_bench.config.expansion import expand_runs
    from disha_bench.config.suite import load_suite

    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    suite, _ = load_suite(path)
    excluded = {}
    for run in expand_runs(suite):
        spec = run.model_copy(update={"checkpoint_dir": str(tmp_path / run.run_id), "checkpoint_every": 2})
        excluded[run.method.name] = FitControl.for_run(spec, engine=None, device=None).checkpointer.exclude_frozen
    assert excluded == {"bone": True, "pissa": False, "olora": False}


def test_grace_reaches_torchrun(monkeypatch):
    monkeypatch.setenv(checkpoint_layout.GRACE_ENV, "45")
    monkeypatch.delenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", raising=False)
    env = spawn.launch_env(2)
    assert checkpoint_layout.stop_grace_s() == 45.0 and env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "45"
    assert "SIGUSR1" in env["TORCHELASTIC_SIGNALS_TO_HANDLE"].split(",")


def _result(out, run_id, status, node="", hardware=None, error=None, resumed=None):
    info = RunInfo(run_id=run_id, suite="s", task="t", method="m", seed=0, status=status, error=error, node=node,
                   resumed_from_step=resumed)
    write_result(out / f"{run_id}.json", RunResult(run=info, meta=Meta(hardware=hardware or {})))


def test_status_shows_every_state_and_when_runs_span_machines(tmp_path, capsys):
    out = tmp_path / "results"
    _result(out, "a-done", COMPLETE, node="node1", hardware={"gpus": ["H100"] * 8}, resumed=300)
    _result(out, "b-budget", BUDGET_STOPPED, node="node2", hardware={"gpus": ["A100"] * 8})
    _result(out, "c-evalfail", EVAL_FAILED, node="node1", hardware={"gpus": ["H100"] * 8})
    _result(out, "d-failed", FAILED, error="worker exited with code -9")
    _complete_checkpoint(checkpoint_layout.checkpoints_root(out, "d-failed"), 40)
    (out / ".runs").mkdir(exist_ok=True)
    (out / ".runs" / "e-queued.job.json").write_text(json.dumps({"job_id": "991", "launcher": "slurm"}))
    lock = RunLock(lock_path(out, "f-running"))
    assert lock.acquire()
    (out / ".runs" / "f-running.log").write_text("[disha] f-running: step 30/100 loss 1.0\n")
    try:
        states = {s.run_id: s for s in collect(out)}
        assert {k: s.state for k, s in states.items()} == {
            "a-done": DONE, "b-budget": DONE, "c-evalfail": EVAL_FAILED, "d-failed": FAILED,
            "e-queued": PENDING, "f-running": RUNNING,
        }
        assert states["a-done"].detail == "complete (resumed from step 300)" and states["b-budget"].detail == BUDGET_STOPPED
        assert "resumes from step 40" in states["d-failed"].detail
        assert "job 991" in states["e-queued"].detail
        assert f"{socket.gethostname()} pid {os.getpid()}" in states["f-running"].detail and "step 30/100" in states["f-running"].detail
        assert main(["status", str(out)]) == 0
        printed = capsys.readouterr().out
        assert printed.splitlines()[0] == "2 done (1 complete, 1 stopped_by_budget), 1 running, 1 failed, 1 evaluation_failed, 1 pending (of 6 runs)"
        assert "runs span 2 machines: node1 (2), node2 (1)" in printed
        assert "2 machine types" in printed and "compare throughput and memory only within one type" in printed
    finally:
        lock.release()
    assert main(["status", str(tmp_path / "missing")]) == 2


def test_slurm_launcher_without_slurm_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    if any(os.access(os.path.join(d, "srun"), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("this machine has Slurm")
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --launcher slurm:") and "submitit-local" in err and "\n" not in err
    assert main(["run", str(path), "--launcher", "slurm", "--nproc", "2"]) == 2
    assert main(["run", str(path), "--stop-grace", "0"]) == 2


def _manifested_checkpoint(root, step):
    """A checkpoint laid out as Checkpointer.save writes it, with its manifest."""
    path = root / checkpoint_layout.step_dir_name(step)
    (path / "ds").mkdir(parents=True)
    (path / "ds" / "optim_states.pt").write_bytes(bytes(range(256)) * 4)
    (path / checkpoint_layout.STATE_FILE).write_text(json.dumps({"step": step}))
    marker = {"step": step, "reason": "every", "saved_at": 0.0, "host": "h", "files": checkpoint.manifest(path)}
    (path / checkpoint_layout.MARKER).write_text(json.dumps(marker))
    return path


@pytest.mark.parametrize("damage, problem", [
    (lambda p: (p / checkpoint_layout.STATE_FILE).write_text("{"), "state.json has 1 bytes"),
    (lambda p: (p / "ds" / "optim_states.pt").write_bytes(b"\0" * 1024), "ds/optim_states.pt does not match its checksum"),
    (lambda p: (p / "ds" / "optim_states.pt").unlink(), "ds/optim_states.pt is missing"),
    (lambda p: (p / checkpoint_layout.MARKER).write_text("{"), "unreadable"),
])
def test_a_damaged_checkpoint_is_set_aside_for_the_one_before(tmp_path, damage, problem):
    root = tmp_path / "checkpoints"
    _manifested_checkpoint(root, 2)
    newest = _manifested_checkpoint(root, 4)
    assert checkpoint.verify(newest) is None
    damage(newest)
    assert problem in checkpoint.verify(newest)
    said = []
    assert checkpoint.resumable(root, said.append).name == "step-00000002"
    assert (root / ".damaged-step-00000004").is_dir() and not newest.exists()
    assert len(said) == 2 and problem in said[0] and "previous complete checkpoint, step-00000002" in said[1]


def test_no_whole_checkpoint_left_means_step_0_with_a_warning(tmp_path):
    root = tmp_path / "checkpoints"
    only = _manifested_checkpoint(root, 2)
    (only / checkpoint_layout.STATE_FILE).write_text("{")
    said = []
    assert checkpoint.resumable(root, said.append) is None
    assert said[-1] == "warning: no whole checkpoint left; the run starts again from step 0"
    assert checkpoint.resumable(root, said.append) is None and len(said) == 2  # nothing more to say
