"""A suite over a Slurm cluster: each unfinished run is its own job (one node, N GPUs), via submitit.

    disha-bench run suites/nlg.yaml --launcher slurm --slurm-partition gpu --gpus-per-run 8 --slurm-time 720
    disha-bench status results/nlg          # done / running / failed / pending
    disha-bench run suites/nlg.yaml --launcher slurm    # again: resubmits what is unfinished
    disha-bench report results/nlg          # also on a partly finished suite

Inside a job, the ordinary runner trains the one run (`run_suite(only=[run_id])`: torchrun with N
ranks, DeepSpeed inside), writing into the same results folder, which must be on a filesystem
every node shares. The run's lock file makes its job its only owner; the result and checkpoints are
renamed into place. On preemption or at the time limit (submitit asks Slurm for SIGUSR2 shortly
before), the job forwards SIGTERM to the run's workers, which save a checkpoint, and submitit
requeues the job; the requeued job resumes the run from that checkpoint. `--launcher submitit-local`
runs the same jobs as local processes (submitit's LocalExecutor), which cannot requeue by itself:
run the command again to resubmit.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from disha_bench.config.expansion import expand_runs
from disha_bench.config.suite import load_suite
from disha_bench.contracts import checkpoints as checkpoint_layout
from disha_bench.contracts.results import FINAL_STATUSES, read_result
from disha_bench.core.datasets import resolve_data_dir
from disha_bench.core.errors import UserError
from disha_bench.core.io import write_json_atomic
from disha_bench.running import runner, worker
from disha_bench.running.ownership import is_stale, lock_path, read_lock
from disha_bench.running.status import JOB_SUFFIX, collect, render


@dataclass
class SlurmOptions:
    """What each run's job asks Slurm for."""

    partition: str | None = None
    """Slurm partition (`--slurm-partition`); null: the cluster's default."""
    gpus_per_run: int = 1
    """GPUs of the one node each run gets; the run trains on that many ranks (torchrun)."""
    time_min: int = 24 * 60
    """Time limit of each job in minutes (`--slurm-time`); a run longer than this is requeued and resumes."""
    cpus_per_run: int | None = None
    """CPU cores per job; null: 8 per GPU."""
    mem_gb: int | None = None
    """Memory per job in GB; null: the partition's default."""
    account: str | None = None
    """Slurm account to charge (`--slurm-account`)."""
    constraint: str | None = None
    """Node feature constraint (`--slurm-constraint`), e.g. one GPU type so that throughput compares."""


class RunJob:
    """The callable each job runs: the ordinary runner on one run. Checkpointable (submitit calls
    `checkpoint` on SIGUSR2: preemption or time limit), so the job is requeued after saving."""

    def __init__(self, suite_path: str, out: str, overrides: list[str], run_id: str, nproc: int,
                 data_dir: str | None, command: str, grace_s: float):
        self.suite_path, self.out, self.overrides, self.run_id = suite_path, out, overrides, run_id
        self.nproc, self.data_dir, self.command, self.grace_s = nproc, data_dir, command, grace_s

    def __call__(self) -> int:
        os.environ[checkpoint_layout.GRACE_ENV] = str(self.grace_s)
        return runner.run_suite(self.suite_path, out=self.out, overrides=self.overrides, only=[self.run_id],
                                nproc=self.nproc, data_dir=self.data_dir, command=self.command, write_report=False)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Ask the run's workers to save a checkpoint and stop, wait for them, then requeue this job."""
        import submitit

        stop_workers(self.grace_s)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def stop_workers(grace_s: float) -> None:
    """SIGTERM every worker group the runner waits for and wait up to the grace for them to exit."""
    import signal

    for proc in list(worker.RUNNING):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.time() + grace_s
    for proc in list(worker.RUNNING):
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except Exception:  # still running after the grace: the scheduler's SIGKILL follows
            pass


def submit_suite(suite_path: str, launcher: str, options: SlurmOptions, out: str | None = None,
                 overrides: Sequence[str] = (), only: Sequence[str] = (), fresh: bool = False,
                 data_dir: str | None = None, command: str = "", wait: bool = False) -> int:
    """Submit each unfinished selected run as its own job; with `wait`, wait for them and print the
    status (exit 1 when a run did not finish). Returns 0 once submitted otherwise."""
    suite, _ = load_suite(suite_path, list(overrides))
    if options.gpus_per_run < 1:
        raise UserError(f"--gpus-per-run must be at least 1, got {options.gpus_per_run}")
    runs = [r for r in expand_runs(suite, options.gpus_per_run) if runner._selected(r, only)]
    if not runs:
        raise UserError(f"--only {' '.join(only)} matches no run of this suite", file=suite_path)
    results_dir = (Path(out) if out else Path("results") / suite.name).resolve()
    if fresh:
        runner._set_aside(results_dir, [run.run_id for run in runs] if only else None)
        checkpoint_layout.discard(results_dir, [run.run_id for run in runs])
    executor = make_executor(launcher, options, results_dir / ".submitit")
    data_dir = resolve_data_dir(data_dir)
    jobs = []
    for run in runs:
        run_id = run.run_id
        reason = _not_submitted_because(results_dir, run_id, launcher)
        if reason:
            print(f"{run_id}: {reason}, not submitted", flush=True)
            continue
        executor.update_parameters(**{"job_name" if launcher == "slurm" else "name": f"disha-{run_id}"[:120]})
        job = executor.submit(RunJob(str(Path(suite_path).resolve()), str(results_dir), list(overrides), run_id,
                                     options.gpus_per_run, data_dir, command, checkpoint_layout.stop_grace_s()))
        write_json_atomic(results_dir / ".runs" / f"{run_id}{JOB_SUFFIX}",
                          {"job_id": str(job.job_id), "launcher": launcher, "submitted_at": time.time()})
        print(f"{run_id}: submitted as job {job.job_id}", flush=True)
        jobs.append(job)
    print(f"{len(jobs)} jobs submitted; watch them with: disha-bench status {results_dir}", flush=True)
    if not wait:
        return 0
    for job in jobs:
        _wait(job)
    states = collect(results_dir)
    print(render(states))
    if suite.output.report:
        runner._write_report(suite, results_dir, command, full_run=not only)
    unfinished = [r for r in runs if not _final(results_dir, r.run_id)]
    return 1 if unfinished else 0


def make_executor(launcher: str, options: SlurmOptions, folder: Path):
    """A submitit executor: Slurm, or local processes for `submitit-local`."""
    import submitit

    if launcher == "submitit-local":
        local = submitit.LocalExecutor(folder=folder)
        local.update_parameters(timeout_min=options.time_min)
        return local
    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as err:  # no srun on this machine
        raise UserError(f"--launcher slurm: {err} (--launcher submitit-local runs the same jobs here)") from None
    executor.update_parameters(**slurm_parameters(options))
    return executor


def slurm_parameters(options: SlurmOptions) -> dict[str, Any]:
    """sbatch settings of each run's job (submitit.SlurmExecutor names)."""
    parameters = {
        "nodes": 1, "ntasks_per_node": 1, "gpus_per_node": options.gpus_per_run, "time": options.time_min,
        "cpus_per_task": options.cpus_per_run or 8 * options.gpus_per_run,
        # SIGUSR2 this long before the time limit: the grace to checkpoint, plus a margin.
        "signal_delay_s": int(checkpoint_layout.stop_grace_s()) + 30,
    }
    optional = {"partition": options.partition, "mem": f"{options.mem_gb}GB" if options.mem_gb else None,
                "account": options.account, "constraint": options.constraint}
    return {**parameters, **{k: v for k, v in optional.items() if v}}


def _not_submitted_because(results_dir: Path, run_id: str, launcher: str) -> str | None:
    previous = read_result(results_dir / f"{run_id}.json")
    if previous is not None and previous.run.status in FINAL_STATUSES:
        return previous.run.status
    owner = read_lock(lock_path(results_dir, run_id))
    if owner is not None and not is_stale(*owner):
        return f"running ({owner[0].describe()})"
    if launcher == "slurm" and _slurm_job_waiting(results_dir, run_id):
        return "its job is still queued"
    return None


def _slurm_job_waiting(results_dir: Path, run_id: str) -> bool:
    """Whether the job submitted earlier for this run is still pending in Slurm's queue."""
    try:
        job = json.loads((results_dir / ".runs" / f"{run_id}{JOB_SUFFIX}").read_text())
        import submitit

        state = submitit.SlurmJob(folder=results_dir / ".submitit", job_id=job["job_id"]).state
    except Exception:  # no earlier job, or sacct unavailable: submit
        return False
    return state in ("PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED")


def _wait(job) -> None:
    try:
        job.result()
    except Exception as err:  # the job failed or was killed: its run shows up in the status
        print(f"job {job.job_id}: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}", flush=True)


def _final(results_dir: Path, run_id: str) -> bool:
    result = read_result(results_dir / f"{run_id}.json")
    return result is not None and result.run.status in FINAL_STATUSES
