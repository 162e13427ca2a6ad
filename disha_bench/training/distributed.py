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
import signal
import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

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
        setattr(importlib.import_module("deepspeed.comm.torch"), "build_shm_op", lambda: None)
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
    from disha_bench.core.errors import UserError

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


def leave_process_group() -> None:
    """Every rank waits for the others (rank 0 has written the result), then closes the group.

    A rank that simply exits closes its sockets while a peer's gloo threads may still use them;
    gloo then aborts the peer (SIGABRT), and the launcher reports a finished run as failed.
    """
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    try:
        if world_size() > 1:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    except Exception as err:  # the result is already written: a peer gone early changes nothing
        print(f"{LOG_PREFIX} closing the process group: {err}", flush=True)


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


def die_with_launcher() -> None:
    """In a rank that torchrun or the deepspeed launcher started: die when the launcher dies.

    torchrun starts each rank in a session of its own, so a runner killed with SIGKILL (torchrun
    dies with it) would leave the ranks training on, unowned, beside the re-run that resumes the run.
    """
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the launcher died before the line above took effect
        os._exit(1)


def _load_libc():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


# Loaded once here, not in die_with_parent: as a Popen preexec_fn it runs between fork and exec in
# a process whose parent has threads (the run lock's heartbeat), where loading a library may deadlock.
_LIBC = _load_libc()


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies, even by SIGKILL (no orphaned training)."""
    try:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except AttributeError:  # no libc.so.6 (not Linux), or no prctl
        pass
