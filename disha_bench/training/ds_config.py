"""The DeepSpeed config a run's engine is built with: generated from `training`, then the suite's
free-form `training.deepspeed` block merged over it.

    python -c "from disha_bench.config.suite import TrainingConfig; from disha_bench.training.ds_config import deepspeed_config; \
print(deepspeed_config(TrainingConfig(), 2))"
"""

from __future__ import annotations

from typing import Any

from disha_bench.config.suite import TrainingConfig


def deepspeed_config(training: TrainingConfig, world: int) -> dict[str, Any]:
    """The generated config with `training.deepspeed` merged (recursively) over it."""
    config = {
        "train_micro_batch_size_per_gpu": training.batch_size,
        "gradient_accumulation_steps": training.grad_accum,
        "train_batch_size": training.batch_size * training.grad_accum * world,
        "gradient_clipping": training.grad_clip or 0.0,
        "zero_optimization": {"stage": training.zero_stage},
        # bf16 needs no loss scaling, so DeepSpeed's overflow check (on by default: several kernels
        # per parameter tensor per step, launch-bound on a GPU with LoRA's 2 tensors per module) only
        # hides a non-finite step; the loop's divergence check sees the loss instead.
        "bf16": {"enabled": training.precision == "bf16", "check_grad_overflow": False},
        "fp16": {"enabled": training.precision == "fp16"},
        # torch's AdamW needs no JIT build (DeepSpeed's fused Adam compiles for a minute on CPU).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000_000,
        "wall_clock_breakdown": False,
    }
    return merge(config, training.deepspeed or {})


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
