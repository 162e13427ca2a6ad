"""Ways to run a suite's runs somewhere else than this process's machine, one job per run.

    disha-bench run suites/nlg.yaml --launcher slurm --slurm-partition gpu --gpus-per-run 8

`slurm` submits through submitit (`launchers/slurm.py`); `submitit-local` runs the same jobs as
local processes through submitit's LocalExecutor (the Slurm path without a cluster: tests, a
workstation). The default `local` is the in-process suite loop of `runner.py`.
"""

LAUNCHERS = ("local", "slurm", "submitit-local")
