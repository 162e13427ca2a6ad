"""The method contract: `Method`, its registry, and the model-side helpers every method shares.

    disha-bench list methods

A fine-tuning method is one `Method` subclass in a file of its own under `disha_bench/methods/`
(the package imports every module in it, so a new file is all a new method needs). The subclass is
both the method's typed parameters (pydantic fields with a docstring each, validated once from the
suite) and the object passed along afterwards: it builds its PEFT config, counts its trainable
parameters per adapted module, checks a module's shape, knows its update's scaling, and has hooks
for what happens after wrapping, under ZeRO-3, in the optimizer and on save / load.

A method PEFT implements overrides `peft_config` (and `module_count`); one PEFT does not implement
overrides `wrap` (replace or patch the model's modules and freeze the rest), `save` and `load`
instead: nothing outside its file changes (`full.py` is the smallest example of that path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
from pydantic import Field
from torch import nn

from disha_bench.core.errors import UserError
from disha_bench.core.registry import Registry
from disha_bench.core.schema import StrictModel, join_key
from disha_bench.methods.params import Label, TargetModules


class Method(StrictModel):
    """A fine-tuning method with no parameters; the base of every method."""

    name: ClassVar[str] = ""
    """Registry name (what a suite's `methods[].name` says)."""
    summary: ClassVar[str] = ""
    """One line for `disha-bench list methods`."""
    rank_field: ClassVar[Optional[str]] = None
    """The parameter that `match_params` chooses; None: the method has no rank."""
    modifies_base_weights: ClassVar[bool] = False
    """The initialisation rewrites the frozen weights (PiSSA, OLoRA): checkpoints keep them too."""

    # ---- what the method is, from its parameters alone -------------------------------------------

    def module_count(self, in_features: int, out_features: int) -> int:
        """Trainable parameters the method adds to one adapted linear module."""
        raise NotImplementedError(f"method '{self.name}' defines no module_count")

    def check_module(self, in_features: int, out_features: int) -> Optional[str]:
        """None, or why a module of this shape cannot be adapted."""
        return None

    def scaling(self) -> Optional[float]:
        """The factor the update is scaled by (LoRA family), None where there is none."""
        return None

    def resolved(self) -> "Method":
        """These parameters with everything that depends on the rank made concrete (a relative
        LoRA alpha `2r` becomes a number), once the rank is known."""
        return self

    def with_rank(self, value: int) -> "Method":
        """A copy with the rank that parameter matching chose (match_params cleared)."""
        assert self.rank_field is not None, self.name
        return self.model_copy(update={self.rank_field: value, "match_params": None}).resolved()

    def as_dict(self) -> dict[str, Any]:
        """The parameters as recorded in a result (defaults filled in)."""
        return self.model_dump()

    def settings(self, *, lr: float | None = None, trainable: int | None = None) -> dict[str, Any]:
        """What a run trained with: rank, numeric alpha, the update's scaling, lr, trainable count."""
        values = self.as_dict()
        return {"method": self.name, "r": values.get("r"), "alpha": values.get("alpha"), "scaling": self.scaling(),
                "lr": lr, "trainable_params": trainable}

    # ---- on a model --------------------------------------------------------------------------------

    def targets(self, model: nn.Module) -> list[tuple[str, int, int]]:
        """[(module path, in_features, out_features)] that `apply` adapts."""
        return resolve_targets(model, getattr(self, "target_modules", "all-linear"))

    def expected_trainable(self, model: nn.Module) -> int:
        """Analytic trainable count on `model`, from module shapes alone (no adapter is built)."""
        return sum(self.module_count(i, o) for _, i, o in self.targets(model)) + head_param_count(model)

    def apply(self, model: nn.Module, *, file: str | None = None, key: str | None = None) -> nn.Module:
        """Check every target module's shape, then wrap the model. A sequence-classification model's
        'classifier'/'score' head trains fully (PEFT modules_to_save). ``file``/``key`` locate errors."""
        if getattr(self, "match_params", None) is not None:
            raise UserError(f"method '{self.name}': 'match_params: {self.match_params}' must be resolved "  # type: ignore[attr-defined]
                            "(resolve_matching) before apply", file=file, key=join_key(key, "match_params"))
        kind = task_type(model)
        if kind == "SEQ_CLS" and not head_modules(model):
            raise UserError(f"{type(model).__name__} has no 'classifier' or 'score' head to train with the adapter",
                            file=file, key=key)
        self.check_shapes(model, file=file, key=key)
        return self.wrap(model, kind)

    def check_shapes(self, model: nn.Module, *, file: str | None = None, key: str | None = None) -> None:
        """UserError when a target module's shape does not suit the method (a meta-device model will
        do: only shapes are read); the first thing `apply` does."""
        targets = self.targets(model)
        if not targets:
            linear = sorted({p.rsplit(".", 1)[-1] for p, *_ in resolve_targets(model, "all-linear")})
            raise UserError(f"target_modules {getattr(self, 'target_modules', None)!r} match no linear module of "
                            f"{type(model).__name__}; its linear modules: {', '.join(linear)}",
                            file=file, key=join_key(key, "target_modules"))
        bad = [(path, i, o, why) for path, i, o in targets if (why := self.check_module(i, o))]
        if bad:
            path, i, o, why = bad[0]
            more = f" (and {len(bad) - 1} more target modules)" if len(bad) > 1 else ""
            raise UserError(f"method '{self.name}' cannot adapt module '{path}' with weight shape ({o}, {i}) "
                            f"(in_features={i}, out_features={o}): {why}{more}",
                            file=file, key=join_key(key, self.rank_field or "target_modules"))

    def peft_config(self, task_type: Optional[str]) -> Any:
        """The PEFT config of a method PEFT implements."""
        raise NotImplementedError(f"method '{self.name}' implements neither peft_config nor wrap")

    def wrap(self, model: nn.Module, task_type: Optional[str]) -> nn.Module:
        """The adapted model with only the method's parameters trainable (PEFT's get_peft_model by
        default; a method PEFT does not have overrides this, `save` and `load`)."""
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(task_type))

    def after_zero3_init(self, model: nn.Module) -> None:
        """What the method needs once DeepSpeed ZeRO-3 has partitioned the model."""

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        """torch optimizer groups: weight decay on trainable matrices; none on biases, norms and
        other vectors (e.g. DoRA's magnitude). Only trainable parameters appear."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for pname, p in model.named_parameters():
            if not p.requires_grad:
                continue
            is_vector = len(getattr(p, "ds_shape", None) or p.shape) < 2  # ds_shape: full shape under ZeRO-3
            (no_decay if is_vector or "bias" in pname or "norm" in pname.lower() else decay).append(p)
        groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
                  {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    def save(self, model: nn.Module, directory: Path) -> None:
        """Write what was trained so that `load` puts it on the original checkpoint."""
        getattr(model, "save_pretrained")(directory)  # a PeftModel's; nn.Module types unknown attributes as Tensor | Module

    def load(self, base: nn.Module, directory: Path) -> nn.Module:
        """What `save` wrote, on the `base` model it was trained from."""
        from peft import PeftModel

        return PeftModel.from_pretrained(base, directory)


class RankedMethod(Method):
    """Parameters every method with a rank has. Subclasses redeclare `r` with their default."""

    rank_field: ClassVar[Optional[str]] = "r"

    r: int = Field(8, gt=0)
    """Rank; chosen by `match_params` when that is set."""
    target_modules: TargetModules = "all-linear"
    """Modules to adapt: 'all-linear' (every linear layer except the output / classification head), a
    module-name suffix such as 'q_proj', or a list of them."""
    match_params: Optional[Label] = None
    """Label of another method in the suite: choose `r` so that this method's trainable count is
    closest to that method's on the same model and target modules (then `r` must not be given)."""

    def peft_targets(self) -> str | list[str]:
        return peft_target_modules(self.target_modules)


REGISTRY: Registry[type[Method]] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` available under `cls.name`."""
    REGISTRY.register(cls.name, cls)
    return cls


# ---- model-side helpers ------------------------------------------------------------------------

HEAD_NAMES = ("classifier", "score")


def task_type(model: nn.Module) -> Optional[str]:
    """SEQ_CLS for *ForSequenceClassification models, CAUSAL_LM for other transformers models, None for a
    plain torch module (a bare layer or block, as in the layer benchmarks: PEFT's generic PeftModel)."""
    if type(model).__name__.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    from transformers import PreTrainedModel

    return "CAUSAL_LM" if isinstance(model, PreTrainedModel) else None


def head_modules(model: nn.Module) -> list[str]:
    """The classification head(s) that must train with the adapter (PEFT modules_to_save)."""
    if task_type(model) != "SEQ_CLS":
        return []
    return [n for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)]


def _in_out(module: nn.Module) -> Optional[tuple[int, int]]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    from transformers.pytorch_utils import Conv1D

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
    cfg = _maybe_include_all_linear_layers(LoraConfig(target_modules=peft_target_modules(target_modules),
                                                      modules_to_save=heads or None, task_type=task_type(model)), model)
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
