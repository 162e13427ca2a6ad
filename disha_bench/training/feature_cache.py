"""Tokenized training features cached on disk, per (tokenizer, task, limits, records, encoding code).

    python -m pytest tests/test_feature_cache.py

Tokenizing 100,000 MetaMathQA rows takes minutes, once per run and per rank; every method and
seed of a suite tokenizes the same rows the same way. `cached_features` keys the features by a
digest of everything they depend on - the tokenizer (its full serialisation), the task name and
config (limits, options), `max_length`, the records themselves, and the source of the task's
module and of `tasks/base.py` (a change to the encoding invalidates the cache) - and stores them
under `$DISHA_BENCH_CACHE/features/<digest>.npz` (default `~/.cache/disha-bench`). Writes are
atomic; call it inside `distributed.local_rank_zero_first()` so one rank per node tokenizes and
the others read.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from disha_bench.core.io import atomic_open
from disha_bench.models import cache_dir


def digest(tokenizer, task, task_config: dict[str, Any], max_length: int, records: Sequence[dict]) -> str:
    """Hex digest of everything the features of `records` depend on."""
    from disha_bench.tasks import base

    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(tokenizer.get_vocab())).encode())
    h.update(json.dumps([type(tokenizer).__name__, tokenizer.eos_token_id, tokenizer.bos_token_id,
                         getattr(tokenizer, "add_bos_token", None), task.name, task_config, max_length],
                        sort_keys=True, default=str).encode())
    for source in (inspect.getsourcefile(type(task)), base.__file__):
        if source is None:
            raise ValueError(f"{type(task).__name__}: no source file to key the feature cache on")
        h.update(Path(source).read_bytes())
    for record in records:
        h.update(json.dumps(record, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def cached_features(tokenizer, task, task_config: dict[str, Any], max_length: int, records: Sequence[dict],
                    encode: Callable[[dict], dict | None] | None = None) -> list[dict | None]:
    """`[task.encode(r, tokenizer, max_length) for r in records]`, read from the cache when present
    (None entries - examples an encoder drops - are kept as None)."""
    path = cache_dir() / "features" / f"{digest(tokenizer, task, task_config, max_length, records)}.npz"
    if path.is_file():
        try:
            return _read(path)
        except (OSError, ValueError, KeyError):
            pass  # a damaged file: rebuild it
    encode = encode or (lambda record: task.encode(record, tokenizer, max_length))
    features = [encode(r) for r in records]
    _write(path, features)
    return features


def _write(path: Path, features: list[dict | None]) -> None:
    kept = np.asarray([f is not None for f in features], dtype=bool)  # an encoder may drop an example (None)
    present = [f for f in features if f is not None]
    ids = [f["input_ids"] for f in present]
    arrays = {"kept": kept, "offsets": np.cumsum([0] + [len(i) for i in ids]).astype(np.int64),
              "input_ids": np.fromiter((t for i in ids for t in i), dtype=np.int64)}
    if present and isinstance(present[0]["labels"], list):
        arrays["labels"] = np.fromiter((t for f in present for t in f["labels"]), dtype=np.int64)
        arrays["label_offsets"] = np.cumsum([0] + [len(f["labels"]) for f in present]).astype(np.int64)
    else:
        arrays["labels"] = np.asarray([f["labels"] for f in present])
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub matches **arrays against allow_pickle: bool


def _read(path: Path) -> list[dict | None]:
    with np.load(path) as data:
        offsets, ids, labels, kept = data["offsets"], data["input_ids"].tolist(), data["labels"], data["kept"]
        label_offsets = data["label_offsets"] if "label_offsets" in data.files else None
    features = []
    for i in range(len(offsets) - 1):
        feature: dict[str, Any] = {"input_ids": ids[offsets[i] : offsets[i + 1]]}
        if label_offsets is not None:
            feature["labels"] = labels[label_offsets[i] : label_offsets[i + 1]].tolist()
        else:
            feature["labels"] = labels[i].item()
        features.append(feature)
    stored = iter(features)
    return [next(stored) if keep else None for keep in kept.tolist()]
