"""Runs that train nothing: the unadapted reference, and the re-evaluation of a saved adapter.

    disha-bench run suites/smoke.yaml     # adds `<task>-unadapted-*` runs; re-evaluates `evaluation_failed` runs

- `unadapted`: the base model (the task's head freshly initialised for classification) evaluated
  as it is: held-out loss at step 0 and the task metric, once per task (the reference row of every
  leaderboard). Nothing is trained, so it has no step log and no throughput.
- `reevaluate`: a run whose evaluation failed kept its training record and its adapter; evaluate
  the adapter again into that record, without training.
"""

from __future__ import annotations

from pathlib import Path

from disha_bench import methods
from disha_bench.config.run_spec import RunSpec
from disha_bench.contracts.results import BUDGET_STOPPED, COMPLETE, Memory, RunResult, Training, read_result
from disha_bench.training import distributed
from disha_bench.training.evaluation import evaluate_into
from disha_bench.training.heldout import HeldOutCurve, Schedule
from disha_bench.training.memory import PeakMemory
from disha_bench.training.saving import discard_saved, load_trained
from disha_bench.training.setup import init_process, load_base_model, load_task_data


def unadapted(spec: RunSpec, started: float) -> RunResult:
    """The base model's held-out loss (step 0) and task metric."""
    device = init_process(spec.seed)
    memory = PeakMemory(device)
    data = load_task_data(spec)
    before_model_mb = memory.usage_mb()
    # Straight onto this rank's accelerator: N ranks loading a 7B model into host memory first hold
    # N copies of it there.
    model = load_base_model(spec, data.task, data.tokenizer, device).to(device)
    loaded_mb = memory.usage_mb()
    curve = HeldOutCurve(model, data.heldout_features, data.tokenizer.pad_token_id, device, batch_size=spec.training.batch_size,
                         schedule=Schedule.of(spec.evaluation, spec.training.max_steps), max_steps=0,
                         source=data.task.heldout_source, example_ids=data.heldout_ids)
    curve.measure(0, train_time_s=0.0, tokens=0)
    total = sum(p.numel() for p in model.parameters())
    peak = memory.absolute_peak_mb()
    result = RunResult(
        run=spec.run_info(COMPLETE, None, started, distributed.world_size()),
        training=Training(trainable_params=0, total_params=total, dropped_examples=data.dropped),
        heldout=curve.curve,
        memory=Memory(device=device.type, peak_mb=peak, per_rank_peak_mb=[peak], before_model_mb=before_model_mb,
                      loaded_mb=loaded_mb, increment_mb=peak - loaded_mb),
    )
    if spec.evaluation.enabled:
        evaluate_into(result, model, data, spec.evaluation, memory)
    spec.stamp_finished(result.run, started)
    return result


def reevaluate(spec: RunSpec, started: float) -> RunResult:
    """Evaluate the saved adapter of a run whose evaluation failed; the training record is kept."""
    if spec.reevaluate_from is None:
        raise ValueError(f"{spec.run_id}: reevaluate() without reevaluate_from")
    result = read_result(Path(spec.reevaluate_from))
    adapter = Path(spec.adapter_dir or "")
    if result is None or result.training is None or not spec.has_saved_adapter():
        raise FileNotFoundError(f"nothing to re-evaluate: no training record or no saved adapter in {adapter}")
    device = init_process(spec.seed)
    memory = PeakMemory(device)
    data = load_task_data(spec)
    model = load_trained(load_base_model(spec, data.task, data.tokenizer),
                         methods.from_record(spec.method.name, spec.method.params), adapter).to(device)
    distributed.log(f"{spec.run_id}: evaluating the saved adapter {adapter} (training kept from the earlier run)")
    result.run.status = BUDGET_STOPPED if result.training.stopped_at_step is not None else COMPLETE
    result.run.error = None
    if evaluate_into(result, model, data, spec.evaluation, memory):
        if not spec.keep_adapter and distributed.rank() == 0:
            discard_saved(adapter)
    earlier_wall_time_s = result.run.wall_time_s
    spec.stamp_finished(result.run, started)
    result.run.wall_time_s += earlier_wall_time_s  # the earlier run's time plus this evaluation's
    return result
