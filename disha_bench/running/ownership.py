"""One owner per run: an exclusive lock file beside the run's log, safe on a shared filesystem.

    python -c "from disha_bench.running.ownership import read_lock; print(read_lock('results/nlg/.runs/<run-id>.lock'))"

Whoever trains a run (a local `disha-bench run`, or a Slurm job of `--launcher slurm`) first creates
`results/<suite>/.runs/<run-id>.lock` with O_CREAT | O_EXCL, which exactly one process can win, also
over NFS (v3 and later). The file holds host, pid, Slurm job id and start time; the owner touches it
every HEARTBEAT_S seconds. A lock is stale when its owner is gone: on the same host its pid no longer
exists, on any host its heartbeat is older than STALE_AFTER_S. A stale lock is broken under a second
O_EXCL lock (`.break`), so two contenders never both break it and both take the run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
"""A lock whose heartbeat is older than this is stale, whoever holds it (a host that died)."""


@dataclass
class Owner:
    """Who holds a run's lock."""

    host: str
    """Host name of the owning process."""
    pid: int
    """Process id on that host."""
    job_id: str | None
    """Slurm job id (SLURM_JOB_ID, with the array task when there is one), else null."""
    started_at: float
    """Unix time the lock was taken."""

    def describe(self) -> str:
        job = f", job {self.job_id}" if self.job_id else ""
        return f"{self.host} pid {self.pid}{job}"


def this_owner() -> Owner:
    job = os.environ.get("SLURM_JOB_ID")
    if job and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', job)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return Owner(host=socket.gethostname(), pid=os.getpid(), job_id=job, started_at=time.time())


def lock_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / ".runs" / f"{run_id}.lock"


def read_lock(path: Path) -> tuple[Owner, float] | None:
    """The lock's owner and the age of its heartbeat in seconds, or None when there is no lock."""
    try:
        age = time.time() - os.stat(path).st_mtime
        return Owner(**json.loads(Path(path).read_text())), age
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        # Being written this instant (created, not yet filled): treat as held and fresh.
        return Owner(host="?", pid=0, job_id=None, started_at=time.time()), 0.0


def is_stale(owner: Owner, heartbeat_age_s: float) -> bool:
    if heartbeat_age_s > STALE_AFTER_S:
        return True
    return owner.host == socket.gethostname() and owner.pid > 0 and not _pid_alive(owner.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process nobody reaped yet (a container's init may never reap it) is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunLock:
    """`with RunLock(path) as lock:` when `lock.acquired`, this process owns the run until exit."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.acquired = False
        self.holder: Owner | None = None
        """Who holds it when acquiring failed."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # the second try follows breaking a stale lock
            if self._create():
                self.acquired = True
                self._thread = threading.Thread(target=self._heartbeat, daemon=True)
                self._thread.start()
                return True
            found = read_lock(self.path)
            if found is None:
                continue  # released between our attempt and the read
            self.holder, age = found
            if not (is_stale(self.holder, age) and self._break_stale()):
                return False
        return False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(this_owner())))
            f.flush()
            os.fsync(f.fileno())
        return True

    def _break_stale(self) -> bool:
        """Remove a stale lock; only the process that wins the `.break` lock does, after checking again."""
        breaker = self.path.with_suffix(".lock.break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:  # a breaker that died while breaking leaves it behind
                if time.time() - os.stat(breaker).st_mtime > 60:
                    breaker.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            found = read_lock(self.path)
            if found is not None and is_stale(*found):
                self.path.unlink(missing_ok=True)
            return True
        finally:
            breaker.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        if not self.acquired:
            return
        self._stop.set()
        found = read_lock(self.path)
        if found is not None and found[0].pid == os.getpid() and found[0].host == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self.acquired = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()
