"""How the runner starts a run's processes: the command line (plain, torchrun or the deepspeed
launcher) and the environment the workers inherit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from disha_bench.contracts import checkpoints as checkpoint_layout
from disha_bench.running import worker
from disha_bench.training import distributed
from disha_bench.training.distributed import free_port

FORWARDED_ENV = ("HF_", "DISHA_BENCH_", "TORCH_EXTENSIONS_DIR", "TOKENIZERS_PARALLELISM", "DS_ACCELERATOR")
"""Variables (or prefixes) every node of a hostfile launch gets: HF_TOKEN, HF_HOME, HF_HUB_OFFLINE, ..."""


def forwarded_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of `env` that a hostfile launch forwards (one-line values only: the file is line-based)."""
    return {k: v for k, v in sorted(env.items()) if k.startswith(FORWARDED_ENV) and "\n" not in v}


def write_deepspeed_env(env: Mapping[str, str], directory: Path) -> Path:
    """A DeepSpeed environment file with the user's own `.deepspeed_env` lines, then `forwarded_env`.

    DS_ENV_FILE replaces the launcher's lookup of `~/.deepspeed_env` and `./.deepspeed_env`, so
    those lines are copied first. Owner-only permissions: the file can hold HF_TOKEN.
    """
    lines = []
    for own in (Path.home() / ".deepspeed_env", Path(".deepspeed_env")):
        if own.is_file():
            lines += [line for line in own.read_text().splitlines() if "=" in line]
    lines += [f"{key}={value}" for key, value in forwarded_env(env).items()]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"deepspeed_env.{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def launch_command(module: str, args: list[str], nproc: int, hostfile: str | None) -> list[str]:
    """The command line that starts `python -m module args` on the requested ranks."""
    if hostfile:
        from disha_bench.models import cache_dir

        env_file = write_deepspeed_env(launch_env(nproc), cache_dir() / "launch")
        return ["env", f"DS_ENV_FILE={env_file}", "deepspeed", "--hostfile", hostfile, "--master_port",
                str(free_port()), "--module", module, *args]
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", module, *args]
    return [sys.executable, "-m", module, *args]


def launch_env(nproc: int) -> dict[str, str]:
    """Environment for the workers: threads split between ranks, a persistent JIT-extension cache."""
    from disha_bench.models import cache_dir

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # DeepSpeed JIT-compiles ops on every cold start (about 25 s on CPU); keep them between runs.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
    env.setdefault("PYTHONUNBUFFERED", "1")
    # torchrun forwards SIGTERM (and SIGUSR1, when told to) to its workers and SIGKILLs them after
    # its shutdown timeout: give them the runner's grace to save a checkpoint.
    from disha_bench.contracts.checkpoints import stop_grace_s

    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(int(stop_grace_s())))
    env.setdefault("TORCHELASTIC_SIGNALS_TO_HANDLE", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    return env


WORKER_MODULE = "disha_bench.training"
"""`python -m` module of a worker (its __main__ runs training/launch.py)."""


def start_worker(args: list[str], env: dict[str, str], nproc: int, hostfile: str | None, fork: bool):
    """A worker process running `python -m disha_bench.training ARGS` (forked from the fork server
    when `fork`): a Popen-like object with stdout lines."""
    if fork:
        from disha_bench.training import launch

        return worker.ForkedWorker(launch.main, args, env)
    # A new session lets Ctrl-C / SIGTERM of the suite take the whole worker tree down.
    return subprocess.Popen(
        launch_command(WORKER_MODULE, args, nproc, hostfile), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True, preexec_fn=distributed.die_with_parent,
    )


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGTERM the worker group, then SIGKILL after the grace period: a training worker uses the
    grace to save a checkpoint (torchrun forwards the signal and waits as long)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=checkpoint_layout.stop_grace_s())
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
