"""Where a suite stands: which runs are done, running, failed or pending, read from its results folder.

    disha-bench status results/nlg

Works on a folder that jobs on other machines are still writing (a shared filesystem): it reads only
whole files (results and checkpoints are renamed into place) and the runs' lock files. A run is

    done               a final result: complete, stopped_by_budget or diverged (shown as such)
    evaluation_failed  trained, evaluation raised; a re-run evaluates again
    running            its lock is held by a live owner (host, pid, Slurm job)
    failed             a `failed` result and nobody owns it; a re-run starts (or resumes) it
    pending            submitted or started, no result yet, nobody owns it (waiting in the queue,
                       or stopped: then "resumes from step k" when a checkpoint exists)
    damaged            a `.json` file that is not a whole result (truncated, edited, foreign), with
                       why; a re-run of its suite sets it aside and runs the run again

A failed run shows its reason (the last error line) and the path of its log.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from disha_bench.contracts import checkpoints as checkpoint_layout
from disha_bench.contracts.results import EVAL_FAILED, FAILED, FINAL_STATUSES, DamagedResult, RunResult, verify_result
from disha_bench.running.ownership import is_stale, lock_path, read_lock

DONE, RUNNING, PENDING, DAMAGED = "done", "running", "pending", "damaged"
STATES = (DONE, RUNNING, FAILED, EVAL_FAILED, PENDING, DAMAGED)
JOB_SUFFIX = ".job.json"
"""`.runs/<run-id>.job.json`: written by a launcher that submitted the run as a job."""
_STEP_LINE = re.compile(r"step (\d+)/(\d+)")


@dataclass
class RunState:
    """One run's row in the status table."""

    run_id: str
    """The run's id."""
    state: str
    """One of STATES."""
    detail: str
    """Result status, owner, step reached, resumable checkpoint or job id, in words."""
    node: str = ""
    """Host of the run's result (rank 0), when it has one."""
    machine: str = ""
    """Machine type of the result: GPU names and count, else the CPU model."""


def collect(results_dir: Path) -> list[RunState]:
    """The state of every run the folder knows of (a result, a started run or a submitted job)."""
    results_dir = Path(results_dir)
    run_ids = {p.stem for p in results_dir.glob("*.json")}
    runs = results_dir / ".runs"
    if runs.is_dir():
        run_ids |= {p.name[: -len(".spec.json")] for p in runs.glob("*.spec.json")}
        run_ids |= {p.name[: -len(JOB_SUFFIX)] for p in runs.glob(f"*{JOB_SUFFIX}")}
        run_ids |= {p.name[: -len(".lock")] for p in runs.glob("*.lock")}
    return [_state(results_dir, run_id) for run_id in sorted(run_ids)]


def _state(results_dir: Path, run_id: str) -> RunState:
    try:
        result = verify_result(results_dir / f"{run_id}.json")
    except DamagedResult as err:
        return RunState(run_id, DAMAGED, f"{run_id}.json {err}")
    if result is not None and result.run.status in FINAL_STATUSES + (EVAL_FAILED,):
        state = DONE if result.run.status in FINAL_STATUSES else EVAL_FAILED
        detail = result.run.status + (f" (resumed from step {result.run.resumed_from_step})" if result.run.resumed_from_step else "")
        return RunState(run_id, state, detail, result.run.node, machine_type(result))
    owner = read_lock(lock_path(results_dir, run_id))
    if owner is not None and not is_stale(*owner):
        step = _last_step(results_dir / ".runs" / f"{run_id}.log")
        return RunState(run_id, RUNNING, f"{owner[0].describe()}" + (f", step {step}" if step else ""))
    saved = checkpoint_layout.latest(checkpoint_layout.checkpoints_root(results_dir, run_id))
    resumes = f"resumes from step {checkpoint_layout.read_marker(saved)['step']}" if saved else ""
    if result is not None:  # status failed
        log = results_dir / ".runs" / f"{run_id}.log"
        where = f"log {log}" if log.is_file() else ""
        return RunState(run_id, FAILED, "; ".join(x for x in (last_error_line(result.run.error), resumes, where) if x))
    job = _job(results_dir, run_id)
    return RunState(run_id, PENDING, ", ".join(x for x in (job, resumes) if x) or "started, no result")


def last_error_line(error: str | None, width: int = 160) -> str:
    """The last line of a recorded error (a worker's tail joins lines with ' | '), cut to `width`."""
    text = (error or "").strip()
    head, _, tail = text.partition(": ")
    lines = [part.strip() for part in tail.split(" | ") if part.strip()] if " | " in tail else []
    line = f"{head}: {lines[-1]}" if lines else text
    return line if len(line) <= width else line[: width - 3] + "..."


def machine_type(result: RunResult) -> str:
    hardware = result.meta.hardware or {}
    gpus = hardware.get("gpus") or []
    if gpus:
        return f"{len(gpus)} x {gpus[0]}"
    return str(hardware.get("cpu") or "")


def _last_step(log: Path) -> str | None:
    try:
        matches = _STEP_LINE.findall(log.read_text(errors="replace")[-20_000:])
    except OSError:
        return None
    return f"{matches[-1][0]}/{matches[-1][1]}" if matches else None


def _job(results_dir: Path, run_id: str) -> str:
    try:
        job = json.loads((results_dir / ".runs" / f"{run_id}{JOB_SUFFIX}").read_text())
    except (OSError, ValueError):
        return ""
    return f"job {job.get('job_id')} ({job.get('launcher')})"


def render(states: list[RunState]) -> str:
    counts = Counter(s.state for s in states)
    done = Counter(s.detail.split(" ", 1)[0] for s in states if s.state == DONE)
    parts = [f"{counts.get(state, 0)} {state}" for state in STATES if state != DAMAGED or counts.get(state)]
    if done:
        parts[0] += " (" + ", ".join(f"{n} {status}" for status, n in sorted(done.items())) + ")"
    lines = [", ".join(parts) + f" (of {len(states)} runs)"]
    width = max((len(s.run_id) for s in states), default=0)
    for s in states:
        where = f" [{s.node}]" if s.node else ""
        lines.append(f"  {s.run_id:<{width}}  {s.state:<17} {s.detail}{where}")
    lines += spanning_note(states)
    return "\n".join(lines)


def spanning_note(states: list[RunState]) -> list[str]:
    """A warning when finished runs ran on several machines: throughput and memory compare only
    within one machine type."""
    nodes = Counter(s.node for s in states if s.node)
    machines = Counter(s.machine for s in states if s.machine)
    notes = []
    if len(nodes) > 1:
        notes.append(f"runs span {len(nodes)} machines: " + ", ".join(f"{n} ({c})" for n, c in sorted(nodes.items())))
    if len(machines) > 1:
        notes.append(f"and {len(machines)} machine types: " + "; ".join(f"{m} ({c})" for m, c in sorted(machines.items()))
                     + ": compare throughput and memory only within one type")
    return notes



