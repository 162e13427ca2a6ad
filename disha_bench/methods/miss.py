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

from typing import Literal, Optional

from pydantic import Field

from disha_bench.methods.base import MethodSpec, peft_target_modules, register
from disha_bench.methods.params import RankedParams


class BoneParams(RankedParams):
    """Bone (MiSS default)."""

    r: int = Field(64, gt=0)
    """Shard size: D is (r, out_features), shared by the in_features/r input shards (r <= in_features);
    chosen by `match_params` when that is set."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input (PEFT miss_dropout)."""


class BoneMiniParams(BoneParams):
    """Bone-mini (MiSS 'mini')."""

    r: int = Field(64, gt=0)
    """Shard size along the input (r <= in_features); chosen by `match_params` when that is set."""
    mini_r: int = Field(1, gt=0)
    """Width of the shared block along the output dimension (PEFT mini_r); D is (r, mini_r),
    out_features must divide by it."""


class BatParams(RankedParams):
    """Bat (MiSS 'bat'). PEFT's Bat forward applies no dropout, so there is no dropout parameter."""

    r: int = Field(64, gt=0)
    """Block size: D is (out_features/r, r, r), one r x r block per row block; in and out must divide
    by r; chosen by `match_params` when that is set."""
    kernel: Literal["efficient", "peft"] = "efficient"
    """'efficient': recompute W + dW in backward (memory near Bone's, same results and files as PEFT);
    'peft': PEFT's own forward (keeps the materialised weights for backward)."""


def _config(init_weights):
    def build(params: dict, task_type: str):
        from peft import MissConfig

        return MissConfig(
            r=params["r"],
            miss_dropout=params.get("dropout", 0.0),
            mini_r=params.get("mini_r", 1),
            target_modules=peft_target_modules(params["target_modules"]),
            init_weights=init_weights,
            task_type=task_type,
        )

    return build


def _bone_check(in_f: int, out_f: int, params: dict) -> Optional[str]:
    if params["r"] > in_f:
        return f"bone needs r <= in_features = {in_f}, got r={params['r']}"
    return None


def _mini_check(in_f: int, out_f: int, params: dict) -> Optional[str]:
    problem = _bone_check(in_f, out_f, params)
    if problem:
        return problem.replace("bone", "bone-mini")
    if out_f % params["mini_r"]:
        return f"bone-mini needs out_features divisible by mini_r: {out_f} % {params['mini_r']} != 0"
    return None


def _bat_check(in_f: int, out_f: int, params: dict) -> Optional[str]:
    r = params["r"]
    if in_f % r or out_f % r:
        return f"bat needs in_features and out_features divisible by r={r} (r x r blocks)"
    return None


def _bat_after_apply(model, params: dict) -> None:
    from disha_bench.methods.bat_kernel import patch_bat_layers

    if params["kernel"] == "efficient":
        patch_bat_layers(model)


def _bat_zero3(model) -> None:
    from disha_bench.methods.bat_kernel import register_zero3_parameters

    register_zero3_parameters(model)


def _spec(name: str, summary: str, params, variant, module_count, check_module, **hooks) -> MethodSpec:
    """Register the MiSS variant `variant` (PEFT MissConfig.init_weights) as method `name`."""
    return register(MethodSpec(name=name, summary=summary, params=params, build_config=_config(variant),
                               module_count=module_count, check_module=check_module, **hooks))


_spec("bone", "Bone (MiSS default): D (r, out) shared by the in/r column shards; y = Wx + (sum of input shards) D",
      BoneParams, True, lambda in_f, out_f, p: p["r"] * out_f, _bone_check)
_spec("bone-mini", "Bone-mini (MiSS 'mini'): D (r, mini_r) repeated along the output; fewer parameters",
      BoneMiniParams, "mini", lambda in_f, out_f, p: p["r"] * p["mini_r"], _mini_check)
_spec("bat", "Bat (MiSS 'bat', the paper's old 'Bone'): W'_{a,b} = W_{a,b}(I + D_a) + D_a, D (out/r, r, r)",
      BatParams, "bat", lambda in_f, out_f, p: out_f * p["r"], _bat_check,
      after_apply=_bat_after_apply, after_zero3_init=_bat_zero3)
