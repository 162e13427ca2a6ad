"""DiSHA / MiSS methods (PEFT ``MissConfig``): bone, bone-mini, bat.

- bone: ``MissConfig()`` (init_weights=True). D (r, out), zero; dW tiles D^T over the in/r column
  shards. Trainable per layer: r * out. r <= in_features (a partial last shard is zero-padded).
- bone-mini: ``init_weights="mini"``. D (r, mini_r) repeated out/mini_r times along the output.
  Trainable per layer: r * mini_r; out_features must divide by mini_r.
- bat: ``init_weights="bat"``. D (out/r, r, r), zero; W'_{a,b} = W_{a,b} (I + D_a) + D_a.
  Trainable per layer: out * r; in and out must both divide by r. ``kernel="efficient"`` (default)
  swaps PEFT's forward for the recomputing autograd function in ``bat_kernel``; ``kernel="peft"``
  keeps PEFT's forward (the reference). Parameters, adapter files, merge and unmerge are PEFT's in
  both cases. PEFT's Bat forward applies no dropout, so bat has no dropout parameter.

The naming trap: what the DiSHA paper v1-v3 and PEFT's first release called "Bone" is today's Bat.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field
from torch import nn

from disha_bench.methods.base import RankedMethod, register


class _Miss(RankedMethod):
    """What the MiSS variants share: PEFT's MissConfig with `init_weights = variant`."""

    variant: ClassVar[Any] = True

    def peft_config(self, task_type: Optional[str]) -> Any:
        from peft import MissConfig

        return MissConfig(r=self.r, miss_dropout=getattr(self, "dropout", 0.0), mini_r=getattr(self, "mini_r", 1),
                          target_modules=self.peft_targets(), init_weights=self.variant, task_type=task_type)


@register
class Bone(_Miss):
    """Bone (MiSS default)."""

    name: ClassVar[str] = "bone"
    summary: ClassVar[str] = ("Bone (MiSS default): D (r, out) shared by the in/r column shards; "
                              "y = Wx + (sum of input shards) D")

    r: int = Field(64, gt=0)
    """Shard size: D is (r, out_features), shared by the in_features/r input shards (r <= in_features);
    chosen by `match_params` when that is set."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input (PEFT miss_dropout)."""

    def module_count(self, in_features: int, out_features: int) -> int:
        return self.r * out_features

    def check_module(self, in_features: int, out_features: int) -> Optional[str]:
        if self.r > in_features:
            return f"{self.name} needs r <= in_features = {in_features}, got r={self.r}"
        return None


@register
class BoneMini(Bone):
    """Bone-mini (MiSS 'mini')."""

    name: ClassVar[str] = "bone-mini"
    summary: ClassVar[str] = "Bone-mini (MiSS 'mini'): D (r, mini_r) repeated along the output; fewer parameters"
    variant: ClassVar[Any] = "mini"

    r: int = Field(64, gt=0)
    """Shard size along the input (r <= in_features); chosen by `match_params` when that is set."""
    mini_r: int = Field(1, gt=0)
    """Width of the shared block along the output dimension (PEFT mini_r); D is (r, mini_r),
    out_features must divide by it."""

    def module_count(self, in_features: int, out_features: int) -> int:
        return self.r * self.mini_r

    def check_module(self, in_features: int, out_features: int) -> Optional[str]:
        problem = super().check_module(in_features, out_features)
        if problem is None and out_features % self.mini_r:
            return f"bone-mini needs out_features divisible by mini_r: {out_features} % {self.mini_r} != 0"
        return problem


@register
class Bat(_Miss):
    """Bat (MiSS 'bat'). PEFT's Bat forward applies no dropout, so there is no dropout parameter."""

    name: ClassVar[str] = "bat"
    summary: ClassVar[str] = ("Bat (MiSS 'bat', the paper's old 'Bone'): W'_{a,b} = W_{a,b}(I + D_a) + D_a, "
                              "D (out/r, r, r)")
    variant: ClassVar[Any] = "bat"

    r: int = Field(64, gt=0)
    """Block size: D is (out_features/r, r, r), one r x r block per row block; in and out must divide
    by r; chosen by `match_params` when that is set."""
    kernel: Literal["efficient", "peft"] = "efficient"
    """'efficient': recompute W + dW in backward (memory near Bone's, same results and files as PEFT);
    'peft': PEFT's own forward (keeps the materialised weights for backward)."""

    def module_count(self, in_features: int, out_features: int) -> int:
        return out_features * self.r  # (out/r) blocks of r x r

    def check_module(self, in_features: int, out_features: int) -> Optional[str]:
        if in_features % self.r or out_features % self.r:
            return f"bat needs in_features and out_features divisible by r={self.r} (r x r blocks)"
        return None

    def wrap(self, model: nn.Module, task_type: Optional[str]) -> nn.Module:
        model = super().wrap(model, task_type)
        if self.kernel == "efficient":
            from disha_bench.methods.bat_kernel import patch_bat_layers

            patch_bat_layers(model)
        return model

    def after_zero3_init(self, model: nn.Module) -> None:
        from disha_bench.methods.bat_kernel import register_zero3_parameters

        register_zero3_parameters(model)
