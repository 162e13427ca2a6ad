"""Method specifications, the method registry and the model-side helpers they share.

A method is a :class:`MethodSpec`: its user-facing parameters (a typed model,
`disha_bench.methods.params`), how to build the PEFT config, the analytic trainable count of one
adapted module, a shape check per target module and optional hooks (after-apply patching,
optimizer groups). Everything model-independent is validated from the parameter model alone, so
`validate_params` needs no model.
"""

from __future__ import annotations

from pathlib import Path

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from disha_bench.errors import UserError
from disha_bench.methods.params import MethodParams
from disha_bench.registry import Registry
from disha_bench.config.schema import join_key, validate_model

# ----------------------------------------------------------------------------------------------
# methods


@dataclass
class MethodSpec:
    """A fine-tuning method: its parameters and how it is applied and counted.

    params: the typed model of its parameters (a MethodParams subclass, one docstring per field).
    build_config(params, task_type, modules_to_save) -> a PEFT config (None for full fine-tuning).
    module_count(in_features, out_features, params) -> trainable parameters added per adapted module.
    check_module(in_features, out_features, params) -> None, or why this module cannot be adapted.
    after_apply(peft_model, params) -> None: e.g. install the efficient Bat kernel.
    after_save(peft_model, directory) -> None: rewrite the files save_pretrained wrote (PiSSA, OLoRA).
    after_zero3_init(peft_model) -> None: after deepspeed.initialize under ZeRO-3, e.g. register the
    parameters a layer reads from its child modules (Bat).
    param_groups(model, params, lr, weight_decay) -> optimizer groups, if the default is not enough.
    rank: the parameter that 'match_params' chooses (None: the method has no rank).
    modifies_base_weights: the initialisation rewrites the frozen weights (PiSSA, OLoRA): what
    save_pretrained writes applies to that residual base; `methods.save` converts it for the original.
    """

    name: str
    summary: str
    params: type[MethodParams] = MethodParams
    build_config: Optional[Callable[..., Any]] = None
    module_count: Optional[Callable[[int, int, dict], int]] = None
    check_module: Optional[Callable[[int, int, dict], Optional[str]]] = None
    after_apply: Optional[Callable[[nn.Module, dict], None]] = None
    after_save: Optional[Callable[[nn.Module, Path], None]] = None
    after_zero3_init: Optional[Callable[[nn.Module], None]] = None
    param_groups: Optional[Callable[..., list]] = None
    rank: Optional[str] = "r"
    modifies_base_weights: bool = False
    notes: str = ""

    def defaults(self) -> dict:
        return self.params().model_dump()


REGISTRY: Registry[MethodSpec] = Registry("method")

# PEFT's (and common) spellings of our parameter names, for "did you mean"
ALIASES = {
    "rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "miss_dropout": "dropout",
    "target": "target_modules",
    "targets": "target_modules",
    "match": "match_params",
    "ratio": "loraplus_lr_ratio",
    "niter": "pissa_niter",
}


def register(spec: MethodSpec) -> MethodSpec:
    return REGISTRY.register(spec.name, spec)


def validate_params(name: str, params: dict | None, *, file: str | None = None, key: str | None = None) -> dict:
    """Check a method's parameters without a model; return them with defaults filled in."""
    spec = REGISTRY.get(name, file=file, key=key)
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise UserError(f"parameters of method '{name}' must be a mapping, got {type(params).__name__}", file=file, key=key)
    out = validate_model(spec.params, params, file=file, key=key, what=f"method '{name}'", aliases=ALIASES).model_dump()
    if out.get("match_params") is not None and "r" in params:
        raise UserError(
            f"method '{name}': give either 'r' or 'match_params' (which chooses r), not both",
            file=file,
            key=join_key(key, "match_params"),
        )
    return out


# ----------------------------------------------------------------------------------------------
# model-side helpers

HEAD_NAMES = ("classifier", "score")


def task_type(model: nn.Module) -> str | None:
    """SEQ_CLS for *ForSequenceClassification models, CAUSAL_LM for other transformers models, None for a
    plain torch module (a bare layer or block, as in the layer benchmarks: PEFT's generic PeftModel)."""
    if type(model).__name__.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return "CAUSAL_LM"
    return "CAUSAL_LM" if isinstance(model, PreTrainedModel) else None


def head_modules(model: nn.Module) -> list[str]:
    """The classification head(s) that must train with the adapter (PEFT modules_to_save)."""
    if task_type(model) != "SEQ_CLS":
        return []
    return [n for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)]


def _in_out(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        return None
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return None


def resolve_targets(model: nn.Module, target_modules: str | list[str]) -> list[tuple[str, int, int]]:
    """[(module path, in_features, out_features)] of the modules a method with these target_modules adapts.

    Uses PEFT's own matching ('all-linear' expansion and suffix matching); the output embedding and the
    classification head are never targets (the head trains fully through modules_to_save).
    """
    from peft import LoraConfig
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists

    heads = head_modules(model)
    cfg = LoraConfig(
        target_modules=peft_target_modules(target_modules), modules_to_save=heads or None, task_type=task_type(model)
    )
    cfg = _maybe_include_all_linear_layers(cfg, model)
    out = []
    for path, module in model.named_modules():
        if not path or any(path == h or path.startswith(h + ".") for h in heads):
            continue
        if check_target_module_exists(cfg, path):
            shape = _in_out(module)
            if shape is not None:
                out.append((path, *shape))
    return out


def peft_target_modules(target_modules: str | list[str]) -> str | list[str]:
    """Our target_modules -> PEFT's: 'all-linear' stays, any other string is one module name (PEFT would
    read a bare string as a regex over the full path)."""
    if isinstance(target_modules, str):
        return "all-linear" if target_modules.lower() == "all-linear" else [target_modules]
    return list(target_modules)


def head_param_count(model: nn.Module) -> int:
    return sum(_numel(p) for h in head_modules(model) for p in getattr(model, h).parameters())


def _numel(p: torch.Tensor) -> int:
    return int(getattr(p, "ds_numel", None) or p.numel())  # ZeRO-3 partitioned: ds_numel is the full size


def count_trainable(model: nn.Module) -> int:
    """Trainable parameters (full sizes, also when partitioned by ZeRO-3)."""
    return sum(_numel(p) for p in model.parameters() if p.requires_grad)


def count_all(model: nn.Module) -> int:
    return sum(_numel(p) for p in model.parameters())
