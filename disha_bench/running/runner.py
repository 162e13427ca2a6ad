"""The suite runner: expand a suite into runs, skip finished ones, launch each run, write the report.

    disha-bench run suites/smoke.yaml
    disha-bench run suites/nlg.yaml --nproc 8 --set training.max_steps=500 --only 'gsm8k-bone-*'

Each run is a separate process (or a torchrun / deepspeed-launcher group): a crash or an
out-of-memory in one run cannot take the suite down, and peak-memory figures belong to one run.
A run's result file appears only when the run ends (atomic rename), so a suite interrupted by
Ctrl-C or SIGKILL resumes where it stopped and never touches a finished result.
"""

from __future__ import annotations

import fnmatch
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from disha_bench.config.expansion import expand_runs
from disha_bench.config.run_spec import RunSpec
from disha_bench.config.suite import Suite, load_suite
from disha_bench.contracts import checkpoints as checkpoint_layout
from disha_bench.contracts.results import (
    BUDGET_STOPPED,
    COMPLETE,
    COST_DIR,
    EVAL_FAILED,
    FAILED,
    FINAL_STATUSES,
    SUITE_FILE,
    DamagedResult,
    RunResult,
    cost_path,
    read_result,
    verify_result,
    write_result,
)
from disha_bench.core.datasets import resolve_data_dir
from disha_bench.core.errors import UserError, ensure_writable
from disha_bench.core.io import atomic_write_text, write_json_atomic
from disha_bench.running import preflight, progress, spawn, worker
from disha_bench.running.ownership import RunLock, lock_path
from disha_bench.running.spawn import _kill_tree, start_worker

INTERRUPTED = "interrupted"
"""Outcome (never a result status) of a run stopped by a signal after saving a checkpoint."""
ELSEWHERE = "running elsewhere"
"""Outcome of a run another process owns (its lock file is held)."""


def run_suite(
    suite_path: str,
    out: str | None = None,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    nproc: int = 1,
    hostfile: str | None = None,
    fresh: bool = False,
    data_dir: str | None = None,
    command: str = "",
    write_report: bool = True,
) -> int:
    """Run every selected run of the suite; 0 when all succeeded, 1 when some failed or diverged."""
    suite, _ = load_suite(suite_path, list(overrides))
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}")
    if hostfile and not Path(hostfile).is_file():
        raise UserError("hostfile not found", file=hostfile)
    world = _hostfile_slots(hostfile) if hostfile else nproc
    runs = [r for r in expand_runs(suite, world, suite_path) if _selected(r, only)]
    if not runs:
        raise UserError(f"--only {' '.join(only)} matches no run of this suite", file=suite_path)
    data_dir = resolve_data_dir(data_dir)
    results_dir = Path(out) if out else Path("results") / suite.name
    ensure_writable(results_dir, "results")
    preflight.check(suite, file=suite_path, data_dir=data_dir, task_names={r.task.name for r in runs})
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_dir / SUITE_FILE, Path(suite_path).read_text())
    if fresh:
        _set_aside(results_dir, [run.run_id for run in runs] if only else None)
        checkpoint_layout.discard(results_dir, [run.run_id for run in runs])
    fork = worker.can_fork(nproc, hostfile)
    finished = sum(1 for r in runs if _is_final(results_dir / f"{r.run_id}.json"))
    display = progress.SuiteProgress(len(runs), finished, loggers=suite.output.loggers, results_dir=results_dir)

    outcomes = [_run_one(run, f"[{index}/{len(runs)}]", suite, results_dir, data_dir, command, nproc, hostfile, fork)
                for index, run in enumerate(runs, 1)]
    display.close()
    from disha_bench.running.cost import run_cost_phase

    run_cost_phase(suite, runs, results_dir, data_dir, nproc, hostfile, fork)
    if suite.output.report and write_report:
        _write_report(suite, results_dir, command, full_run=not only)
    failed = [s for s in outcomes if s not in (COMPLETE, BUDGET_STOPPED, ELSEWHERE)]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs complete; results in {results_dir}", flush=True)
    return 1 if failed else 0


def _run_one(run: RunSpec, counter: str, suite: Suite, results_dir: Path, data_dir: str | None, command: str,
             nproc: int, hostfile: str | None, fork: bool) -> str:
    """Claim, launch and settle one run; its outcome (a result status, INTERRUPTED or ELSEWHERE)."""
    result_path = results_dir / f"{run.run_id}.json"
    lock, previous, skipped = _claim(results_dir, run.run_id)
    if skipped:
        print(f"{counter} {run.run_id}: {skipped}, skipped", flush=True)
        if lock is not None or previous is None:  # no lock and a skip: its result is final
            return ELSEWHERE
        return previous.run.status
    if lock is None:
        raise RuntimeError(f"{run.run_id}: _claim gave neither a lock nor a reason to skip")
    _set_damaged_aside(result_path, counter)
    if fork and not worker.is_preloaded():
        print("importing torch, DeepSpeed, transformers and PEFT once for all runs", flush=True)
        worker.preload()
    spec = _launch_spec(run, result_path, previous, suite, data_dir, command)
    what = "evaluation failed before, evaluating the saved adapter" if spec.reevaluate_from else "starting"
    print(f"{counter} {run.run_id}: {what}", flush=True)
    try:
        status = _launch(spec, results_dir, nproc, hostfile, fork)
    finally:
        lock.release()
    if status in FINAL_STATUSES and not suite.output.keep_checkpoints:
        checkpoint_layout.discard(results_dir, [run.run_id])
    print(f"{counter} {run.run_id}: {status}{_why(result_path, status)}", flush=True)
    return status


def _why(result_path: Path, status: str) -> str:
    """For a run that did not complete: its recorded reason (last error line) and where its log is."""
    if status in (COMPLETE, BUDGET_STOPPED, INTERRUPTED):
        return ""
    from disha_bench.running.status import last_error_line

    result = read_result(result_path)
    reason = last_error_line(result.run.error) if result is not None and result.run.status == status else ""
    log = result_path.parent / ".runs" / f"{result_path.stem}.log"
    return "".join(f"\n   {line}" for line in (reason, f"log: {log}") if line)


def _set_damaged_aside(result_path: Path, counter: str) -> None:
    """A damaged result file is never overwritten unseen: it moves to <out>/.damaged/ and the run
    runs again (we hold its lock)."""
    try:
        verify_result(result_path)
        return
    except DamagedResult as err:
        reason = str(err)
    target = result_path.parent / ".damaged" / datetime.now().strftime("%Y%m%d-%H%M%S") / result_path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    result_path.rename(target)
    print(f"{counter} {result_path.stem}: its result file was damaged ({reason}); running it again, "
          f"the damaged copy is kept at {target}", flush=True)


def _claim(results_dir: Path, run_id: str) -> tuple[RunLock | None, RunResult | None, str | None]:
    """(lock, earlier result, why skipped): the run is ours (its lock held) unless it is finished or
    another process owns it; in both cases the third item says which, in words."""
    previous = read_result(results_dir / f"{run_id}.json")
    if previous is not None and previous.run.status in FINAL_STATUSES:
        return None, previous, previous.run.status
    lock = RunLock(lock_path(results_dir, run_id))
    if not lock.acquire():
        # no holder: the lock file came and went twice while we looked (its owner finished meanwhile)
        return lock, previous, f"{ELSEWHERE} ({lock.holder.describe() if lock.holder else 'another process'})"
    previous = read_result(results_dir / f"{run_id}.json")  # again: another owner may just have finished it
    if previous is not None and previous.run.status in FINAL_STATUSES:
        lock.release()
        return None, previous, previous.run.status
    return lock, previous, None


def _launch_spec(run: RunSpec, result_path: Path, previous: RunResult | None, suite: Suite, data_dir: str | None,
                 command: str) -> RunSpec:
    """The run's spec with where to write; a run whose evaluation failed re-evaluates its saved adapter."""
    spec = run.model_copy(update={
        "result_path": str(result_path.resolve()),
        "adapter_dir": str((result_path.parent / "adapters" / run.run_id).resolve()),
        "keep_adapter": suite.output.save_adapter,
        "data_dir": data_dir,
        "command": command,
        "checkpoint_dir": str(checkpoint_layout.checkpoints_root(result_path.parent, run.run_id).resolve()),
        "checkpoint_every": suite.output.checkpoint_every,
    })
    if previous is not None and previous.run.status == EVAL_FAILED and spec.has_saved_adapter():
        spec.reevaluate_from = spec.result_path  # the training record is kept: evaluate its adapter
    return spec


def _launch(spec: RunSpec, results_dir: Path, nproc: int, hostfile: str | None, fork: bool) -> str:
    """Start one run's worker(s), stream its progress lines, and make sure a result file exists.

    Worker output goes to the run's log; progress events draw the display (`disha_bench.running.progress`),
    `[disha]` messages are echoed."""
    display = progress.active()
    if display is not None:
        display.run_started(spec.run_id)
    work = results_dir / ".runs"
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / f"{spec.run_id}.spec.json"
    write_json_atomic(spec_path, spec.model_dump(mode="json"))
    log_path = work / f"{spec.run_id}.log"
    args, env = [str(spec_path.resolve())], spawn.launch_env(nproc)
    started = time.time()
    with open(log_path, "w", buffering=1) as log:  # line-buffered: tail -f works
        proc = start_worker(args, env, nproc, hostfile, fork)
        worker.RUNNING.add(proc)
        try:
            for line in proc.stdout:
                log.write(line)
                if display is not None and display.feed(line):
                    continue
                if line.startswith("[disha]"):
                    print("   " + line.rstrip(), flush=True)
            proc.wait()
        except BaseException:
            _kill_tree(proc)
            raise
        finally:
            worker.RUNNING.discard(proc)
    status = _recorded_status(spec, results_dir, log_path, started, proc.returncode)
    if display is not None:
        display.run_finished(status)
    return status


def _recorded_status(spec: RunSpec, results_dir: Path, log_path: Path, started: float, returncode: int | None) -> str:
    """The status of the result the worker wrote; INTERRUPTED when it stopped on a signal after saving
    a checkpoint; else FAILED, recorded for a worker that died first."""
    result = read_result(Path(spec.result_path))
    if result is not None and result.run.finished_at >= datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"):
        return result.run.status
    saved = _checkpoint_on_signal_since(results_dir, spec.run_id, started)
    if saved is not None:  # stopped by a signal after saving: a re-run resumes, nothing failed
        print(f"   {spec.run_id}: stopped by a signal at step {saved}, checkpoint saved; re-run to resume", flush=True)
        return INTERRUPTED
    tail = _last_lines(log_path, 3)
    if spec.reevaluate_from:  # the earlier result holds the training record: never replace it
        print(f"   re-evaluation ended without a result (exit code {returncode}): {tail}", flush=True)
        return EVAL_FAILED
    # The worker died before writing (killed, out of memory, a rank crashed): record why.
    info = spec.run_info(FAILED, f"worker exited with code {returncode}: {tail}", started)
    write_result(Path(spec.result_path), RunResult(run=info))
    return FAILED


def _is_final(result_path: Path) -> bool:
    previous = read_result(result_path)
    return previous is not None and previous.run.status in FINAL_STATUSES


def _checkpoint_on_signal_since(results_dir: Path, run_id: str, started: float) -> int | None:
    """The step of a checkpoint this launch saved because of a stop signal, else None."""
    found = checkpoint_layout.latest(checkpoint_layout.checkpoints_root(results_dir, run_id))
    if found is None:
        return None
    marker = checkpoint_layout.read_marker(found)
    return marker["step"] if marker["reason"] == "signal" and marker["saved_at"] >= started else None


def _last_lines(path: Path, count: int) -> str:
    lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    return " | ".join(lines[-count:])[-600:]


def _selected(run: RunSpec, patterns: Sequence[str]) -> bool:
    """--only matches the run id or `task/method` (e.g. 'gsm8k/bone', '*/lora*', 'sst2-*-s0-*')."""
    if not patterns:
        return True
    names = (run.run_id, f"{run.task.name}/{run.method.label}")
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


def _set_aside(results_dir: Path, run_ids: list[str] | None) -> None:
    """--fresh: earlier results are moved, never deleted. All of them (also those of runs the suite no
    longer has), or with --only just those of the selected runs, so the others stay in the report."""
    if run_ids is None:
        existing = list(results_dir.glob("*.json"))
    else:
        existing = [p for p in (results_dir / f"{run_id}.json" for run_id in run_ids) if p.exists()]
    if not existing:
        return
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = results_dir / ".superseded" / stamp
    target.mkdir(parents=True, exist_ok=True)
    for path in existing:
        path.rename(target / path.name)
        cost = cost_path(results_dir, path.stem)  # its cost repeats go with it: a re-run measures anew
        if cost.exists():
            (target / COST_DIR).mkdir(exist_ok=True)
            cost.rename(target / COST_DIR / cost.name)
    print(f"--fresh: {len(existing)} earlier results moved to {target}", flush=True)


def _hostfile_slots(hostfile: str) -> int:
    slots = 0
    for line in Path(hostfile).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
        slots += int(fields.get("slots", 1))
    if slots == 0:
        raise UserError("no hosts in the hostfile; expected lines like 'node1 slots=8'", file=hostfile)
    return slots


def _write_report(suite: Suite, results_dir: Path, command: str, full_run: bool) -> Path | None:
    """The suite's leaderboard in reports/ only after a full run into the default results folder;
    otherwise a report beside the results. An existing report is never replaced by one built from
    fewer complete runs (report.write_report keeps it and says so)."""
    from disha_bench.analysis.report import write_report
    from disha_bench.config.expansion import reference_label

    return write_report(results_dir, report_destination(suite, results_dir, full_run), command=command,
                        targets=suite.convergence.targets, ema=suite.convergence.ema, reference=reference_label(suite))


def report_destination(suite: Suite, results_dir: Path, full_run: bool) -> Path:
    """reports/<suite>.md for a full run into the default results folder of a suite that keeps a
    leaderboard (`output.leaderboard`); else beside the results."""
    from disha_bench.analysis.report import destination

    return destination(suite.name, results_dir, full_run and suite.output.leaderboard)


def command_line() -> str:
    return "disha-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
