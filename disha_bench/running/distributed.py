"""Process-group plumbing shared by the runner (launching) and the worker (joining).

One process: the worker sets the five variables DeepSpeed reads itself (without them DeepSpeed
tries MPI). N ranks on one machine: torchrun. Several machines: the `deepspeed` launcher with a
hostfile. The same worker code runs under all three, on CPU (gloo) and on GPUs (NCCL).

With a hostfile, what a run needs on every node (hub token and cache, disha-bench's settings,
the JIT-extension cache: `FORWARDED_ENV`) travels in a DeepSpeed environment file
(`DS_ENV_FILE`, read by the `deepspeed` launcher, which exports every line on each node).
`local_rank_zero_first` lets one process per node download models and data while the others wait.
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

if TYPE_CHECKING:
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


PG_TIMEOUT_ENV = "DISHA_BENCH_PG_TIMEOUT_MIN"
DEFAULT_PG_TIMEOUT_MIN = 120.0
"""Minutes a rank waits in a collective before the job is killed. DeepSpeed's own default (10 min)
is shorter than local rank 0 downloading a 7B model (13.5 GB) or exporting the merged model for
vLLM while the other ranks wait at a barrier."""


def process_group_timeout_min() -> float:
    """The process-group timeout in minutes: $DISHA_BENCH_PG_TIMEOUT_MIN (forwarded to every node),
    else DEFAULT_PG_TIMEOUT_MIN; a UserError when the variable is not a positive number."""
    from disha_bench.errors import UserError

    raw = os.environ.get(PG_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_PG_TIMEOUT_MIN
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if not (0 < minutes < float("inf")):
        raise UserError(f"{PG_TIMEOUT_ENV}={raw!r}: expected a positive number of minutes")
    return minutes


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


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
    from disha_bench.running.checkpoint import stop_grace_s

    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(int(stop_grace_s())))
    env.setdefault("TORCHELASTIC_SIGNALS_TO_HANDLE", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    return env


@contextmanager
def local_rank_zero_first() -> Iterator[None]:
    """Local rank 0 of each node runs the body first (downloads into the node's cache), then the rest.

    Needs the process group (after `deepspeed.init_distributed`); without one it just runs the body.
    """
    import torch  # here, not at the top: `disha-bench status` and `--help` must not import torch

    waits = world_size() > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if waits and not first:
        torch.distributed.barrier()
    try:
        yield
    finally:
        if waits and first:
            torch.distributed.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over ranks in one collective (identity on one rank)."""
    if world_size() == 1:
        return values
    import torch

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(items: list[Any]) -> list[list[Any]]:
    """Every rank's list, indexed by rank (a one-item list on one rank)."""
    if world_size() == 1:
        return [items]
    import torch

    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, items)
    return gathered


LOG_PREFIX = "[disha]"
"""Lines a worker prints with this prefix are progress the runner shows; everything goes to the log."""


def log(message: str) -> None:
    """A progress line, printed by rank 0 only."""
    if rank() == 0:
        print(f"{LOG_PREFIX} {message}", flush=True)
