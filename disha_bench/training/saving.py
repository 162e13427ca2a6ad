"""Saving a run's trained adapter so that it loads onto the original checkpoint.

    python -c "from peft import PeftModel; ..."   # PeftModel.from_pretrained(base, results/<suite>/adapters/<run-id>)

PEFT format for adapters (PiSSA/OLoRA converted to a plain LoRA on the original weights by their
method's `save`), the whole model for `full`. Under ZeRO-3 the trainable parameters are
gathered first: a bare save_pretrained would write empty tensors.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import deepspeed
import torch

from disha_bench import methods
from disha_bench.training import distributed


def save_trained(engine, method: methods.Method, target: Path, zero_stage: int) -> None:
    """Rank 0 writes `target`; every rank takes part in the ZeRO-3 gather and the closing barrier."""
    model = engine.module
    trainable = [p for p in model.parameters() if p.requires_grad]
    if zero_stage == 3:
        with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
            if distributed.rank() == 0:
                method.save(model, target)
    elif distributed.rank() == 0:
        method.save(model, target)
    if distributed.world_size() > 1:
        torch.distributed.barrier()


def discard_saved(target: Path) -> None:
    """Remove a saved adapter that is no longer needed, and its `adapters/` folder once empty, so a
    suite whose runs all evaluated leaves only result files beside each other."""
    shutil.rmtree(target, ignore_errors=True)
    try:
        target.parent.rmdir()
    except OSError:  # other runs' adapters are still there (or it is already gone)
        pass


def load_trained(base, method: methods.Method, source: Path):
    """What `save_trained` wrote, on the `base` model it was trained from: the PEFT adapter on it, or
    for `full` the saved model itself (same class as `base`)."""
    return method.load(base, source)
