"""The forked worker behaves like a fresh `python -m` process: own session, own environment,
its output streamed line by line, its exit status reported (the runner relies on all four)."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from disha_bench.running import worker

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _child_main(args: list[str]) -> int:
    print(f"session leader {os.getsid(0) == os.getpid()}")
    print(f"env {os.environ.get('DISHA_TEST_VALUE')} {os.environ.get('HOME') is None}")
    print(f"args {' '.join(args)}", file=sys.stderr)
    return int(args[0])


def test_forked_worker_streams_output_and_exit_code():
    proc = worker.ForkedWorker(_child_main, ["3", "x"], {"DISHA_TEST_VALUE": "42"})
    lines = [line.rstrip() for line in proc.stdout]
    assert proc.wait(timeout=60) == 3
    assert lines == ["session leader True", "env 42 True", "args 3 x"]


def _raises(args: list[str]) -> int:
    raise RuntimeError("boom in the child")


def test_an_exception_in_the_child_is_a_failure_with_its_traceback():
    proc = worker.ForkedWorker(_raises, [], {})
    output = proc.stdout.read()
    assert proc.wait(timeout=60) == 1
    assert "RuntimeError: boom in the child" in output


def _sleeps(args: list[str]) -> int:
    print("ready", flush=True)
    signal.pause()
    return 0


def test_the_runner_can_kill_the_child_group():
    proc = worker.ForkedWorker(_sleeps, [], {})
    assert proc.stdout.readline().strip() == "ready"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM


def _matmul(args: list[str]) -> int:
    import torch

    print(float((torch.ones(512, 512) @ torch.ones(512, 512))[0, 0]))
    return 0


def test_a_child_computes_after_the_parent_ran_parallel_torch_ops():
    # A plain fork of this process would inherit a dead OpenMP pool and could hang here.
    import torch

    torch.ones(512, 512) @ torch.ones(512, 512)
    proc = worker.ForkedWorker(_matmul, [], {"OMP_NUM_THREADS": "2"})
    assert proc.wait(timeout=120) == 0
    assert proc.stdout.read().strip() == "512.0"
