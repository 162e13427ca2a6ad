"""Fine-tuning methods: LoRA and variants, DiSHA (Bone, Bone-mini, Bat) and full fine-tuning.

Public API (used by the runner; nothing method-specific lives outside this package):

    REGISTRY                                   Registry of MethodSpec
    names() -> list[str]
    describe() -> str                          text for `disha-bench list methods`
    validate_params(name, params, *, file=None, key=None) -> dict     (no model needed)
    apply(model, name, **params) -> model      PEFT-wrapped model, or the model itself for 'full'
    optimizer_param_groups(model, name, params, lr, weight_decay) -> list[dict]
    count_trainable(model) -> int
    expected_trainable(model, name, params) -> int       analytic count, no adapter built
    resolve_matching(model, {label: (name, params)}, *, file=None, key=None) -> {label: info}
    resolve_params(name, params) -> dict       validated, numeric alpha when r is fixed (`alpha: 2r`)
    effective_settings(name, params, lr=, trainable=) -> dict   r, numeric alpha, scaling, lr, trainable
    target_modules(model, name, params) -> [(path, in, out)]   what apply() would adapt
    patch_bat_layers(model) -> int             efficient Bat kernel on a (re)loaded PEFT Bat model

Methods: lora, rslora, dora, pissa, olora, loraplus, bone, bone-mini, bat, full. See each module.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from disha_bench.errors import UserError
from disha_bench.methods import full as _full  # noqa: F401  (registers)
from disha_bench.methods import lora as _lora  # noqa: F401
from disha_bench.methods import miss as _miss  # noqa: F401
from disha_bench.methods.base import (
    ALIASES,
    REGISTRY,
    MethodSpec,
    count_all,
    count_trainable,
    head_modules,
    join_key,
    resolve_targets,
    task_type,
    validate_params,
)
from disha_bench.methods.bat_kernel import patch_bat_layers, unpatch_bat_layers
from disha_bench.methods.matching import analytic_count, resolve_matching
from disha_bench.methods.params import MethodParams, alpha_value, resolve_alpha
from disha_bench.config.schema import field_lines

__all__ = [
    "REGISTRY",
    "MethodSpec",
    "MethodParams",
    "names",
    "describe",
    "validate_params",
    "apply",
    "optimizer_param_groups",
    "count_trainable",
    "count_all",
    "expected_trainable",
    "resolve_matching",
    "resolve_params",
    "effective_settings",
    "target_modules",
    "task_type",
    "patch_bat_layers",
    "unpatch_bat_layers",
]


def names() -> list[str]:
    return list(REGISTRY)


def describe() -> str:
    """Every method, its summary and its parameters with defaults and meaning."""
    lines = []
    for name, spec in REGISTRY.items():
        lines.append(f"{name}: {spec.summary}")
        lines += field_lines(spec.params) or ["    (no parameters)"]
        if spec.modifies_base_weights:
            lines.append("    note: initialisation rewrites the frozen weights; saved adapters are converted to a plain "
                         "LoRA of rank 2r on the original weights")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def resolve_params(name: str, params: dict | None, *, file: str | None = None, key: str | None = None) -> dict:
    """Validated params with defaults, and the numeric LoRA alpha in place of `<k>r` or null when r is
    fixed. With `match_params`, alpha stays relative until `resolve_matching` chooses r."""
    return resolve_alpha(validate_params(name, params, file=file, key=key))


def effective_settings(name: str, params: dict, *, lr: float | None = None, trainable: int | None = None) -> dict:
    """What a run trained with, for its result: rank, numeric alpha and the update's scaling
    (alpha/r; alpha/sqrt(r) for rslora), learning rate and trainable parameters.

    params: the resolved params (after `resolve_matching` when the method matched another's count).
    """
    params = validate_params(name, params)
    if params.get("match_params") is not None:
        raise ValueError(f"method '{name}': resolve match_params (resolve_matching) before effective_settings")
    r = params.get("r")
    alpha = alpha_value(params)
    scaling = None
    if alpha is not None:
        scaling = alpha / (r**0.5 if name == "rslora" else r)
    return {"method": name, "r": r, "alpha": alpha, "scaling": scaling, "lr": lr, "trainable_params": trainable}


def _check_targets(model: nn.Module, spec: MethodSpec, params: dict, file=None, key=None) -> list:
    targets = resolve_targets(model, params["target_modules"])
    if not targets:
        linear = sorted({p.rsplit(".", 1)[-1] for p, *_ in resolve_targets(model, "all-linear")})
        raise UserError(
            f"target_modules {params['target_modules']!r} match no linear module of {type(model).__name__}; "
            f"its linear modules: {', '.join(linear)}",
            file=file,
            key=join_key(key, "target_modules"),
        )
    if spec.check_module is not None:
        bad = [(path, i, o, spec.check_module(i, o, params)) for path, i, o in targets]
        bad = [b for b in bad if b[3]]
        if bad:
            path, i, o, why = bad[0]
            more = f" (and {len(bad) - 1} more target modules)" if len(bad) > 1 else ""
            raise UserError(
                f"method '{spec.name}' cannot adapt module '{path}' with weight shape ({o}, {i}) "
                f"(in_features={i}, out_features={o}): {why}{more}",
                file=file,
                key=join_key(key, spec.rank or "target_modules"),
            )
    return targets


def check_shapes(model: nn.Module, name: str, params: dict, *, file: str | None = None, key: str | None = None) -> None:
    """UserError when method `name` with `params` cannot adapt `model`'s target modules (a meta-device
    model will do: only shapes are read); what `apply` checks first."""
    spec = REGISTRY.get(name, file=file, key=key)
    if spec.build_config is not None:
        _check_targets(model, spec, validate_params(name, params, file=file, key=key), file=file, key=key)


def target_modules(model: nn.Module, name: str, params: dict | None = None) -> list[tuple[str, int, int]]:
    """[(path, in_features, out_features)] that apply(model, name, **params) would adapt ([] for full)."""
    spec = REGISTRY.get(name)
    params = validate_params(name, params or {})
    if spec.build_config is None:
        return []
    return resolve_targets(model, params["target_modules"])


def expected_trainable(model: nn.Module, name: str, params: dict | None = None) -> int:
    """Analytic trainable count of method `name` on `model` (before apply; no adapter is built)."""
    return analytic_count(model, name, validate_params(name, params or {}))


def apply(model: nn.Module, name: str, *, file: str | None = None, key: str | None = None, **params) -> nn.Module:
    """Validate, check shapes against the model, then wrap it (PEFT) or unfreeze it (full).

    Task type: SEQ_CLS when the model class name ends with 'ForSequenceClassification' (its
    'classifier'/'score' head trains fully through PEFT modules_to_save), else CAUSAL_LM; a plain
    torch module (not a transformers model, e.g. one layer in a benchmark) gets PEFT's generic PeftModel.
    PiSSA/OLoRA initialisation (SVD/QR of the weights) happens here, before any ZeRO partitioning.
    'match_params' must have been resolved by resolve_matching first. ``file``/``key`` only locate
    errors (the method entry's key path in the suite file).
    """
    spec = REGISTRY.get(name, file=file, key=key)
    params = validate_params(name, params, file=file, key=key)
    if params.get("match_params") is not None:
        raise UserError(
            f"method '{name}': 'match_params: {params['match_params']}' must be resolved (resolve_matching) before apply",
            file=file,
            key=join_key(key, "match_params"),
        )
    if spec.build_config is None:  # full fine-tuning
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    ttype = task_type(model)
    if ttype == "SEQ_CLS" and not head_modules(model):
        raise UserError(
            f"{type(model).__name__} has no 'classifier' or 'score' head to train with the adapter", file=file, key=key
        )
    _check_targets(model, spec, params, file=file, key=key)
    from peft import get_peft_model

    peft_model = get_peft_model(model, spec.build_config(params, ttype))
    if spec.after_apply is not None:
        spec.after_apply(peft_model, params)
    return peft_model


def after_zero3_init(model: nn.Module, name: str) -> None:
    """What a method needs once DeepSpeed ZeRO-3 has partitioned the model (call after deepspeed.initialize)."""
    spec = REGISTRY.get(name)
    if spec.after_zero3_init is not None:
        spec.after_zero3_init(model)


def save(model: nn.Module, name: str, directory: str | Path) -> None:
    """Save what `apply(model, name, ...)` trained so that it loads onto the original checkpoint:
    a PEFT adapter (`PeftModel.from_pretrained(base, directory)`), or the whole model for `full`."""
    model.save_pretrained(directory)
    spec = REGISTRY.get(name)
    if spec.after_save is not None:
        spec.after_save(model, Path(directory))


def _default_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Weight decay on trainable matrices; none on biases, norms and other vectors (e.g. DoRA magnitude)."""
    decay, no_decay = [], []
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_vector = len(getattr(p, "ds_shape", None) or p.shape) < 2  # ds_shape: full shape under ZeRO-3
        (no_decay if is_vector or "bias" in pname or "norm" in pname.lower() else decay).append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def optimizer_param_groups(model: nn.Module, name: str, params: dict | None, lr: float, weight_decay: float) -> list[dict]:
    """torch optimizer param groups for `model` after apply(model, name, **params).

    Default: one group with weight decay (matrices), one without (biases, norms, vectors). LoRA+:
    PEFT's groups, B (and vectors) at lr * loraplus_lr_ratio. Only trainable parameters appear.
    """
    spec = REGISTRY.get(name)
    params = validate_params(name, params or {})
    if spec.param_groups is not None:
        return spec.param_groups(model, params, lr, weight_decay)
    return _default_groups(model, lr, weight_decay)
