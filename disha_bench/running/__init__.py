"""Running a suite: the suite loop and everything around one run's process.

    python3 -m disha_bench.cli run suites/smoke.yaml --out /tmp/smoke

`runner.py` (skip, launch, record failures, report), `worker.py` / `worker_preload.py` (how a run's
process starts: the preloaded fork server on CPU, fresh interpreters otherwise), `distributed.py`,
`preflight.py` (data, model and sandbox available before the first run), `progress.py`, `plan.py`,
`status.py`, `checkpoint.py`, `ownership.py` (one owner per run), `memory.py`, and `launchers/`
(Slurm through submitit). The training recipe one run executes is `disha_bench.training`.
"""
