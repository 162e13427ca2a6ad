"""Set-up shared by every kind of run: seeds and process group, the task's data, the base model.

    python -m pytest -q tests/test_runner.py -k bitwise

`recipe.py` (training runs) and `evaluate_only.py` (the unadapted reference, re-evaluation of a
saved adapter) both start here.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import deepspeed
import numpy as np
import torch
from deepspeed.accelerator import get_accelerator

from disha_bench import models, tasks
from disha_bench.config.run_spec import RunSpec
from disha_bench.tasks.base import Task, example_ids
from disha_bench.training import distributed
from disha_bench.training.feature_cache import cached_features


@dataclass
class TaskData:
    """A task's examples as a run uses them."""

    task: Task
    tokenizer: Any
    features: list[dict]
    """Encoded training examples (those whose answer fits in max_length)."""
    heldout_features: list[dict]
    """Encoded held-out examples: the convergence curve."""
    heldout_ids: list[str]
    """Stable ids of the held-out examples kept (those that fit in max_length), in order."""
    eval_records: list[dict]
    """Raw evaluation records."""
    majority_label: Any
    """Most frequent label of the training subset (classification tasks), else None."""
    dropped: int
    """Training examples dropped because their answer alone does not fit in max_length."""
    data_dir: str | None = None
    """The local data directory the task read (lm-eval tasks read the same files)."""


def init_process(seed: int) -> torch.device:
    """Seed every generator, join the process group, and return this rank's device."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if os.environ.get("DS_ACCELERATOR") == "cpu":
        distributed.skip_cpu_shm_build()
    deepspeed.init_distributed(verbose=False, timeout=timedelta(minutes=distributed.process_group_timeout_min()))
    return torch.device(get_accelerator().device_name(int(os.environ.get("LOCAL_RANK", 0))))


def load_task_data(spec: RunSpec) -> TaskData:
    """Load, subsample and encode the task's training, held-out and evaluation examples."""
    task = tasks.get(spec.task.name)
    # One download and one tokenization per node: local rank 0 first, the other ranks read its caches
    # (100,000 MetaMathQA rows take minutes to tokenize).
    with distributed.local_rank_zero_first():
        train_records, eval_records = task.load(spec.task.model_dump(), spec.data_dir)
        tokenizer = models.load_tokenizer(spec.model.name)
        encoded = cached_features(tokenizer, task, spec.task.model_dump(), spec.training.max_length, train_records)
    features = [f for f in encoded if f is not None]
    heldout_records = task.heldout(spec.evaluation.heldout_examples)
    heldout = [task.encode(r, tokenizer, spec.training.max_length) for r in heldout_records]
    kept = [(i, f) for i, f in zip(example_ids(heldout_records), heldout) if f is not None]
    return TaskData(
        task=task, tokenizer=tokenizer, features=features, heldout_features=[f for _, f in kept],
        heldout_ids=[i for i, _ in kept],
        eval_records=eval_records, majority_label=majority_label(task, train_records), dropped=len(encoded) - len(features),
        data_dir=spec.data_dir,
    )


def majority_label(task: Task, records: list[dict]) -> Any:
    """The most frequent training label of a classification task (ties: the smallest); None otherwise."""
    if task.head != "sequence_classification" or task.num_labels < 2 or not records:
        return None
    counts = Counter(r["label"] for r in records)
    return max(sorted(counts), key=lambda label: counts[label])


def load_base_model(spec: RunSpec, task: Task, tokenizer, device=None):
    """The base model with the task's head, its pad token set, its weights resident in memory; on an
    accelerator `device` the weights load straight onto it (PiSSA's SVD then runs there too)."""
    with distributed.local_rank_zero_first():
        model = models.load_model(spec.model.name, task.head, task.num_labels, spec.model.dtype, spec.model.revision,
                                  device=device if device is not None and device.type != "cpu" else None)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    touch_weights(model)
    return model


@torch.no_grad()
def touch_weights(model) -> None:
    """Read every weight once: a memory-mapped checkpoint (safetensors on CPU) is resident only
    where it was read, so without this `loaded_mb` would miss most of the model and the training
    increment would count it."""
    for parameter in model.parameters():
        if parameter.device.type == "cpu" and parameter.numel():
            parameter.reshape(-1)[:: max(1, 4096 // parameter.element_size())].sum()
