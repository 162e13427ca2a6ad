"""Saving a run's trained adapter so that it loads onto the original checkpoint.

    python -c "from peft import PeftModel; ..."   # PeftModel.from_pretrained(base, results/<suite>/adapters/<run-id>)

PEFT format for adapters (PiSSA/OLoRA converted to a plain LoRA on the original weights by their
method's `after_save`), the whole model for `full`. Under ZeRO-3 the trainable parameters are
gathered first: a bare save_pretrained would write empty tensors.
"""

from __future__ import annotations

from pathlib import Path

import deepspeed
import torch

from disha_bench import distributed, methods


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
