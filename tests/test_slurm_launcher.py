"""A suite through the Slurm launcher's code path, on CPU: submitit's LocalExecutor, offline.

    python3 -m pytest -q tests/test_slurm_launcher.py

- Each run is its own submitit job writing into one results folder. One job is killed (SIGKILL of
  its whole process tree, as when a node dies) after its run saved a checkpoint; `status` shows it
  pending with the step it resumes from, `report` works on the partly finished suite; submitting
  again resubmits only that run, which resumes from its checkpoint. Its new job then gets SIGUSR2
  (the time limit is near): the run saves a checkpoint, submitit requeues the job, and the requeued
  job resumes the run and completes.
- The sbatch script a Slurm job gets: one node, N GPUs, the time limit, SIGUSR2 before it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from disha_bench.contracts import checkpoints as checkpoint_layout
from disha_bench.contracts.results import COMPLETE, load_results
from disha_bench.running.launchers.slurm import SlurmOptions, slurm_parameters, submit_suite
from disha_bench.running.status import DONE, PENDING, collect, render
from disha_bench.training import checkpointer as checkpoint

SUITE = {
    "name": "slurm-test",
    "model": {"name": "tiny-llama"},
    "tasks": [{"name": "synthetic-sentiment", "train_limit": 64, "eval_limit": 16}],
    "methods": [{"name": "lora", "r": 4}, {"name": "bone", "r": 16}],
    "training": {"max_steps": 6, "lr": 1.0e-3, "batch_size": 4, "max_length": 32, "warmup_steps": 0},
    "seeds": [0],
    "evaluation": {"batch_size": 8},
    "output": {"report": False, "checkpoint_every": 2},
    "analysis": {"unadapted": False},  # no reference run: these tests are about one run
}


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants, and wait until they are gone (or zombies)."""
    targets = [pid, *_descendants(pid)]
    for target in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    deadline = time.time() + 60
    while time.time() < deadline and any(_running(t) for t in targets):
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _logs(out: Path) -> str:
    parts = [p.read_text()[-2000:] for p in (out / ".runs").glob("*.log")]
    parts += [p.read_text()[-2000:] for p in (out / ".submitit").glob("*/*.err")] if (out / ".submitit").exists() else []
    return "\n".join(parts)


@pytest.mark.slow
def test_suite_through_submitit_local_resumes_killed_and_requeued_jobs(tmp_path, monkeypatch):
    suite_path = tmp_path / "suite.yaml"
    suite_path.write_text(yaml.safe_dump(SUITE))
    out = tmp_path / "results"
    options = SlurmOptions(time_min=60)
    monkeypatch.setenv(checkpoint.PAUSE_ENV, "3:*bone*")  # the bone run waits at step 3 until killed
    with contextlib.redirect_stdout(io.StringIO()):
        assert submit_suite(str(suite_path), "submitit-local", options, out=str(out)) == 0
    (bone_job,) = [p for p in (out / ".runs").glob("*bone*.job.json")]
    bone_id = bone_job.name[: -len(".job.json")]
    _wait_until(lambda: "paused at step 3" in (out / ".runs" / f"{bone_id}.log").read_text()
                and len(list(out.glob("*.json"))) == 1, out)
    _kill_tree(int(json.loads(bone_job.read_text())["job_id"]))  # a local job's id is its controller's pid

    states = {s.run_id: s for s in collect(out)}
    assert [s.state for s in states.values()].count(DONE) == 1
    assert states[bone_id].state == PENDING and "resumes from step 2" in states[bone_id].detail, render(list(states.values()))
    from disha_bench.analysis.report import write_report

    report = write_report(out, tmp_path / "partial.md")  # a partly finished suite reports what is there
    assert "slurm-test" in report.read_text()

    # Resubmitted: only the bone run. It resumes from step 2 and waits at step 5, where its job gets
    # SIGUSR2 (Slurm's "time limit near", sent by submitit's --signal): the workers save step 5 and
    # submitit requeues the job, which resumes from step 5 and completes.
    monkeypatch.setenv(checkpoint.PAUSE_ENV, "5:*bone*")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert submit_suite(str(suite_path), "submitit-local", options, out=str(out)) == 0
    assert "complete, not submitted" in printed.getvalue() and "1 jobs submitted" in printed.getvalue()
    _wait_until(lambda: "paused at step 5" in (out / ".runs" / f"{bone_id}.log").read_text(), out)
    controller = int(json.loads(bone_job.read_text())["job_id"])
    (task,) = [pid for pid in _descendants(controller) if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    os.kill(task, signal.SIGUSR2)
    _wait_until(lambda: len(load_results(out)) == 2, out)

    results = {r.run.run_id: r for r in load_results(out)}
    assert all(r.run.status == COMPLETE for r in results.values()), [r.run.error for r in results.values()]
    assert results[bone_id].run.resumed_from_step == 5 and len(results[bone_id].training.steps) == 6
    assert "resumed from the checkpoint of step 2" in "".join(p.read_text() for p in (out / ".submitit").rglob("*.out"))
    assert all(r.run.node for r in results.values())
    _wait_until(lambda: [s.state for s in collect(out)] == [DONE, DONE] and not list((out / ".runs").glob("*.lock")), out)


def _wait_until(condition, out: Path, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if condition():
                return
        except OSError:  # a file not there yet
            pass
        time.sleep(0.5)
    raise AssertionError(_logs(out))


def test_sbatch_script_of_a_run_job():
    import submitit.slurm.slurm as submitit_slurm

    options = SlurmOptions(partition="gpu", gpus_per_run=8, time_min=600, mem_gb=200, constraint="h100")
    script = submitit_slurm._make_sbatch_string("python -m x", "/tmp/jobs", **slurm_parameters(options))
    for line in ("--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu", "--time=600",
                 "--cpus-per-task=64", "--mem=200GB", "--constraint=h100",
                 f"--signal=USR2@{int(checkpoint_layout.stop_grace_s()) + 30}"):
        assert f"#SBATCH {line}\n" in script, line
