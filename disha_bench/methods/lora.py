"""The LoRA family: lora, rslora, dora, pissa, olora, loraplus (all PEFT ``LoraConfig``).

Trainable parameters per adapted linear layer (in -> out): r * (in + out); DoRA adds the magnitude
vector (out). PiSSA and OLoRA initialise A and B from the base weight (SVD / QR) and subtract
scaling * B @ A from it (``modifies_base_weights``). Their initial A0, B0 are kept, and the saved
adapter is converted to a plain LoRA of rank 2r on the original weights, [B | -B0] [A ; A0] (PEFT's
own PiSSA conversion, done on the files so that it needs no gathered model under ZeRO-3).
LoRA+ is LoRA with B trained at ``lr * loraplus_lr_ratio`` (PEFT's ``create_loraplus_optimizer`` groups).
"""

from __future__ import annotations

from pathlib import Path

from typing import Optional

from pydantic import Field

from disha_bench.methods.base import MethodSpec, peft_target_modules, register
from disha_bench.methods.params import Alpha, RankedParams, alpha_value

class LoraParams(RankedParams):
    """LoRA and the variants that share its parameters (DoRA, OLoRA)."""

    r: int = Field(8, gt=0)
    """LoRA rank; chosen by `match_params` when that is set."""
    alpha: Optional[Alpha] = None
    """LoRA alpha (PEFT lora_alpha); the update is scaled by alpha/r. A number, or `<k>r` relative to
    the rank (`2r`: alpha = 2 x r, scaling 2, also after `match_params` picks r; the DiSHA paper's
    LoRA, DoRA, LoRA+ and OLoRA use 2r, PiSSA 1r). null: alpha = r (scaling 1)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input (PEFT lora_dropout)."""


class RsLoraParams(LoraParams):
    """rsLoRA: LoRA with the rank-stabilised scaling alpha/sqrt(r)."""

    alpha: Optional[Alpha] = None
    """LoRA alpha (PEFT lora_alpha). rsLoRA keeps its own convention: the update is scaled by
    alpha/sqrt(r), not alpha/r, so a fixed number gives a rank-stable update (the rsLoRA paper's
    point). `<k>r` is accepted and means alpha = k x r (scaling k x sqrt(r)). null: alpha = r."""


class PissaParams(LoraParams):
    """PiSSA: LoRA initialised from the top-r singular vectors of each weight."""

    pissa_niter: Optional[int] = Field(None, ge=0)
    """null: exact SVD of each target weight; n: randomized SVD with n subspace iterations (PEFT
    'pissa_niter_n'), much faster on large weights."""


class LoraPlusParams(LoraParams):
    """LoRA+: LoRA with B trained at a higher learning rate."""

    loraplus_lr_ratio: float = Field(16.0, gt=0)
    """Learning-rate ratio lr_B / lr_A (LoRA+ paper: 2^4 = 16)."""


def _config(init="default", rslora=False, dora=False):
    def build(params: dict, task_type: str):
        from peft import LoraConfig

        r = params["r"]
        alpha = alpha_value(params)
        init_weights = True
        if init == "pissa":
            niter = params.get("pissa_niter")
            init_weights = "pissa" if niter is None else f"pissa_niter_{niter}"
        elif init == "olora":
            init_weights = "olora"
        return LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=params["dropout"],
            target_modules=peft_target_modules(params["target_modules"]),
            use_rslora=rslora,
            use_dora=dora,
            init_lora_weights=init_weights,
            task_type=task_type,
        )

    return build


def _lora_count(in_f: int, out_f: int, params: dict) -> int:
    return params["r"] * (in_f + out_f)


def _dora_count(in_f: int, out_f: int, params: dict) -> int:
    return params["r"] * (in_f + out_f) + out_f


def _decomposition_check(kind: str):
    """PiSSA (SVD) and OLoRA (QR) take r singular vectors / Q columns: r <= min(in, out)."""

    def check(in_f: int, out_f: int, params: dict) -> Optional[str]:
        if params["r"] > min(in_f, out_f):
            return f"{kind} needs r <= min(in_features, out_features) = {min(in_f, out_f)}, got r={params['r']}"
        return None

    return check


def _keep_initial_adapter(model, params: dict) -> None:
    """PiSSA/OLoRA have rewritten the base weights: keep A0, B0 for the conversion on save, and
    record init_lora_weights=True so that loading never decomposes a residual again."""
    from peft import get_peft_model_state_dict

    model.disha_initial_lora = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items() if "lora_" in k}
    for config in model.peft_config.values():
        config.init_lora_weights = True


def _save_as_plain_lora(model, directory: Path) -> None:
    """Rewrite a saved PiSSA/OLoRA adapter as the LoRA of its update on the original weights:
    W_res + s B A = W + s (B A - B0 A0) = W + s [B | -B0] [A ; A0], at rank 2r with the same scaling."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    initial = model.disha_initial_lora
    weights_path = directory / "adapter_model.safetensors"
    tensors = load_file(weights_path)
    for name, value in tensors.items():
        if ".lora_A." in name:
            tensors[name] = torch.cat([value, initial[name].to(value.dtype)], dim=0).contiguous()
        elif ".lora_B." in name:
            tensors[name] = torch.cat([value, -initial[name].to(value.dtype)], dim=1).contiguous()
    save_file(tensors, weights_path, metadata={"format": "pt"})
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    alpha_factor = 2**0.5 if config.get("use_rslora") else 2  # scaling alpha/sqrt(r) or alpha/r unchanged
    config.update(r=2 * config["r"], lora_alpha=alpha_factor * config["lora_alpha"], init_lora_weights=True)
    config["rank_pattern"] = {k: 2 * v for k, v in (config.get("rank_pattern") or {}).items()}
    config["alpha_pattern"] = {k: alpha_factor * v for k, v in (config.get("alpha_pattern") or {}).items()}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def _loraplus_groups(model, params: dict, lr: float, weight_decay: float) -> list[dict]:
    """PEFT's own LoRA+ grouping (create_loraplus_optimizer), captured as torch param groups.

    PEFT applies ``loraplus_weight_decay`` (default 0) to every group and ignores the optimizer's
    weight_decay, so the suite's weight_decay is passed as loraplus_weight_decay.
    """
    from peft.optimizers import create_loraplus_optimizer

    class _CaptureGroups:  # stands in for the optimizer class; PEFT only instantiates it
        def __init__(self, groups, **kwargs):
            self.groups = groups

    captured = create_loraplus_optimizer(
        model,
        _CaptureGroups,
        lr=lr,
        loraplus_lr_ratio=params["loraplus_lr_ratio"],
        loraplus_weight_decay=weight_decay,
    )
    return [g for g in captured.groups if g["params"]]


def _spec(name, summary, params=LoraParams, init="default", rslora=False, dora=False, **kw) -> MethodSpec:
    spec = MethodSpec(
        name=name,
        summary=summary,
        params=params,
        build_config=_config(init, rslora, dora),
        module_count=_dora_count if dora else _lora_count,
        **kw,
    )
    return register(spec)


def _from_decomposition(label: str) -> dict:
    """Spec fields shared by the methods that start A, B from a decomposition of W and keep the
    residual W frozen (PiSSA, OLoRA): they change the base weights, so the initial adapter is kept
    and the saved adapter is converted to a plain LoRA one."""
    return dict(check_module=_decomposition_check(label), after_apply=_keep_initial_adapter,
                after_save=_save_as_plain_lora, modifies_base_weights=True)


_spec("lora", "LoRA: W + (alpha/r) B A, A Kaiming, B zero")
_spec("rslora", "rank-stabilised LoRA: scaling alpha/sqrt(r) (PEFT use_rslora)", params=RsLoraParams, rslora=True)
_spec("dora", "DoRA: LoRA on the direction plus a trainable magnitude per output (PEFT use_dora)", dora=True)
_spec(
    "pissa",
    "PiSSA: A, B from the top-r SVD of W, residual W kept frozen (PEFT init_lora_weights='pissa')",
    params=PissaParams,
    init="pissa",
    **_from_decomposition("PiSSA"),
)
_spec(
    "olora",
    "OLoRA: A, B from the QR decomposition of W, residual W kept frozen (PEFT init_lora_weights='olora')",
    init="olora",
    **_from_decomposition("OLoRA"),
)
_spec(
    "loraplus",
    "LoRA+: LoRA with B trained at lr * loraplus_lr_ratio (PEFT create_loraplus_optimizer groups)",
    params=LoraPlusParams,
    param_groups=_loraplus_groups,
)
