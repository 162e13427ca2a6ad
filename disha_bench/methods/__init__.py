"""Fine-tuning methods: LoRA and variants, DiSHA (Bone, Bone-mini, Bat), VeRA and full fine-tuning.

    disha-bench list methods

Each method is one `Method` subclass (`base.py`) in a module of this package; every module here is
imported below, so a new method's file registers itself. A suite's entry is parsed once into the
method's typed object (`parse`), which the recipe then passes along:

    method = methods.parse("lora", {"r": 8, "alpha": "2r"})     # validated, defaults filled in
    model = method.apply(model)                                   # shape checks, then the adapter
    groups = method.param_groups(model, lr, weight_decay)
    method.save(model, directory); method.load(base, directory)

`resolve_matching` sizes methods against each other (`match_params`); `apply(model, name, **params)`
and `validate_params(name, params)` are shorthands for scripts and tests.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from torch import nn

from disha_bench.core.errors import UserError
from disha_bench.core.schema import field_lines, join_key, validate_model
from disha_bench.methods.base import REGISTRY, Method, RankedMethod, count_all, count_trainable, head_modules, register, resolve_targets, task_type
from disha_bench.methods.bat_kernel import patch_bat_layers, unpatch_bat_layers
from disha_bench.methods.matching import resolve_matching

_HELPERS = {"base", "params", "matching", "bat_kernel", "input_rebuild"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _HELPERS:
        importlib.import_module(f"{__name__}.{_module.name}")  # each method module registers itself

__all__ = [
    "REGISTRY", "Method", "RankedMethod", "register", "get", "names", "describe", "parse", "from_record", "validate_params",
    "apply", "resolve_matching", "count_trainable", "count_all", "head_modules", "resolve_targets", "task_type",
    "patch_bat_layers", "unpatch_bat_layers",
]

# PEFT's (and common) spellings of our parameter names, for "did you mean"
ALIASES = {
    "rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "miss_dropout": "dropout",
    "vera_dropout": "dropout",
    "target": "target_modules",
    "targets": "target_modules",
    "match": "match_params",
    "ratio": "loraplus_lr_ratio",
    "niter": "pissa_niter",
}


def get(name: str, *, file: str | None = None, key: str | None = None) -> type[Method]:
    """The method class registered as `name` (UserError with "did you mean" otherwise)."""
    return REGISTRY.get(name, file=file, key=key)


def names() -> list[str]:
    return list(REGISTRY)


def describe() -> str:
    """Every method, its summary and its parameters with defaults and meaning."""
    lines = []
    for name, cls in REGISTRY.items():
        lines.append(f"{name}: {cls.summary}")
        lines += field_lines(cls) or ["    (no parameters)"]
        if cls.modifies_base_weights:
            lines.append("    note: initialisation rewrites the frozen weights; saved adapters are converted to a plain "
                         "LoRA of rank 2r on the original weights")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def parse(name: str, params: dict | None = None, *, file: str | None = None, key: str | None = None) -> Method:
    """A suite's method entry as the method's typed object: validated once, defaults filled in, a
    relative alpha made numeric where the rank is fixed. ``file``/``key`` locate errors."""
    cls = get(name, file=file, key=key)
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise UserError(f"parameters of method '{name}' must be a mapping, got {type(params).__name__}", file=file, key=key)
    method = validate_model(cls, params, file=file, key=key, what=f"method '{name}'", aliases=ALIASES)
    if getattr(method, "match_params", None) is not None and "r" in params:
        raise UserError(f"method '{name}': give either 'r' or 'match_params' (which chooses r), not both",
                        file=file, key=join_key(key, "match_params"))
    return method.resolved()


def from_record(name: str, params: dict[str, Any]) -> Method:
    """The method of a run spec or a result: parameters already validated and filled in by `parse`
    (a default rank stands beside `match_params` there), so only their types are checked again."""
    return get(name).model_validate(params)


def validate_params(name: str, params: dict | None, *, file: str | None = None, key: str | None = None) -> dict[str, Any]:
    """`parse(...)` as a plain dict (what a result records)."""
    return parse(name, params, file=file, key=key).as_dict()


def apply(model: nn.Module, name: str, *, file: str | None = None, key: str | None = None, **params: Any) -> nn.Module:
    """Shorthand for `parse(name, params).apply(model)`."""
    return parse(name, params, file=file, key=key).apply(model, file=file, key=key)
