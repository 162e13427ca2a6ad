"""How a run's worker process starts: a fresh interpreter, or a fork of a preloaded fork server.

Importing torch, DeepSpeed, transformers and PEFT can cost more than a smoke run trains: seconds
on an idle machine, minutes on a busy one. On CPU the runner therefore starts the standard
library's fork server once, with the stack imported (`preload`), and forks one child per
single-process run from it. The child is still its own process - own address space, own session,
own peak memory, killed with the runner - it only skips the imports.

Why a fork server and not a fork of the runner: a process forked after its parent ran a parallel
torch op inherits a dead OpenMP thread pool and can hang in its first parallel region (seen here
after one 512x512 matmul). The fork server is a fresh interpreter that imports and never computes,
whatever the runner (or a test session) did before.

Runs on CUDA and runs with several ranks always start fresh interpreters: torchrun spawns its own.
Set DISHA_BENCH_FORK=0 to always start fresh interpreters.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import subprocess
import sys
import traceback
from multiprocessing import reduction

from disha_bench.training.distributed import die_with_parent

# What a run imports, so that its fork finds it loaded; modules a run may not need are cheap extras.
PRELOADED = (
    "torch", "deepspeed", "transformers", "peft", "transformers.tokenization_utils_tokenizers",
    # deepspeed.initialize imports this on every call (it pulls in torch._inductor: ~1 minute on 2 cores).
    "deepspeed.runtime.zero.muon.muon_optimizer",
    "transformers.models.llama.modeling_llama", "transformers.models.bert.modeling_bert",
    "disha_bench.training.recipe", "disha_bench.methods", "disha_bench.tasks", "disha_bench.models",
    "disha_bench.analysis.convergence", "disha_bench.training.memory",
)


def can_fork(nproc: int, hostfile: str | None) -> bool:
    """Fork only single-process CPU runs, on systems that have fork."""
    if nproc != 1 or hostfile or not hasattr(os, "fork") or os.environ.get("DISHA_BENCH_FORK", "1") == "0":
        return False
    accelerator = os.environ.get("DS_ACCELERATOR")
    if accelerator is not None:
        return accelerator == "cpu"
    import torch

    # A CPU build never touches a GPU; a GPU build forks only when DS_ACCELERATOR=cpu says so.
    return torch.version.cuda is None and torch.version.hip is None


_fork_server: multiprocessing.context.ForkServerContext | None = None
RUNNING: set = set()
"""Worker processes (Popen or ForkedWorker) the runner is waiting for: a scheduler's preemption
handler (launchers.slurm) forwards its stop signal to them."""


def is_preloaded() -> bool:
    return _fork_server is not None


def preload() -> multiprocessing.context.ForkServerContext:
    """Start the fork server, which imports the training stack once (in `import_stack`)."""
    global _fork_server
    if _fork_server is not None:
        return _fork_server
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # the server inherits it; DeepSpeed reads it at import
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["disha_bench.running.worker_preload"])
    from multiprocessing import forkserver

    forkserver.ensure_running()
    _fork_server = context
    return context


def import_stack() -> None:
    """In the fork server: import what runs need, then keep those objects out of every collection."""
    import gc
    import importlib

    for module in PRELOADED:
        try:
            importlib.import_module(module)
        except Exception:  # a module this library version lacks: the run imports what it needs itself
            pass
    # The CPython recipe for pre-forking servers: children do not walk (and copy) these objects.
    gc.freeze()


class ForkedWorker:
    """The part of `subprocess.Popen` the runner uses: pid, stdout lines, poll(), wait(), returncode.

    `main(args) -> int` runs in a child of the fork server, like `python -m module args` would run.
    """

    def __init__(self, main, args: list[str], env: dict[str, str]):
        fork_server = preload()
        read_end, write_end = os.pipe()
        self._process = fork_server.Process(target=_run_child, args=(main, args, env, _PassedFd(write_end)))
        try:
            self._process.start()  # sends write_end to the fork server with the request
        finally:
            os.close(write_end)  # the child holds the only write end: EOF when it exits
        self.pid = self._process.pid
        self.stdout = io.TextIOWrapper(io.FileIO(read_end, "r"), errors="replace")

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode  # negative signal number when killed, like Popen

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)  # join(None) returns only at exit
        return self.returncode


def call_in_own_process(function, *args, fork_server: bool = True):
    """`function(*args)` in a process of its own, returning its (picklable) result: benchmarks use it
    for a clean per-case peak memory. Forked from the fork server on CPU (no re-import); pass
    fork_server=False on CUDA, where only a spawned interpreter may initialise the device."""
    context = preload() if fork_server else multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_call_and_send, args=(function, args, send))
    process.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:
        status, payload = "error", None
    process.join()
    if status != "ok":
        raise RuntimeError(payload or f"the process died (exit code {process.exitcode})")
    return payload


def _call_and_send(function, args, connection) -> None:
    try:
        connection.send(("ok", function(*args)))
    except BaseException as err:  # report it: never leave the parent waiting
        connection.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
    finally:
        connection.close()


class _PassedFd:
    """A file descriptor that travels to the fork server's child with the start request."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        return _received_fd, (reduction.DupFd(self.fd),)


def _received_fd(passed) -> int:
    return passed.detach()


def _run_child(main, args: list[str], env: dict[str, str], output_fd: int) -> None:
    """In the forked child: become a worker process as `python -m ...` would, run, and exit."""
    code = 1
    try:
        os.setsid()  # like start_new_session: the runner kills the whole group
        die_with_parent()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        os.environ.clear()
        os.environ.update(env)
        # The fork server made its own start method the child's default; a fresh interpreter has none
        # (otherwise every semaphore the run creates, e.g. tqdm's lock, is tracked and reported leaked).
        multiprocessing.set_start_method(None, force=True)
        torch = sys.modules.get("torch")
        if torch is not None and "OMP_NUM_THREADS" in env:  # torch read it when the fork server imported it
            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        code = main(args)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)  # skip multiprocessing's own exit handling: the exit status is the run's



