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
from typing import Any, ClassVar, Optional

from pydantic import Field, PrivateAttr
from torch import nn

from disha_bench.methods.base import RankedMethod, register
from disha_bench.methods.params import Alpha, alpha_number


@register
class Lora(RankedMethod):
    """LoRA and the variants that share its parameters."""

    name: ClassVar[str] = "lora"
    summary: ClassVar[str] = "LoRA: W + (alpha/r) B A, A Kaiming, B zero"

    r: int = Field(8, gt=0)
    """LoRA rank; chosen by `match_params` when that is set."""
    alpha: Optional[Alpha] = None
    """LoRA alpha (PEFT lora_alpha); the update is scaled by alpha/r. A number, or `<k>r` relative to
    the rank (`2r`: alpha = 2 x r, scaling 2, also after `match_params` picks r; the DiSHA paper's
    LoRA, DoRA, LoRA+ and OLoRA use 2r, PiSSA 1r). null: alpha = r (scaling 1)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter's input (PEFT lora_dropout)."""

    def alpha_number(self) -> float:
        return alpha_number(self.alpha, self.r)

    def scaling(self) -> float:
        return self.alpha_number() / self.r

    def resolved(self) -> "Lora":
        """Numeric alpha in place of `<k>r` / null once r is fixed (no `match_params` left to choose it)."""
        if self.match_params is not None:
            return self
        return self.model_copy(update={"alpha": self.alpha_number()})

    def module_count(self, in_features: int, out_features: int) -> int:
        return self.r * (in_features + out_features)

    def peft_config(self, task_type: Optional[str], **extra: Any) -> Any:
        from peft import LoraConfig

        # (ignore) PEFT annotates lora_alpha as int; its scaling lora_alpha / r takes any number
        return LoraConfig(r=self.r, lora_alpha=self.alpha_number(), lora_dropout=self.dropout,  # type: ignore[arg-type]
                          target_modules=self.peft_targets(), task_type=task_type, **extra)


@register
class RsLora(Lora):
    """rsLoRA: LoRA with the rank-stabilised scaling alpha/sqrt(r)."""

    name: ClassVar[str] = "rslora"
    summary: ClassVar[str] = "rank-stabilised LoRA: scaling alpha/sqrt(r) (PEFT use_rslora)"

    alpha: Optional[Alpha] = None
    """LoRA alpha (PEFT lora_alpha). rsLoRA keeps its own convention: the update is scaled by
    alpha/sqrt(r), not alpha/r, so a fixed number gives a rank-stable update (the rsLoRA paper's
    point). `<k>r` is accepted and means alpha = k x r (scaling k x sqrt(r)). null: alpha = r."""

    def scaling(self) -> float:
        return self.alpha_number() / self.r**0.5

    def peft_config(self, task_type: Optional[str], **extra: Any) -> Any:
        return super().peft_config(task_type, use_rslora=True, **extra)


@register
class Dora(Lora):
    """DoRA: LoRA on the direction plus a trainable magnitude per output."""

    name: ClassVar[str] = "dora"
    summary: ClassVar[str] = "DoRA: LoRA on the direction plus a trainable magnitude per output (PEFT use_dora)"

    def module_count(self, in_features: int, out_features: int) -> int:
        return self.r * (in_features + out_features) + out_features

    def peft_config(self, task_type: Optional[str], **extra: Any) -> Any:
        return super().peft_config(task_type, use_dora=True, **extra)


class _FromDecomposition(Lora):
    """PiSSA and OLoRA start A, B from a decomposition of W and keep the residual W frozen: they
    change the base weights, so the initial adapter is kept and the saved adapter is converted to a
    plain LoRA one on the original weights."""

    modifies_base_weights: ClassVar[bool] = True
    _initial: dict = PrivateAttr(default_factory=dict)

    def init_lora_weights(self) -> Any:
        raise NotImplementedError

    def check_module(self, in_features: int, out_features: int) -> Optional[str]:
        """r singular vectors / Q columns: r <= min(in, out)."""
        if self.r > min(in_features, out_features):
            return (f"{self.summary.split(':')[0]} needs r <= min(in_features, out_features) = "
                    f"{min(in_features, out_features)}, got r={self.r}")
        return None

    def peft_config(self, task_type: Optional[str], **extra: Any) -> Any:
        return super().peft_config(task_type, init_lora_weights=self.init_lora_weights(), **extra)

    def wrap(self, model: nn.Module, task_type: Optional[str]) -> nn.Module:
        """Keep A0, B0 for the conversion on save, and record init_lora_weights=True so that loading
        never decomposes a residual again."""
        from peft import get_peft_model_state_dict

        model = super().wrap(model, task_type)
        self._initial = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items() if "lora_" in k}
        # getattr: a PeftModel's attribute, which nn.Module types as Tensor | Module
        for config in getattr(model, "peft_config").values():
            config.init_lora_weights = True
        return model

    def save(self, model: nn.Module, directory: Path) -> None:
        getattr(model, "save_pretrained")(directory)  # a PeftModel's (see wrap)
        _save_as_plain_lora(self._initial, Path(directory))


@register
class Pissa(_FromDecomposition):
    """PiSSA: LoRA initialised from the top-r singular vectors of each weight."""

    name: ClassVar[str] = "pissa"
    summary: ClassVar[str] = "PiSSA: A, B from the top-r SVD of W, residual W kept frozen (PEFT init_lora_weights='pissa')"

    pissa_niter: Optional[int] = Field(None, ge=0)
    """null: exact SVD of each target weight; n: randomized SVD with n subspace iterations (PEFT
    'pissa_niter_n'), much faster on large weights."""

    def init_lora_weights(self) -> str:
        return "pissa" if self.pissa_niter is None else f"pissa_niter_{self.pissa_niter}"


@register
class Olora(_FromDecomposition):
    """OLoRA: LoRA initialised from the QR decomposition of each weight."""

    name: ClassVar[str] = "olora"
    summary: ClassVar[str] = "OLoRA: A, B from the QR decomposition of W, residual W kept frozen (PEFT init_lora_weights='olora')"

    def init_lora_weights(self) -> str:
        return "olora"


@register
class LoraPlus(Lora):
    """LoRA+: LoRA with B trained at a higher learning rate."""

    name: ClassVar[str] = "loraplus"
    summary: ClassVar[str] = "LoRA+: LoRA with B trained at lr * loraplus_lr_ratio (PEFT create_loraplus_optimizer groups)"

    loraplus_lr_ratio: float = Field(16.0, gt=0)
    """Learning-rate ratio lr_B / lr_A (LoRA+ paper: 2^4 = 16)."""

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        """PEFT's own LoRA+ grouping (create_loraplus_optimizer), captured as torch param groups.

        PEFT applies ``loraplus_weight_decay`` (default 0) to every group and ignores the optimizer's
        weight_decay, so the suite's weight_decay is passed as loraplus_weight_decay.
        """
        from peft.optimizers import create_loraplus_optimizer

        class _CaptureGroups:  # stands in for the optimizer class; PEFT only instantiates it
            def __init__(self, groups, **kwargs):
                self.param_groups = groups  # the name torch's Optimizer gives them

        # (ignore) PEFT annotates a PeftModel and an Optimizer class; it only calls named_parameters() and the class
        captured = create_loraplus_optimizer(model, _CaptureGroups, lr=lr, loraplus_lr_ratio=self.loraplus_lr_ratio,  # type: ignore[arg-type]
                                             loraplus_weight_decay=weight_decay)
        return [g for g in captured.param_groups if g["params"]]


def _save_as_plain_lora(initial: dict, directory: Path) -> None:
    """Rewrite a saved PiSSA/OLoRA adapter as the LoRA of its update on the original weights:
    W_res + s B A = W + s (B A - B0 A0) = W + s [B | -B0] [A ; A0], at rank 2r with the same scaling."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

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
