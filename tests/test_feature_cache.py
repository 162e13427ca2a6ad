"""Tokenized-feature cache: per tokenizer, task, limits and max_length; dropped examples survive.

    HF_HUB_OFFLINE=1 DISHA_BENCH_DATA=../shared/data python -m pytest tests/test_feature_cache.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from disha_bench import models, tasks  # noqa: E402
from disha_bench.training import feature_cache  # noqa: E402

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
