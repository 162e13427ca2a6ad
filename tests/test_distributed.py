"""Multi-node plumbing: the hostfile launch forwards hub and disha-bench settings to every node.

    python -m pytest tests/test_distributed.py
"""

from __future__ import annotations

import stat
from pathlib import Path

from disha_bench.running import spawn
from disha_bench.training import distributed


def test_hostfile_launch_forwards_hub_and_bench_settings(tmp_path, monkeypatch):
    from deepspeed.launcher.multinode_runner import PDSHRunner

    monkeypatch.setenv("DISHA_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_secret with space")
    monkeypatch.setenv("HF_HOME", "/shared/hf")
    monkeypatch.setenv("DISHA_BENCH_DATA", "/shared/data")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/shared/ext")
    monkeypatch.setenv("UNRELATED_SECRET", "no")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".deepspeed_env").write_text("NCCL_IB_DISABLE=1\n")  # the user's own file still counts
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1 slots=8\nnode2 slots=8\n")
    command = spawn.launch_command("disha_bench.training", ["spec.json"], 1, str(hostfile))
    assert command[0] == "env" and command[1].startswith("DS_ENV_FILE=") and command[2] == "deepspeed"
    env_file = Path(command[1].split("=", 1)[1])
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # it holds HF_TOKEN
    # Read it the way the deepspeed launcher does (runner.py: split on the first '=', add_export).
    runner = PDSHRunner(type("Args", (), {"launcher_args": "", "user_script": "x", "user_args": []})(), None)
    for line in env_file.read_text().splitlines():
        key, value = line.split("=", 1)
        runner.add_export(key, value)
    assert runner.exports["HF_TOKEN"] == '"hf_secret with space"' and runner.exports["HF_HOME"] == "/shared/hf"
    assert runner.exports["DISHA_BENCH_DATA"] == "/shared/data" and runner.exports["TORCH_EXTENSIONS_DIR"] == "/shared/ext"
    assert runner.exports["NCCL_IB_DISABLE"] == "1" and "UNRELATED_SECRET" not in runner.exports


def test_local_rank_zero_first_is_a_no_op_on_one_process():
    ran = []
    with distributed.local_rank_zero_first():
        ran.append(1)
    assert ran == [1]
