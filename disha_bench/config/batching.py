"""The global batch and the passes over the data on a given rank count.

    disha-bench validate suites/nlg.yaml --nproc 8

`training.global_batch` holds the sequences per optimizer step for any rank count (the accumulation
is derived from the ranks; a count that cannot hold it is refused before any model loads), and
`training.max_epochs` refuses a run whose steps would start a pass over the data the suite did not ask for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from disha_bench.core.errors import UserError

if TYPE_CHECKING:  # the suite checks batches through this module
    from disha_bench.config.suite import TrainingConfig


def check_global_batch(training: TrainingConfig, file: str | None = None, key: str = "training") -> None:
    """What `validate` can check without the rank count: global_batch alone, a multiple of batch_size."""
    if training.global_batch is None:
        return
    if "grad_accum" in training.model_fields_set:
        raise UserError("set global_batch or grad_accum, not both (with global_batch the accumulation follows the ranks)",
                        file=file, key=f"{key}.grad_accum")
    if training.global_batch % training.batch_size:
        raise UserError(f"expected a multiple of batch_size {training.batch_size}, got {training.global_batch}",
                        file=file, key=f"{key}.global_batch")


def for_ranks(training: TrainingConfig, world_size: int, file: str | None = None) -> TrainingConfig:
    """`training` on `world_size` ranks: with `global_batch`, grad_accum derived so that the global
    batch is the suite's; a rank count that cannot hold it is a UserError."""
    if training.global_batch is None:
        return training
    per_step = training.batch_size * world_size
    if training.global_batch % per_step:
        raise UserError(f"global_batch {training.global_batch} cannot be held on {world_size} rank(s) at batch_size "
                        f"{training.batch_size}: it must be a multiple of {per_step}", file=file, key="training.global_batch")
    return training.model_copy(update={"grad_accum": training.global_batch // per_step})


def check_epochs(training: TrainingConfig, world_size: int, examples: int, file: str | None = None) -> float:
    """Passes over `examples` training examples that the run's steps make; a UserError past `max_epochs`."""
    global_batch = training.batch_size * training.grad_accum * world_size
    epochs = training.max_steps * global_batch / max(examples, 1)
    if training.max_epochs is not None and epochs > training.max_epochs + 1e-9:
        raise UserError(f"max_steps {training.max_steps} x global batch {global_batch} = {training.max_steps * global_batch:,} "
                        f"sequences is {epochs:.3f} passes over {examples:,} training examples, more than max_epochs "
                        f"{training.max_epochs:g}; lower max_steps (at most {int(training.max_epochs * examples) // global_batch})",
                        file=file, key="training.max_epochs")
    return epochs
