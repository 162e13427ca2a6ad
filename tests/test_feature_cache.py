"""Tokenized-feature cache and hostfile environment forwarding (the 7B-on-8-GPUs plumbing).

    HF_HUB_OFFLINE=1 DISHA_BENCH_DATA=../shared/data python -m pytest tests/test_feature_cache.py
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from disha_bench import distributed, feature_cache, models, tasks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DISHA_BENCH_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="module")
def tokenizers():
    """Loaded from the usual cache, before `cache` points DISHA_BENCH_CACHE elsewhere."""
    return {name: models.load_tokenizer(name) for name in ("tiny-llama", "tiny-bert")}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISHA_BENCH_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache" / "features"


@pytest.mark.skipif(not (DATA / "gsm8k").is_dir(), reason="no GSM8K data (set DISHA_BENCH_DATA)")
def test_gsm8k_features_cached_per_tokenizer_task_and_limits(tokenizers, cache):
    tokenizer = tokenizers["tiny-llama"]
    task = tasks.get("gsm8k")
    config = {**task.options, "name": "gsm8k", "train_limit": 5, "eval_limit": 1, "sample_seed": 0,
              "source": "auto", "data_files": None}
    train, _ = task.load(config, str(DATA))
    fresh = [task.encode(r, tokenizer, 128) for r in train]
    assert feature_cache.cached_features(tokenizer, task, config, 128, train) == fresh
    assert len(list(cache.glob("*.npz"))) == 1
    calls = []
    again = feature_cache.cached_features(tokenizer, task, config, 128, train, encode=lambda r: calls.append(r))
    assert again == fresh and not calls  # read back, not re-encoded
    feature_cache.cached_features(tokenizer, task, config, 64, train)  # another max_length: another entry
    other = {**config, "train_limit": 4}
    feature_cache.cached_features(tokenizer, task, other, 128, train[:4])  # other limits: another entry
    assert len(list(cache.glob("*.npz"))) == 3


def test_classification_labels_and_dropped_examples_round_trip(tokenizers, cache):
    tokenizer = tokenizers["tiny-bert"]
    task = tasks.get("stsb")
    records = [{"sentence1": "a cat", "sentence2": "a dog", "label": 3.2}, {"sentence1": "x", "sentence2": "y", "label": 0.5}]
    features = [{"input_ids": [1, 2, 3], "labels": 3.2}, None, {"input_ids": [4], "labels": 0.5}]
    records.insert(1, {"sentence1": "dropped by the encoder", "sentence2": "", "label": 1.0})
    it = iter(features)
    assert feature_cache.cached_features(tokenizer, task, {"name": "stsb"}, 32, records, encode=lambda r: next(it)) == features
    assert feature_cache.cached_features(tokenizer, task, {"name": "stsb"}, 32, records, encode=None) == features


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
    command = distributed.launch_command("disha_bench.training", ["spec.json"], 1, str(hostfile))
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
