"""Saving a run's trained adapter so that it loads onto the original checkpoint.

    python -c "from peft import PeftModel; ..."   # PeftModel.from_pretrained(base, results/<suite>/adapters/<run-id>)

PEFT format for adapters (PiSSA/OLoRA converted to a plain LoRA on the original weights by their
method's `after_save`), the whole model for `full`. Under ZeRO-3 the trainable parameters are
gathered first: a bare save_pretrained would write empty tensors.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import deepspeed
import torch

from disha_bench.running import distributed
from disha_bench import methods


def save_trained(engine, method_name: str, target: Path, zero_stage: int) -> None:
    """Rank 0 writes `target`; every rank takes part in the ZeRO-3 gather and the closing barrier."""
    model = engine.module
    trainable = [p for p in model.parameters() if p.requires_grad]
    if zero_stage == 3:
        with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
            if distributed.rank() == 0:
                methods.save(model, method_name, target)
    elif distributed.rank() == 0:
        methods.save(model, method_name, target)
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


def load_trained(base, method_name: str, source: Path):
    """What `save_trained` wrote, on the `base` model it was trained from: the PEFT adapter on it, or
    for `full` the saved model itself (same class as `base`)."""
    if methods.REGISTRY.get(method_name).build_config is None:  # full fine-tuning saved the whole model
        return type(base).from_pretrained(source)
    from peft import PeftModel  # PEFT is imported by methods.apply in training runs; here only on reload

    return PeftModel.from_pretrained(base, source)

