"""Full fine-tuning: every parameter of the model trains; no PEFT wrapper.

Also the smallest example of a method PEFT does not implement: it overrides `wrap`, `save` and
`load` (and counts every parameter) instead of giving a PEFT config.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Optional

from torch import nn

from disha_bench.methods.base import Method, count_all, register


@register
class Full(Method):
    """Full fine-tuning (no parameters)."""

    name: ClassVar[str] = "full"
    summary: ClassVar[str] = "full fine-tuning: every model parameter trainable (no adapter)"

    def targets(self, model: nn.Module) -> list[tuple[str, int, int]]:
        return []

    def expected_trainable(self, model: nn.Module) -> int:
        return count_all(model)

    def apply(self, model: nn.Module, *, file: str | None = None, key: str | None = None) -> nn.Module:
        return self.wrap(model, None)

    def wrap(self, model: nn.Module, task_type: Optional[str]) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def load(self, base: nn.Module, directory: Path) -> nn.Module:
        """The whole saved model, of the same class as `base`."""
        return getattr(type(base), "from_pretrained")(directory)  # a PreTrainedModel class; nn.Module has no from_pretrained
