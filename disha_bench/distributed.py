"""Process-group plumbing shared by the runner (launching) and the worker (joining).

One process: the worker sets the five variables DeepSpeed reads itself (without them DeepSpeed
tries MPI). N ranks on one machine: torchrun. Several machines: the `deepspeed` launcher with a
hostfile. The same worker code runs under all three, on CPU (gloo) and on GPUs (NCCL).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_single_process_env() -> None:
    """Make a plain `python -m disha_bench.training` look like rank 0 of 1."""
    if "RANK" in os.environ:
        return
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    )


def skip_cpu_shm_build() -> None:
    """Stop DeepSpeed from JIT-compiling its CPU shared-memory all-reduce at every cold start.

    `init_distributed` builds that op on CPU (25 s idle, many minutes on a loaded machine) for
    DeepSpeed's inference all-reduce; training never calls it, and without it DeepSpeed falls back
    to torch.distributed (gloo) as it does on machines where the op cannot build.
    """
    import importlib

    try:
        # import_module, not `import a.b.c as m`: deepspeed.comm re-exports the name `torch`.
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    except ImportError:
        pass


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch_command(module: str, args: list[str], nproc: int, hostfile: str | None) -> list[str]:
    """The command line that starts `python -m module args` on the requested ranks."""
    if hostfile:
        return ["deepspeed", "--hostfile", hostfile, "--master_port", str(free_port()), "--module", module, *args]
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
    from disha_bench.checkpoint import stop_grace_s

    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(int(stop_grace_s())))
    env.setdefault("TORCHELASTIC_SIGNALS_TO_HANDLE", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    return env


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over ranks in one collective (identity on one rank)."""
    if world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(items: list[Any]) -> list[list[Any]]:
    """Every rank's list, indexed by rank (a one-item list on one rank)."""
    if world_size() == 1:
        return [items]
    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, items)
    return gathered


LOG_PREFIX = "[disha]"
"""Lines a worker prints with this prefix are progress the runner shows; everything goes to the log."""


def log(message: str) -> None:
    """A progress line, printed by rank 0 only."""
    if rank() == 0:
        print(f"{LOG_PREFIX} {message}", flush=True)
