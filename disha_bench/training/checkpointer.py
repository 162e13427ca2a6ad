"""Mid-run checkpoints: save atomically, find the last complete one, resume from it, remove them.

A run saves one every `output.checkpoint_every` optimizer steps, when training ends (so that a
preemption during a long evaluation does not cost the training), and when it receives SIGTERM or
SIGUSR1 (what schedulers send before they preempt or reach a time limit; the run then stops).
Re-running the suite resumes an unfinished run from its last complete checkpoint:

    disha-bench run suites/nlg.yaml --set output.checkpoint_every=100    # killed at step 340
    disha-bench run suites/nlg.yaml --set output.checkpoint_every=100    # resumes from step 300

Layout, in the run's folder beside its log:

    results/<suite>/.runs/<run-id>/checkpoints/
        step-00000200/           the complete checkpoint before it (the last two are kept)
        step-00000300/           a complete checkpoint (it has COMPLETE)
            COMPLETE             {"step", "reason", "saved_at", "host", "files"}: written last, before
                                 the rename; "files" is the manifest, {path: {"size", "sha256"}}
            state.json           the run's progress: step log, held-out points, data position, times
            rng-rank<r>.pt       python, numpy, torch and accelerator RNG states of rank r
            ds/                  DeepSpeed's own files: module (trainable tensors, and a
                                 causal LM's tied output layer), optimizer, scheduler
        .tmp-step-00000400/      being written; never read, removed by the next save
        .damaged-step-00000500/  failed its manifest check when a resume tried it: set aside, kept

Every rank writes its DeepSpeed shards and RNG state into the temporary folder; after a barrier
rank 0 writes state.json and COMPLETE and renames the folder, so a folder named `step-*` is always
whole. Before resuming, the newest checkpoint is checked against its manifest (every file there, of
its size and checksum); a damaged one is set aside with a one-line warning and the one before it is
used, else the run starts from step 0. Frozen base weights stay out (`exclude_frozen_parameters`) except for methods whose
initialisation rewrites them (PiSSA, OLoRA): the re-initialised model would not match otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from disha_bench.contracts.checkpoints import MARKER, STATE_FILE, complete_checkpoints, read_marker, step_dir_name
from disha_bench.training import distributed

KEEP = 2
"""Complete checkpoints kept per run: the newest and the one before, to fall back on if it is damaged."""
DAMAGED_PREFIX = ".damaged-"
DS_TAG = "ds"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
PAUSE_ENV = "DISHA_BENCH_PAUSE_AT_STEP"
"""Fault-injection hook for tests, `STEP` or `STEP:RUN-ID-GLOB`: every rank of a matching run waits
after this optimizer step, before any checkpoint of it, until a stop signal arrives, so that a test
can kill the run at a known step."""


def manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"size", "sha256"}} of every file under `folder` but the marker."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MARKER)
    return {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(checkpoint: Path) -> str | None:
    """None when the checkpoint is whole; else what is wrong, in words. Checkpoints written before
    manifests existed are checked for a readable state.json only."""
    checkpoint = Path(checkpoint)
    try:
        marker = read_marker(checkpoint)
        files = marker.get("files")
        if files is None:
            json.loads((checkpoint / STATE_FILE).read_text())
            return None
    except (OSError, ValueError, AttributeError) as err:
        return f"unreadable ({err.__class__.__name__}: {err})"
    for name, expected in sorted(files.items()):
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, its manifest says {expected['size']}"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def resumable(root: Path, log=print) -> Path | None:
    """The newest whole checkpoint under `root`; newer damaged ones are renamed aside, each with a
    one-line warning through `log`. None (a fresh start) when no whole one is left."""
    damaged_any = False
    for found in reversed(complete_checkpoints(root)):
        problem = verify(found)
        if problem is None:
            if damaged_any:
                log(f"warning: resuming from the previous complete checkpoint, {found.name}")
            return found
        aside = found.with_name(DAMAGED_PREFIX + found.name)
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(found, aside)
        damaged_any = True
        log(f"warning: checkpoint {found.name} is damaged ({problem}); set aside as {aside}")
    if damaged_any:
        log("warning: no whole checkpoint left; the run starts again from step 0")
    return None


@dataclass
class Progress:
    """What a checkpoint carries besides DeepSpeed's tensors and the RNGs: enough to continue the
    run's record exactly where it stopped, so that the resumed result equals an uninterrupted one."""

    step: int
    """Optimizer steps done."""
    sampler: dict[str, Any]
    """The data order's position (`GlobalBatches.state_dict()`)."""
    fit: dict[str, Any] = field(default_factory=dict)
    """The fit loop's carried state as JSON (step log, held-out points, training time, outcome):
    `training.resume.fit_state_to_json`."""
    finished: bool = False
    """Training had ended when this checkpoint was saved: a resumed run goes straight to evaluation."""
    heldout: dict[str, Any] | None = None
    """The held-out curve so far (results.HeldOut as a dict: points with cumulative train_time_s,
    evaluation time)."""


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Decision:
    """What to do after an optimizer step; the same on every rank."""

    save: bool
    """Save a checkpoint now."""
    stop: str | None
    """None: keep training; `signal`: a stop signal arrived; `budget`: training.max_time is spent."""


class StopSignals:
    """SIGTERM / SIGUSR1 set a flag instead of killing the process; the loop checks it each step."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def listen(self) -> None:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.received = signum

    def restore(self) -> None:
        """Back to the handlers from before: after training, a stop signal stops the process."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class Checkpointer:
    """Checkpoints of one run. Every method that touches DeepSpeed is collective: call it on all ranks."""

    def __init__(self, root: Path, every: int | None, exclude_frozen: bool, run_id: str = ""):
        self.root, self.every, self.exclude_frozen = Path(root), every, exclude_frozen
        self.signals = StopSignals()
        self.resumed_from: int | None = None
        self._pause_at = _pause_step(run_id)

    # ---- resuming ----------------------------------------------------------------------------

    def resume(self, engine, sampler: Stateful) -> Progress | None:
        """Load the last complete checkpoint into the engine, the sampler and the RNGs; None when
        there is none (a fresh start)."""
        # Rank 0 checks (and sets aside damaged ones); every rank loads what it chose.
        found = resumable(self.root, distributed.log) if distributed.rank() == 0 else None
        chosen = distributed.gather_objects([str(found) if found else None])[0][0]
        if chosen is None:
            return None
        path = Path(chosen)
        load_path, _ = engine.load_checkpoint(
            str(path), tag=DS_TAG, load_module_strict=not self.exclude_frozen,
            load_optimizer_states=True, load_lr_scheduler_states=True,
        )
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint {path}")
        progress = Progress(**json.loads((path / STATE_FILE).read_text()))
        sampler.load_state_dict(progress.sampler)
        restore_rng(path / f"rng-rank{distributed.rank()}.pt")
        self.resumed_from = progress.step
        return progress

    # ---- during training ---------------------------------------------------------------------

    def after_step(self, step: int, max_steps: int, budget_spent: bool, device) -> Decision:
        """Agree across ranks on saving and stopping after `step` (one small all-reduce)."""
        self._maybe_pause(step)
        flags = [1.0 if self.signals.received is not None else 0.0, 1.0 if budget_spent else 0.0]
        signalled, budget = (value > 0 for value in distributed.all_reduce_sum(flags, device))
        stop = "signal" if signalled else "budget" if budget else None
        every = self.every or 0
        periodic = every != 0 and step % every == 0 and step < max_steps
        return Decision(save=signalled or (periodic and stop is None), stop=stop)

    def _maybe_pause(self, step: int) -> None:
        if self._pause_at and step == self._pause_at:
            if distributed.rank() == 0:
                print(f"[disha] paused at step {step} ({PAUSE_ENV})", flush=True)
            while self.signals.received is None:
                time.sleep(0.05)

    def save(self, engine, progress: Progress, reason: str) -> Path:
        """Write a complete checkpoint of `progress.step` atomically, with its manifest; all but the
        last KEEP are removed."""
        import torch

        final = self.root / step_dir_name(progress.step)
        tmp = self.root / f".tmp-{final.name}"
        if distributed.rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        engine.save_checkpoint(str(tmp), tag=DS_TAG, save_latest=False, exclude_frozen_parameters=self.exclude_frozen)
        torch.save(capture_rng(), tmp / f"rng-rank{distributed.rank()}.pt")
        _barrier()
        if distributed.rank() == 0:
            _write_synced(tmp / STATE_FILE, json.dumps(asdict(progress)))
            marker = {"step": progress.step, "reason": reason, "saved_at": time.time(), "host": socket.gethostname(),
                      "files": manifest(tmp)}
            _write_synced(tmp / MARKER, json.dumps(marker))
            shutil.rmtree(final, ignore_errors=True)  # a re-save of the same step (resumed, then signalled)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            for older in complete_checkpoints(self.root)[:-KEEP]:
                shutil.rmtree(older, ignore_errors=True)
        _barrier()
        return final

    def finish(self) -> None:
        """Training is over: stop signals kill again (nothing left to save mid-step)."""
        self.signals.restore()


class Interrupted(Exception):
    """Raised on every rank after the checkpoint a stop signal asked for: the worker exits without
    a result (EXIT_INTERRUPTED), and a re-run resumes."""

    def __init__(self, step: int):
        super().__init__(f"stopped by a signal after step {step}; checkpoint saved")
        self.step = step


EXIT_INTERRUPTED = 143
"""Exit status of a worker stopped by a signal after saving (128 + SIGTERM, as if killed by it)."""


def _pause_step(run_id: str) -> int:
    """$DISHA_BENCH_PAUSE_AT_STEP: `STEP` (every run) or `STEP:GLOB` (runs whose id matches)."""
    import fnmatch

    value = os.environ.get(PAUSE_ENV, "")
    step, _, pattern = value.partition(":")
    if not step or (pattern and not fnmatch.fnmatchcase(run_id, pattern)):
        return 0
    return int(step)


def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch and accelerator RNG states of this process."""
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(path: Path) -> None:
    import numpy as np
    import torch

    # weights_only=False: numpy's RNG state is a tuple holding an ndarray; the file is our own.
    state = torch.load(path, weights_only=False)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _barrier() -> None:
    if distributed.world_size() > 1:
        import torch

        torch.distributed.barrier()


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
