"""The process-group timeout that reaches DeepSpeed's init: long enough for local rank 0 to download a
7B model or export the merged model while the other ranks wait (DeepSpeed's default is 10 minutes).

    python -m pytest -q tests/test_process_group_timeout.py
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from disha_bench.cli import main
from disha_bench.training import distributed

PROBE = """
from disha_bench.training import distributed
from disha_bench.training.setup import init_process
import torch, torch.distributed.distributed_c10d as c10d
distributed.ensure_single_process_env()
init_process(0)
backend = c10d._get_default_group()._get_backend(torch.device("cpu"))  # gloo's own options: what it enforces
print("timeout_s", backend.options._timeout.total_seconds(), flush=True)
"""


@pytest.mark.parametrize("setting,expected_s", [(None, distributed.DEFAULT_PG_TIMEOUT_MIN * 60), ("45", 45 * 60.0)])
def test_the_timeout_reaches_the_process_group(setting, expected_s):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", distributed.PG_TIMEOUT_ENV)}
    if setting is not None:
        env[distributed.PG_TIMEOUT_ENV] = setting
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600)
    line = next((text for text in proc.stdout.splitlines() if text.startswith("timeout_s ")), None)
    assert line is not None, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert float(line.split()[1]) == expected_s and expected_s > 600  # beyond DeepSpeed's 10 minutes


def test_a_bad_timeout_is_refused_before_any_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(distributed.PG_TIMEOUT_ENV, "soon")
    suite = tmp_path / "s.yaml"
    suite.write_text("name: t\nmodel: {name: tiny-llama}\ntasks: [{name: synthetic-arith}]\nmethods: [{name: lora}]\n")
    assert main(["run", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {distributed.PG_TIMEOUT_ENV}='soon': expected a positive number of minutes"
    assert not (tmp_path / "out").exists()
