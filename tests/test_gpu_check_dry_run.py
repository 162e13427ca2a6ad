"""The one GPU script's CPU dry run: what the device check executes must keep running here.

    python -m pytest -q tests/test_gpu_check_dry_run.py

`benchmarks/gpu_check.py` and `benchmarks/bench_harness_vs_plain.py` run on a lent GPU only, once a
session at most; both once broke silently after a refactoring (issue 23's session found out on the
device). At tiny size on CPU: prepare real GSM8K rows, one ZeRO-3 Bat run (the path with
`after_zero3_init`) and the harness-vs-plain A/B of LoRA, each with its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_gpu_check_runs_at_tiny_size(shared_data, offline_env, tmp_path):
    env = {**offline_env, "DISHA_BENCH_DATA": str(shared_data)}
    script = str(REPO / "benchmarks" / "gpu_check.py")
    data = tmp_path / "gpucheck"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)

    prepared = run("prepare", "--out", str(data), "--examples", "64")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    figures = tmp_path / "figures.json"
    checked = run("run", "--tiny", "--data", str(data), "--stages", "3", "--methods", "bat", "--variants", "plain",
                  "--json", str(figures))
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    result = json.loads(figures.read_text())
    (bat,) = result["runs"]
    assert bat["method"] == "bat" and bat["stage"] == 3 and bat["tokens_per_s"] > 0 and bat["longest_padded_row"] > 0
    ab = [line for line in result["harness_vs_plain"] if line.startswith("RESULT")]
    assert [line.split()[1] for line in ab] == ["lora", "bone", "bat"]
    assert all(float(line.split("ratio")[1].split("x")[0]) > 0 for line in ab)
