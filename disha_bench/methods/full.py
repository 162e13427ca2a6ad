"""Full fine-tuning: every parameter of the model trains; no PEFT wrapper."""

from __future__ import annotations

from disha_bench.methods.base import MethodSpec, register

full = register(
    MethodSpec(
        name="full",
        summary="full fine-tuning: every model parameter trainable (no adapter)",
        rank=None,
    )
)
