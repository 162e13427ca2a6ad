"""The worker process of one run: read the spec, run the recipe, write the result (rank 0).

    python -m disha_bench.training results/smoke/.runs/<run-id>.spec.json
    torchrun --nproc_per_node 2 -m disha_bench.training <spec.json>

Rank 0 writes the result atomically at the very end, so a killed run leaves no result behind; a
run that raises still writes one, with status `failed` and the reason.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import torch

from disha_bench.config.run_spec import RunSpec
from disha_bench.contracts.results import FAILED, RunResult, write_result
from disha_bench.training import distributed
from disha_bench.training.checkpointer import EXIT_INTERRUPTED, Interrupted
from disha_bench.training.meta import collect_meta


def main(argv: list[str]) -> int:
    """Exit status 0 when the run produced a result of its own, 1 when it failed."""
    spec = RunSpec.model_validate_json(Path(argv[0]).read_text())
    started = time.time()
    if "RANK" in os.environ:  # started by torchrun or the deepspeed launcher
        distributed.die_with_launcher()
    distributed.ensure_single_process_env()
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
    # DeepSpeed picks its accelerator when first imported: only now may the recipe import it.
    from disha_bench.training import recipe

    if spec.cost_repeat_path:  # a repeat of the cost phase: measures, writes no result
        from disha_bench.training import cost_repeat

        code = cost_repeat.main(spec)
        if code == 0:
            distributed.leave_process_group()
        return code
    try:
        result = recipe.run(spec, started)
        code = 0
    except Interrupted:  # a stop signal, the checkpoint is saved: no result, a re-run resumes
        return EXIT_INTERRUPTED
    except Exception as err:  # the run failed: record why, keep the suite going
        traceback.print_exc()
        result = RunResult(run=spec.run_info(FAILED, one_line(err), started, distributed.world_size()))
        code = 1
    if distributed.rank() == 0:
        result.meta = collect_meta(spec.command)
        write_result(Path(spec.result_path), result)
    if code == 0:  # a failed rank exits at once: the launcher then stops the others
        distributed.leave_process_group()
    return code


def one_line(err: BaseException) -> str:
    """`Type: first line of the message`, for RunInfo.error."""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
