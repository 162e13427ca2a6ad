"""One run, top to bottom: set up (data, model, adapter, engine), fit, save, evaluate, summarize.

    python -m disha_bench.training results/smoke/.runs/<run-id>.spec.json    (see launch.py)

Each stage is one short function below; the pieces live where a reader looks for them: data and
the base model in setup.py, the fit loop in loop.py, the data order in sampler.py, the schedule in
schedule.py, the DeepSpeed config in ds_config.py, the held-out curve in heldout.py, the task metric
in evaluation.py, saving in saving.py. Runs that train nothing (the unadapted reference, the
re-evaluation of a saved adapter) are in evaluate_only.py.

The adapter is saved before evaluation: an evaluation that raises leaves the training record and
the adapter behind (status `evaluation_failed`), and a re-run of the suite evaluates it again.
"""

from __future__ import annotations

import gc
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deepspeed
import torch

from disha_bench import methods
from disha_bench.analysis import convergence
from disha_bench.config.batching import check_epochs
from disha_bench.config.run_spec import RunSpec
from disha_bench.contracts.results import TRAINED_STATUSES, HeldOut, Memory, RunResult, Throughput, Training
from disha_bench.training import distributed, evaluate_only
from disha_bench.training.ds_config import deepspeed_config
from disha_bench.training.evaluation import evaluate_into
from disha_bench.training.heldout import HeldOutCurve, Schedule
from disha_bench.training.loop import FitState, fit, set_test_slowdown
from disha_bench.training.memory import PeakMemory
from disha_bench.training.resume import FitControl
from disha_bench.training.sampler import GlobalBatches
from disha_bench.training.saving import discard_saved, save_trained
from disha_bench.training.schedule import lr_lambda
from disha_bench.training.setup import TaskData, init_process, load_base_model, load_task_data


@dataclass
class Setup:
    """What the stages after set-up work with."""

    data: TaskData
    engine: Any
    """The DeepSpeed engine; `engine.module` is the adapted model."""
    device: torch.device
    memory: PeakMemory
    before_model_mb: float
    """Process memory before the model was loaded."""
    loaded_mb: float
    """Process memory with the model and adapter loaded, before the engine was built."""
    method: methods.Method
    """The method at its resolved rank (parsed once; what applied the adapter)."""
    matching: dict[str, Any] | None
    """Parameter matching details when the rank was chosen by `match_params`."""
    trainable: int
    total: int
    ds_config: dict[str, Any]


def run(spec: RunSpec, started: float) -> RunResult:
    """The run the spec asks for: train and evaluate, or one of the runs that train nothing."""
    if spec.reevaluate_from:
        return evaluate_only.reevaluate(spec, started)
    if spec.is_unadapted:
        return evaluate_only.unadapted(spec, started)
    setup = set_up(spec)
    state, heldout = train(spec, setup)
    result = summarize(spec, setup, state, heldout, started)
    result.run.resumed_from_step = state.resumed_from_step
    save_and_evaluate(spec, setup, result)
    spec.stamp_finished(result.run, started)
    return result


# ---- set-up ------------------------------------------------------------------------------------


def set_up(spec: RunSpec) -> Setup:
    """Seeds, the process group, data, model, adapter and the DeepSpeed engine, in this order."""
    device = init_process(spec.seed)
    set_test_slowdown(spec.method.label)
    memory = PeakMemory(device)
    data = load_task_data(spec)
    if not data.features:
        raise ValueError(f"the task has no training examples ({data.dropped} dropped: answer longer than max_length)")
    # Refused here, before the model loads: a second pass over the data that the suite did not ask for.
    epochs = check_epochs(spec.training, distributed.world_size(), len(data.features))
    distributed.log(f"{spec.run_id}: {spec.training.max_steps} steps x global batch "
                    f"{spec.training.batch_size * spec.training.grad_accum * distributed.world_size()} = "
                    f"{epochs:.3f} epochs over {len(data.features):,} training examples")
    before_model_mb = memory.usage_mb()
    model, method, matching = load_adapted_model(spec, data, device)
    loaded_mb = memory.usage_mb()
    trainable, total = methods.count_trainable(model), sum(p.numel() for p in model.parameters())
    distributed.log(f"{spec.run_id}: {spec.method.label} trainable {trainable:,} / {total:,}")
    engine, ds_config = build_engine(model, spec, method)
    return Setup(data, engine, device, memory, before_model_mb, loaded_mb, method, matching, trainable, total, ds_config)


def load_adapted_model(spec: RunSpec, data: TaskData, device=None):
    """The base model with the method applied: (model, the method at its resolved rank, matching details)."""
    model = load_base_model(spec, data.task, data.tokenizer, device)
    method, matching = resolve_method(model, spec)
    model = method.apply(model)
    if spec.training.gradient_checkpointing:
        # getattr: transformers' methods (PEFT forwards them), which nn.Module types as Tensor | Module
        getattr(model, "gradient_checkpointing_enable")(gradient_checkpointing_kwargs={"use_reentrant": False})
        getattr(model, "enable_input_require_grads")()
    return model, method, matching


def resolve_method(model, spec: RunSpec) -> tuple[methods.Method, dict[str, Any] | None]:
    """The run's method, parsed once, with a rank chosen by `match_params` against another method of the suite."""
    method = methods.from_record(spec.method.name, spec.method.params)
    if getattr(method, "match_params", None) is None:
        return method, None
    table = {label: methods.parse(entry.name, entry.params) for label, entry in spec.methods.items()}
    info = dict(methods.resolve_matching(model, table)[spec.suite_label])
    return info.pop("method"), info


def build_engine(model, spec: RunSpec, method: methods.Method):
    """AdamW (the method's parameter groups) and the schedule under a DeepSpeed ZeRO engine."""
    training = spec.training
    groups = method.param_groups(model, training.lr, training.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=training.lr, weight_decay=training.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(training))
    ds_config = deepspeed_config(training, distributed.world_size())
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    if training.zero_stage == 3:
        method.after_zero3_init(engine.module)
    return engine, ds_config


# ---- fit ---------------------------------------------------------------------------------------


def train(spec: RunSpec, setup: Setup) -> tuple[FitState, HeldOut]:
    """The fit loop, with the held-out curve measured at step 0 (the unadapted model), at the steps
    of its schedule (heldout.Schedule) and at the last step."""
    # The imports left hundreds of thousands of long-lived objects; a full garbage collection
    # walks them all (seconds on a slow CPU) and would land inside a timed step.
    gc.freeze()
    setup.memory.start()
    data = setup.data
    sampler = GlobalBatches(len(data.features), spec.training.batch_size, distributed.world_size(), distributed.rank(), spec.seed)
    curve = HeldOutCurve(
        setup.engine.module, data.heldout_features, data.tokenizer.pad_token_id, setup.device,
        batch_size=spec.training.batch_size, schedule=Schedule.of(spec.evaluation, spec.training.max_steps),
        max_steps=spec.training.max_steps, source=data.task.heldout_source, example_ids=data.heldout_ids,
    )
    control = FitControl.for_run(spec, setup.engine, setup.device, curve.curve)
    state, trained = control.start(sampler)  # the last checkpoint's state (and curve), or a fresh one
    if control.resumed_from is None:
        curve.measure(0, train_time_s=0.0, tokens=0)
    if not trained:
        state = fit(setup.engine, data.features, data.tokenizer.pad_token_id, state, spec.training, setup.device,
                    spec.run_id, between_steps=control.after(curve))
    heldout = curve.finish(state)
    control.after_fit(state, already_saved=trained)
    return state, heldout


def save_and_evaluate(spec: RunSpec, setup: Setup, result: RunResult) -> None:
    """Save the adapter, then evaluate into `result`. An evaluation that raises leaves the training
    record and the adapter for a re-run; a successful one removes the adapter unless it is kept."""
    if result.run.status not in TRAINED_STATUSES:
        return
    if not spec.evaluation.enabled:
        if spec.keep_adapter:
            save_adapter(spec, setup)
        return
    adapter = save_adapter(spec, setup)
    evaluated = evaluate_into(result, setup.engine.module, setup.data, spec.evaluation, setup.memory,
                              synced_gpus=distributed.world_size() > 1 and spec.training.zero_stage == 3)
    if evaluated and adapter is not None and not spec.keep_adapter and distributed.rank() == 0:
        discard_saved(adapter)


def save_adapter(spec: RunSpec, setup: Setup) -> Path | None:
    """Save the trained adapter to the run's adapter folder (all ranks take part); its path."""
    if not spec.adapter_dir:
        return None
    target = Path(spec.adapter_dir)
    save_trained(setup.engine, setup.method, target, spec.training.zero_stage)
    return target


# ---- summary -----------------------------------------------------------------------------------


def warmup_steps_excluded(n_steps: int) -> int:
    """Leading steps left out of throughput medians: allocator, JIT and cache warm-up."""
    return min(5, max(1, n_steps // 10)) if n_steps > 2 else 0


def summarize(spec: RunSpec, setup: Setup, state: FitState, heldout: HeldOut, started: float) -> RunResult:
    """The result of training: run info, step log, held-out curve, convergence, memory, throughput."""
    steps = state.steps
    warmup = warmup_steps_excluded(len(steps))
    steady = steps[warmup:] or steps
    tokens_per_s = statistics.median(s.tokens / s.step_time_s for s in steady)
    world = distributed.world_size()
    return RunResult(
        run=spec.run_info(state.status, state.error, started, world),
        training=Training(
            trainable_params=setup.trainable, total_params=setup.total, method_params=setup.method.model_dump(exclude={"match_params"}), matching=setup.matching,
            steps=steps, stopped_at_step=state.stopped_at_step, deepspeed_config=setup.ds_config,
            dropped_examples=setup.data.dropped,
        ),
        heldout=heldout,
        convergence=convergence.summarize(steps, spec.convergence.targets, spec.convergence.ema, budget=spec.training.max_steps),
        memory=memory_figures(setup),
        throughput=Throughput(
            tokens_per_s=tokens_per_s, tokens_per_s_per_rank=tokens_per_s / world,
            step_time_s=statistics.median(s.step_time_s for s in steady),
            warmup_steps_excluded=warmup if len(steps) > warmup else 0, train_time_s=state.train_time_s,
        ),
    )


def memory_figures(setup: Setup) -> Memory:
    """Whole memory up to the end of training on every rank (weights, ZeRO buffers, optimizer state,
    activations), and the training phase's peak over the usage when it began."""
    memory = setup.memory
    mine = [memory.absolute_peak_mb(), memory.absolute_peak_reserved_mb(), memory.peak_mb()]
    ranks = [r[0] for r in distributed.gather_objects([mine])]
    peak, reserved, train_peak = ranks[0]
    return Memory(
        device=setup.device.type, peak_mb=peak, per_rank_peak_mb=[r[0] for r in ranks], peak_reserved_mb=reserved,
        before_model_mb=setup.before_model_mb, loaded_mb=setup.loaded_mb, increment_mb=peak - setup.loaded_mb,
        train_peak_mb=train_peak, train_peak_reserved_mb=memory.peak_reserved_mb(), baseline_mb=memory.baseline_mb,
        per_rank_train_peak_mb=[r[2] for r in ranks],
    )
