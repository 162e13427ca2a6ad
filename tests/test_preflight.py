"""Preflight: `disha-bench run` refuses, before any run starts, a suite this machine cannot serve.

    python -m pytest tests/test_preflight.py

Each case runs the real command in a fresh process with the hub offline and an empty hub cache
(HF_HOME in a temporary folder), so what the developer's machine has cached does not matter. No
model is loaded: the command must stop before the first run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from disha_bench.config.suite import load_suite
from disha_bench.core.errors import UserError
from disha_bench.running import preflight

REPO = Path(__file__).resolve().parent.parent


def _cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "disha_bench.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def _assert_refused(proc: subprocess.CompletedProcess, out: Path, *fragments: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, err)
    assert err.count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not out.exists(), "a run started: the results folder exists"
    assert "starting" not in proc.stdout
    return err


def test_nlu_cpu_without_data_exits_2_with_the_fix(offline_env, tmp_path):
    """The issue's case: no data directory, hub offline - every run used to start and fail (75 of them then)."""
    env = {k: v for k, v in offline_env.items() if k != "DISHA_BENCH_DATA"}
    out = tmp_path / "results"
    proc = _cli(["run", str(REPO / "suites" / "nlu-cpu.yaml"), "--out", str(out)], env, tmp_path)
    # one line for all the suite's GLUE tasks, each named with the file it needs
    _assert_refused(proc, out, "nlu-cpu.yaml: ", "things are missing: tasks[0]", "the hub is offline",
                    "--data-dir or DISHA_BENCH_DATA", "glue/SST-2/train.tsv", "glue/STS-B/train.tsv")


def _write_suite(path: Path, **changes) -> Path:
    suite = {"name": "pre", "model": {"name": "tiny-llama"}, "tasks": [{"name": "synthetic-sentiment", "train_limit": 8}],
             "methods": [{"name": "bone", "r": 16}], "training": {"max_steps": 1, "batch_size": 2}, **changes}
    path.write_text(yaml.safe_dump(suite))
    return path


def test_hub_model_missing_from_the_offline_cache(offline_env, tmp_path):
    suite = _write_suite(tmp_path / "s.yaml", model={"name": "someone/not-cached-model"})
    out = tmp_path / "results"
    _assert_refused(_cli(["run", str(suite), "--out", str(out)], offline_env, tmp_path), out,
                    "model.name", "not in the hub cache", "hf download someone/not-cached-model")


def test_missing_data_file_names_the_file(offline_env, tmp_path):
    missing = tmp_path / "no" / "train.tsv"
    suite = _write_suite(tmp_path / "s.yaml", tasks=[{"name": "rte", "data_files": {"train": str(missing)}}])
    out = tmp_path / "results"
    _assert_refused(_cli(["run", str(suite), "--out", str(out)], offline_env, tmp_path), out,
                    "tasks[0]", str(missing), "not found")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare to take namespaces away")
def test_code_task_without_a_sandbox_exits_2(offline_env, tmp_path):
    """In a user namespace where new network namespaces are forbidden the sandbox cannot isolate."""
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here to take away: {probe.stderr.strip()}")
    suite = _write_suite(tmp_path / "s.yaml", tasks=[{"name": "humaneval", "train_source": "stdlib", "eval_limit": 2}])
    out = tmp_path / "results"
    script = 'echo 0 > /proc/sys/user/max_net_namespaces && exec "$0" -m disha_bench.cli run "$1" --out "$2"'
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, sys.executable, str(suite), str(out)],
                          capture_output=True, text=True, env=offline_env, cwd=tmp_path, timeout=300)
    _assert_refused(proc, out, "tasks[0]", "code sandbox does not work", "user namespaces", "unsafe_no_isolation")
    script = 'echo 0 > /proc/sys/user/max_net_namespaces && exec "$0" -m disha_bench.cli plan "$1"'
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, sys.executable, str(suite)],
                          capture_output=True, text=True, env=offline_env, cwd=tmp_path, timeout=300)
    _assert_refused(proc, out, "tasks[0]", "code sandbox does not work", "user namespaces", "unsafe_no_isolation")


def test_committed_cpu_suites_pass_preflight_with_the_shared_data(shared_data):
    for name in ("nlu-cpu", "nlg-cpu", "smoke"):
        path = str(REPO / "suites" / f"{name}.yaml")
        preflight.check(load_suite(path)[0], file=path, data_dir=str(shared_data))


def test_sandbox_probe_passes_where_the_sandbox_works():
    try:
        preflight.check_sandbox()
    except UserError as err:
        if "does not work" in str(err):
            pytest.skip(f"no sandbox on this machine: {err}")
        raise
