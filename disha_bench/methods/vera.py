"""VeRA (PEFT ``VeraConfig``): frozen random low-rank matrices shared by every adapted layer, scaled by
two trainable vectors per layer.

    dW = diag(b) B diag(d) A,  A (r, in) and B (out, r) random and frozen (one pair for the whole model,
    from `projection_prng_key`), d (r) and b (out) trained.

Trainable per adapted layer: r + out. `r` is far larger than LoRA's for the same budget (PEFT's
default is 256). Added as the proof that a method PEFT has needs only its own file (and a row in the
test battery).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

from pydantic import Field

from disha_bench.methods.base import RankedMethod, register


@register
class Vera(RankedMethod):
    """VeRA."""

    name: ClassVar[str] = "vera"
    summary: ClassVar[str] = "VeRA: shared frozen random A, B; trainable scaling vectors d (r) and b (out) per layer"

    r: int = Field(256, gt=0)
    """Rank of the shared random projections; chosen by `match_params` when that is set."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input (PEFT vera_dropout)."""
    d_initial: float = Field(0.1, gt=0)
    """Initial value of every entry of d (PEFT d_initial); b starts at zero, so the update starts at zero."""
    projection_prng_key: int = Field(0, ge=0)
    """Seed of the shared random A and B (PEFT projection_prng_key); saved with the adapter."""

    def module_count(self, in_features: int, out_features: int) -> int:
        return self.r + out_features

    def peft_config(self, task_type: Optional[str]) -> Any:
        from peft import VeraConfig

        return VeraConfig(r=self.r, target_modules=self.peft_targets(), vera_dropout=self.dropout,
                          d_initial=self.d_initial, projection_prng_key=self.projection_prng_key,
                          save_projection=True, task_type=task_type)
