"""How a run's worker process starts: a fresh interpreter, or a fork of the preloaded runner.

Importing torch, DeepSpeed, transformers and PEFT costs more than a smoke run trains: about a
minute on an idle 2-core machine, five on a busy one. On CPU the runner therefore imports the
stack once (`preload`) and forks one child per single-process run. The child is still its own
process - own address space, own session, own peak memory, killed with the runner - it only
skips the imports. Runs on CUDA and runs with several ranks always start fresh interpreters:
CUDA cannot be used in a child forked after the parent touched it, and torchrun spawns its own.
Set DISHA_BENCH_FORK=0 to always start fresh interpreters.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
import traceback

# What a run imports, so that its fork finds it loaded; modules a run may not need are cheap extras.
PRELOADED = (
    "torch", "deepspeed", "transformers", "peft", "transformers.tokenization_utils_tokenizers",
    # deepspeed.initialize imports this on every call (it pulls in torch._inductor: ~1 minute on 2 cores).
    "deepspeed.runtime.zero.muon.muon_optimizer",
    "transformers.models.llama.modeling_llama", "transformers.models.bert.modeling_bert",
    "disha_bench.training", "disha_bench.methods", "disha_bench.tasks", "disha_bench.models",
    "disha_bench.convergence", "disha_bench.memory",
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


_preloaded = False


def is_preloaded() -> bool:
    return _preloaded


def preload() -> None:
    """Import the training stack once in the runner, before any run forks from it."""
    global _preloaded
    import gc
    import importlib

    if _preloaded:
        return
    _preloaded = True
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed picks its accelerator at import
    for module in PRELOADED:
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # a module this library version lacks: the run imports what it needs itself
    # The CPython recipe for pre-forking servers: children do not walk (and copy) these objects.
    gc.freeze()


class ForkedWorker:
    """The part of `subprocess.Popen` the runner uses: pid, stdout lines, wait(), returncode."""

    def __init__(self, module_main, args: list[str], env: dict[str, str]):
        read_end, write_end = os.pipe()
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # the child never returns from here
            os.close(read_end)
            _run_child(module_main, args, env, write_end)
        os.close(write_end)
        self.stdout = io.TextIOWrapper(io.FileIO(read_end, "r"), errors="replace")

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                import subprocess

                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode


def _run_child(module_main, args: list[str], env: dict[str, str], output_fd: int) -> None:
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
        torch = sys.modules.get("torch")
        if torch is not None and "OMP_NUM_THREADS" in env:  # torch read it when the runner imported it
            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        code = module_main(args)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies, even by SIGKILL (no orphaned training)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
