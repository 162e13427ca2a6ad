"""The cost phase: peak memory and throughput measured like a benchmark, after training.

    disha-bench run suites/smoke.yaml          # `cost: {repeats: 3, steps: 6}` in the suite; 0 repeats: off

A run's own memory and tokens/s are single readings, taken in a fixed method order; on a shared
machine drift then lines up with the method. Here, for every task and seed, each method trains
`cost.steps` steps again in `cost.repeats` short repeats, the methods interleaved round by round
(A B C, then again in a new order, ...), each round's order drawn from the seed, all on this
machine, each repeat a fresh worker process (so its memory high-water mark is its own peak;
training/cost_repeat.py). Every run's repeats go to `<results>/cost/<run-id>.json`, written once,
beside its result (which is never rewritten); `load_results` attaches them as `RunResult.cost`.
A run that already has its cost file is not measured again.
"""

from __future__ import annotations

import json
import random
import socket
from dataclasses import asdict
from pathlib import Path

from disha_bench.config.run_spec import RunSpec
from disha_bench.config.suite import Suite
from disha_bench.contracts.results import TRAINED_STATUSES, Cost, CostRepeat, cost_path, read_result
from disha_bench.core.io import write_json_atomic
from disha_bench.running import spawn, worker


def interleaved(members: list[RunSpec], repeats: int, task: str, seed: int) -> list[RunSpec]:
    """`repeats` rounds, each holding every member once, in an order drawn anew each round from
    the task and seed (the same on every machine)."""
    rng = random.Random(f"cost:{task}:{seed}")
    order: list[RunSpec] = []
    for _ in range(repeats):
        round_ = sorted(members, key=lambda r: r.method.label)
        rng.shuffle(round_)
        order += round_
    return order


def protocol(suite: Suite) -> str:
    threads = f", {suite.cost.threads} CPU thread(s)" if suite.cost.threads else ""
    return (f"{suite.cost.repeats} repeats of {suite.cost.steps} steps per method (first step left out of the medians), "
            f"methods interleaved round by round in an order drawn from the seed, each repeat a fresh process, "
            f"on {socket.gethostname()}{threads}")


def pending_groups(runs: list[RunSpec], results_dir: Path) -> dict[tuple[str, int], list[RunSpec]]:
    """(task, seed) -> the trained runs of that task and seed that have no cost file yet."""
    groups: dict[tuple[str, int], list[RunSpec]] = {}
    for run in runs:
        if run.is_unadapted or cost_path(results_dir, run.run_id).exists():
            continue
        result = read_result(results_dir / f"{run.run_id}.json")
        if result is not None and result.run.status in TRAINED_STATUSES:
            groups.setdefault((run.task.name, run.seed), []).append(run)
    return groups


def run_cost_phase(suite: Suite, runs: list[RunSpec], results_dir: Path, data_dir: str | None, nproc: int,
                   hostfile: str | None, fork: bool) -> None:
    """Measure every pending (task, seed) group; write each run's cost file when its repeats are in."""
    if suite.cost.repeats == 0:
        return
    groups = pending_groups(runs, results_dir)
    for (task, seed), members in groups.items():
        schedule = interleaved(members, suite.cost.repeats, task, seed)
        print(f"cost phase: {task} seed {seed}: {len(schedule)} repeats of {suite.cost.steps} steps "
              f"({' '.join(r.method.label for r in schedule)})", flush=True)
        measured: dict[str, list[CostRepeat]] = {r.run_id: [] for r in members}
        for position, run in enumerate(schedule):
            repeat = measure_once(run, position, suite.cost.steps, results_dir, data_dir, nproc, hostfile, fork,
                                  suite.cost.threads)
            if repeat is not None:
                measured[run.run_id].append(repeat)
        for run_id, repeats in measured.items():
            if repeats:
                write_json_atomic(cost_path(results_dir, run_id), asdict(Cost(protocol=protocol(suite), repeats=repeats)))


def measure_once(run: RunSpec, position: int, steps: int, results_dir: Path, data_dir: str | None, nproc: int,
                 hostfile: str | None, fork: bool, threads: int | None = None) -> CostRepeat | None:
    """One repeat in a fresh worker; None (and a line saying why) when it failed."""
    from disha_bench.running.spawn import _kill_tree, start_worker

    work = results_dir / ".runs" / "cost"
    work.mkdir(parents=True, exist_ok=True)
    stem = f"{run.run_id}.r{position}"
    out = work / f"{stem}.json"
    out.unlink(missing_ok=True)
    spec = run.model_copy(update={"data_dir": data_dir, "cost_repeat_path": str(out.resolve()), "cost_steps": steps})
    spec_path = work / f"{stem}.spec.json"
    write_json_atomic(spec_path, spec.model_dump(mode="json"))
    with open(work / f"{stem}.log", "w", buffering=1) as log:
        env = spawn.launch_env(nproc)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        proc = start_worker([str(spec_path.resolve())], env, nproc, hostfile, fork)
        worker.RUNNING.add(proc)
        try:
            for line in proc.stdout:
                log.write(line)
            proc.wait()
        except BaseException:
            _kill_tree(proc)
            raise
        finally:
            worker.RUNNING.discard(proc)
    try:
        repeat = CostRepeat(**{**json.loads(out.read_text()), "position": position})
    except (OSError, ValueError, TypeError):
        print(f"   cost repeat {position} of {run.run_id} failed (exit code {proc.returncode}); "
              f"see {work / (stem + '.log')}", flush=True)
        return None
    out.unlink(missing_ok=True)
    spec_path.unlink(missing_ok=True)
    return repeat
