"""One owner per run: the O_EXCL lock file, its refusal while held, and stale-lock detection.

    python3 -m pytest -q tests/test_ownership.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from disha_bench.running.ownership import STALE_AFTER_S, RunLock, lock_path, read_lock


def _write_lock(path, host, pid, age_s=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "job_id": "123", "started_at": time.time()}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_lock_is_exclusive_and_records_the_owner(tmp_path):
    path = lock_path(tmp_path, "run-a")
    first, second = RunLock(path), RunLock(path)
    assert first.acquire()
    owner, age = read_lock(path)
    assert (owner.host, owner.pid) == (socket.gethostname(), os.getpid()) and age < 5
    assert not second.acquire()
    assert second.holder.pid == os.getpid()
    first.release()
    assert not path.exists()
    assert second.acquire()
    second.release()


def test_lock_of_a_dead_process_on_this_host_is_broken(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = lock_path(tmp_path, "run-b")
    _write_lock(path, socket.gethostname(), dead.pid)
    lock = RunLock(path)
    assert lock.acquire()
    assert read_lock(path)[0].pid == os.getpid()
    lock.release()


def test_lock_of_another_host_holds_until_its_heartbeat_is_old(tmp_path):
    path = lock_path(tmp_path, "run-c")
    _write_lock(path, "other-node", 4242, age_s=10)
    lock = RunLock(path)
    assert not lock.acquire() and lock.holder.describe() == "other-node pid 4242, job 123"
    _write_lock(path, "other-node", 4242, age_s=STALE_AFTER_S + 10)
    assert lock.acquire()
    lock.release()


def test_only_one_of_many_processes_wins(tmp_path):
    path = lock_path(tmp_path, "run-d")
    code = ("import sys, time; from disha_bench.running.ownership import RunLock; l = RunLock(sys.argv[1]); "
            "print(int(l.acquire()), flush=True); time.sleep(1.5)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True) for _ in range(6)]
    wins = [int(p.communicate(timeout=120)[0].strip()) for p in procs]
    assert sum(wins) == 1


def test_a_lock_that_came_and_went_while_we_looked_is_skipped_in_words(tmp_path, monkeypatch):
    """acquire() can refuse with no holder recorded (the lock file vanished before each read): the
    runner said `None.describe()` (AttributeError) instead of skipping the run as held elsewhere."""
    from disha_bench.running import ownership, runner

    monkeypatch.setattr(RunLock, "_create", lambda self: False)
    monkeypatch.setattr(ownership, "read_lock", lambda path: None)
    lock, previous, skipped = runner._claim(tmp_path, "run-a")
    assert lock is not None and lock.holder is None and previous is None
    assert skipped == f"{runner.ELSEWHERE} (another process)"
