"""One repeat of the cost phase, in a fresh process: a few optimizer steps of a run, measured.

    disha-bench run suites/smoke.yaml      # the runner's cost phase starts these (running/cost.py)

The run is set up exactly as for training (data, model, adapter, DeepSpeed engine), then trains
`cost_steps` steps with no held-out curve and no evaluation. The process is new, so its memory
high-water mark is the peak of this repeat alone. Written: one `CostRepeat` (position filled in by
the runner) to the spec's `cost_repeat_path`.
"""

from __future__ import annotations

import gc
import statistics
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from disha_bench.config.run_spec import RunSpec
from disha_bench.contracts.results import CostRepeat
from disha_bench.core.io import write_json_atomic
from disha_bench.training import distributed
from disha_bench.training.loop import FitState, fit
from disha_bench.training.recipe import set_up
from disha_bench.training.sampler import GlobalBatches

WARMUP_STEPS = 1
"""Leading steps of a repeat left out of its medians (allocator and JIT warm-up)."""


def measure(spec: RunSpec) -> CostRepeat:
    """Set the run up, train `cost_steps` steps and read its peak memory and step times."""
    steps = int(spec.cost_steps or 2)
    setup = set_up(spec)
    gc.freeze()  # as in training: a full collection of the imports' objects must not land in a step
    setup.memory.start()
    sampler = GlobalBatches(len(setup.data.features), spec.training.batch_size, distributed.world_size(),
                            distributed.rank(), spec.seed)
    training = spec.training.model_copy(update={"max_steps": steps, "max_time": None})
    cpu_marks = [time.process_time()]  # after each step, outside its timed part
    state = fit(setup.engine, setup.data.features, setup.data.tokenizer.pad_token_id, FitState(sampler), training,
                setup.device, f"{spec.run_id} (cost)", between_steps=lambda _: cpu_marks.append(time.process_time()))
    peak = setup.memory.absolute_peak_mb()
    steady = state.steps[WARMUP_STEPS:] or state.steps
    cpu_steps = [b - a for a, b in zip(cpu_marks, cpu_marks[1:])]
    cpu_steady = cpu_steps[WARMUP_STEPS:] or cpu_steps
    return CostRepeat(
        position=-1, steps=len(state.steps), peak_mb=peak, increment_mb=peak - setup.loaded_mb,
        tokens_per_s=statistics.median(s.tokens / s.step_time_s for s in steady),
        step_time_s=statistics.median(s.step_time_s for s in steady),
        min_step_time_s=min(s.step_time_s for s in steady),
        cpu_time_s=statistics.median(cpu_steady) if setup.device.type == "cpu" and cpu_steady else None,
    )


def main(spec: RunSpec) -> int:
    """Worker entry: 0 when the repeat was measured and written (by rank 0), 1 when it failed."""
    try:
        repeat = measure(spec)
    except Exception:
        traceback.print_exc()
        return 1
    if distributed.rank() == 0:
        write_json_atomic(Path(str(spec.cost_repeat_path)), asdict(repeat))
    return 0
