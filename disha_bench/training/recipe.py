"""One run, top to bottom: set up (data, model, adapter, engine), fit, evaluate, summarize.

    python -m disha_bench.training results/smoke/.runs/<run-id>.spec.json    (see launch.py)

Each stage is one short function below; the pieces live where a reader looks for them: the fit
loop in loop.py, the data order in sampler.py, the schedule in schedule.py, the DeepSpeed config in
ds_config.py, the task metric in evaluation.py, saving in saving.py.
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deepspeed
import numpy as np
import torch
from deepspeed.accelerator import get_accelerator

from disha_bench import convergence, distributed, methods, models, tasks
from disha_bench.memory import PeakMemory
from disha_bench.results import EVALUATED_STATUSES, Memory, RunResult, Throughput, Training
from disha_bench.tasks.base import Task
from disha_bench.training.ds_config import deepspeed_config
from disha_bench.training.evaluation import VALIDATION_EXAMPLES, evaluate, validation_loss
from disha_bench.training.loop import FitState, fit
from disha_bench.training.resume import FitControl
from disha_bench.training.sampler import GlobalBatches
from disha_bench.training.saving import save_trained
from disha_bench.training.schedule import lr_lambda
from disha_bench.training.spec import RunSpec


@dataclass
class Setup:
    """What the stages after set-up work with."""

    task: Task
    tokenizer: Any
    engine: Any
    """The DeepSpeed engine; `engine.module` is the adapted model."""
    device: torch.device
    features: list[dict]
    """Encoded training examples."""
    eval_records: list[dict]
    """Raw evaluation records."""
    params: dict[str, Any]
    """The method's resolved parameters."""
    matching: dict[str, Any] | None
    """Parameter matching details when the rank was chosen by `match_params`."""
    trainable: int
    total: int
    ds_config: dict[str, Any]


def run(spec: RunSpec, started: float) -> RunResult:
    setup = set_up(spec)
    # The imports left hundreds of thousands of long-lived objects; a full garbage collection
    # walks them all (seconds on a slow CPU) and would land inside a timed step.
    gc.freeze()
    memory = PeakMemory(setup.device)
    memory.start()
    sampler = GlobalBatches(len(setup.features), spec.training.batch_size, distributed.world_size(), distributed.rank(), spec.seed)
    control = FitControl.for_run(spec, setup.engine, setup.device)
    state, trained = control.start(sampler)  # from the last checkpoint when there is one
    if not trained:
        state = fit(setup.engine, setup.features, setup.tokenizer.pad_token_id, state, spec.training, setup.device,
                    spec.run_id, between_steps=control.between_steps)
    control.after_fit(state, already_saved=trained)
    figures = training_memory(memory, setup.device)
    evaluation, eval_time = {}, 0.0
    if spec.evaluation.enabled and state.status in EVALUATED_STATUSES:
        memory.start()
        eval_start = time.perf_counter()
        evaluation = evaluate_run(spec, setup)
        eval_time = time.perf_counter() - eval_start
        figures.eval_peak_mb = memory.peak_mb()
    if spec.adapter_dir and state.status in EVALUATED_STATUSES:
        save_trained(setup.engine, spec.method.name, Path(spec.adapter_dir), spec.training.zero_stage)
    result = summarize(spec, setup, state, evaluation, figures, eval_time, started)
    result.run.resumed_from_step = control.resumed_from
    return result


def training_memory(memory: PeakMemory, device: torch.device) -> Memory:
    """Peak of the training phase on every rank (rank 0's first), start-up baseline subtracted."""
    per_rank = [p[0] for p in distributed.gather_objects([memory.peak_mb()])]
    return Memory(device=device.type, train_peak_mb=per_rank[0], train_peak_reserved_mb=memory.peak_reserved_mb(),
                  baseline_mb=memory.baseline_mb, per_rank_train_peak_mb=per_rank)


# ---- set-up ------------------------------------------------------------------------------------


def set_up(spec: RunSpec) -> Setup:
    """Seeds, the process group, data, model, adapter and the DeepSpeed engine, in this order."""
    device = init_process(spec.seed)
    task = tasks.get(spec.task.name)
    train_records, eval_records = task.load(spec.task.model_dump(), spec.data_dir)
    tokenizer = models.load_tokenizer(spec.model.name)
    model, params, matching = load_adapted_model(spec, task, tokenizer)
    trainable, total = methods.count_trainable(model), sum(p.numel() for p in model.parameters())
    distributed.log(f"{spec.run_id}: {spec.method.label} trainable {trainable:,} / {total:,}")
    features = [task.encode(r, tokenizer, spec.training.max_length) for r in train_records]
    if not features:
        raise ValueError("the task has no training examples")
    engine, ds_config = build_engine(model, spec, params)
    return Setup(task, tokenizer, engine, device, features, eval_records, params, matching, trainable, total, ds_config)


def init_process(seed: int) -> torch.device:
    """Seed every generator, join the process group, and return this rank's device."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if os.environ.get("DS_ACCELERATOR") == "cpu":
        distributed.skip_cpu_shm_build()
    deepspeed.init_distributed(verbose=False)
    return torch.device(get_accelerator().device_name(int(os.environ.get("LOCAL_RANK", 0))))


def load_adapted_model(spec: RunSpec, task: Task, tokenizer):
    """The base model with the method applied: (model, resolved params, matching details)."""
    model = models.load_model(spec.model.name, task.head, task.num_labels, spec.model.dtype, spec.model.revision)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    params, matching = resolve_method_params(model, spec)
    model = methods.apply(model, spec.method.name, **params)
    if spec.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, params, matching


def resolve_method_params(model, spec: RunSpec) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The method's params, with a rank chosen by `match_params` against another method of the suite."""
    params = spec.method.params
    if params.get("match_params") is None:
        return {k: v for k, v in params.items() if k != "match_params"}, None
    table = {label: (entry.name, entry.params) for label, entry in spec.methods.items()}
    info = dict(methods.resolve_matching(model, table)[spec.method.label])
    return info.pop("params"), info


def build_engine(model, spec: RunSpec, params: dict[str, Any]):
    """AdamW (the method's parameter groups) and the schedule under a DeepSpeed ZeRO engine."""
    training = spec.training
    groups = methods.optimizer_param_groups(model, spec.method.name, params, training.lr, training.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=training.lr, weight_decay=training.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(training))
    ds_config = deepspeed_config(training, distributed.world_size())
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    if training.zero_stage == 3:
        methods.after_zero3_init(engine.module, spec.method.name)
    return engine, ds_config


# ---- evaluation and summary ----------------------------------------------------------------------


def evaluate_run(spec: RunSpec, setup: Setup) -> dict[str, Any]:
    """The task metric, plus the teacher-forced loss of the first evaluation records."""
    model = setup.engine.module
    evaluation = evaluate(model, setup.tokenizer, setup.task, setup.eval_records, spec.evaluation, spec.training.zero_stage)
    eval_features = [setup.task.encode(r, setup.tokenizer, spec.training.max_length) for r in setup.eval_records[:VALIDATION_EXAMPLES]]
    if eval_features:
        evaluation["validation_loss"] = validation_loss(model, eval_features, spec.evaluation.batch_size, setup.tokenizer.pad_token_id, setup.device)
    distributed.log(f"{spec.run_id}: {evaluation}")
    return evaluation


def warmup_steps_excluded(n_steps: int) -> int:
    """Leading steps left out of throughput medians: allocator, JIT and cache warm-up."""
    return min(5, max(1, n_steps // 10)) if n_steps > 2 else 0


def summarize(spec: RunSpec, setup: Setup, state: FitState, evaluation: dict[str, Any], memory: Memory,
              eval_time: float, started: float) -> RunResult:
    steps = state.steps
    warmup = warmup_steps_excluded(len(steps))
    steady = steps[warmup:] or steps
    tokens_per_s = statistics.median(s.tokens / s.step_time_s for s in steady)
    world = distributed.world_size()
    return RunResult(
        run=spec.run_info(state.status, state.error, started, world),
        training=Training(
            trainable_params=setup.trainable, total_params=setup.total, method_params=setup.params, matching=setup.matching,
            steps=steps, stopped_at_step=state.stopped_at_step, deepspeed_config=setup.ds_config,
        ),
        evaluation=evaluation,
        convergence=convergence.summarize(steps, spec.convergence.targets, spec.convergence.ema, budget=spec.training.max_steps),
        memory=memory,
        throughput=Throughput(
            tokens_per_s=tokens_per_s, tokens_per_s_per_rank=tokens_per_s / world,
            step_time_s=statistics.median(s.step_time_s for s in steady),
            warmup_steps_excluded=warmup if len(steps) > warmup else 0, train_time_s=state.train_time_s, eval_time_s=eval_time,
        ),
    )
