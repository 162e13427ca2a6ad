"""Running a suite: the suite loop and everything around the runs' processes.

    disha-bench run suites/smoke.yaml --out /tmp/smoke

`runner.py` (skip, launch, record failures, report), `spawn.py` (a run's command line and
environment, starting and stopping its worker), `worker.py` / `worker_preload.py` (the preloaded fork
server on CPU, fresh interpreters otherwise), `cost.py` (the cost phase's interleaved repeats),
`preflight.py` (data, model and sandbox available before the first run), `progress.py` (bars, plain
lines, metric loggers), `plan.py`, `status.py`, `ownership.py` (one owner per run) and `launchers/`
(Slurm through submitit). What runs inside a run's processes is `disha_bench.training`.
"""
