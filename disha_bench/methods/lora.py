"""The LoRA family: lora, rslora, dora, pissa, olora, loraplus (all PEFT ``LoraConfig``).

Trainable parameters per adapted linear layer (in -> out): r * (in + out); DoRA adds the magnitude
vector (out). PiSSA and OLoRA initialise A and B from the base weight (SVD / QR) and subtract
scaling * B @ A from it, so the saved adapter belongs to that residual base (``modifies_base_weights``;
the adapter config is switched to init_lora_weights=True after the init so that reloading does not
decompose the residual again).
LoRA+ is LoRA with B trained at ``lr * loraplus_lr_ratio`` (PEFT's ``create_loraplus_optimizer`` groups).
"""

from __future__ import annotations

from typing import Optional

from disha_bench.methods.base import TARGET_MODULES, MethodSpec, ParamSpec, peft_target_modules, rank_param, register

ALPHA = ParamSpec(
    "alpha",
    "float",
    None,
    "LoRA alpha (PEFT lora_alpha); the update is scaled by alpha/r (alpha/sqrt(r) for rslora). "
    "null: alpha = r, i.e. scaling 1 for every r (also after 'match_params' picks r)",
    positive=True,
    nullable=True,
)
DROPOUT = ParamSpec("dropout", "float", 0.0, "dropout on the adapter's input (PEFT lora_dropout)", minimum=0.0, below=1.0)
PISSA_NITER = ParamSpec(
    "pissa_niter",
    "int",
    None,
    "null: exact SVD of each target weight; n: randomized SVD with n subspace iterations (PEFT 'pissa_niter_n'), "
    "much faster on large weights",
    minimum=0,
    nullable=True,
)
LORAPLUS_RATIO = ParamSpec(
    "loraplus_lr_ratio",
    "float",
    16.0,
    "learning-rate ratio lr_B / lr_A (LoRA+ paper: 2^4 = 16)",
    positive=True,
)

COMMON = (rank_param(8, "LoRA rank"), ALPHA, DROPOUT, TARGET_MODULES)


def _config(init="default", rslora=False, dora=False):
    def build(params: dict, task_type: str):
        from peft import LoraConfig

        r = params["r"]
        alpha = params["alpha"] if params["alpha"] is not None else r
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


def _mark_initialised(model, params: dict) -> None:
    """PiSSA/OLoRA have rewritten the base weights; record init_lora_weights=True in the adapter config.

    Otherwise the saved adapter_config.json says "pissa"/"olora" and PeftModel.from_pretrained runs the
    decomposition again on the already-residual base (PEFT's own PiSSA example does the same switch).
    The saved adapter then loads onto the residual base; to obtain a plain LoRA for the original base,
    save an initial adapter right after apply and pass it as path_initial_model_for_weight_conversion.
    """
    for config in model.peft_config.values():
        config.init_lora_weights = True


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


def _spec(name, summary, extra=(), init="default", rslora=False, dora=False, **kw) -> MethodSpec:
    spec = MethodSpec(
        name=name,
        summary=summary,
        params=COMMON + tuple(extra),
        build_config=_config(init, rslora, dora),
        module_count=_dora_count if dora else _lora_count,
        **kw,
    )
    return register(spec)


_spec("lora", "LoRA: W + (alpha/r) B A, A Kaiming, B zero")
_spec("rslora", "rank-stabilised LoRA: scaling alpha/sqrt(r) (PEFT use_rslora)", rslora=True)
_spec("dora", "DoRA: LoRA on the direction plus a trainable magnitude per output (PEFT use_dora)", dora=True)
_spec(
    "pissa",
    "PiSSA: A, B from the top-r SVD of W, residual W kept frozen (PEFT init_lora_weights='pissa')",
    extra=(PISSA_NITER,),
    init="pissa",
    check_module=_decomposition_check("PiSSA"),
    after_apply=_mark_initialised,
    modifies_base_weights=True,
)
_spec(
    "olora",
    "OLoRA: A, B from the QR decomposition of W, residual W kept frozen (PEFT init_lora_weights='olora')",
    init="olora",
    check_module=_decomposition_check("OLoRA"),
    after_apply=_mark_initialised,
    modifies_base_weights=True,
)
_spec(
    "loraplus",
    "LoRA+: LoRA with B trained at lr * loraplus_lr_ratio (PEFT create_loraplus_optimizer groups)",
    extra=(LORAPLUS_RATIO,),
    param_groups=_loraplus_groups,
)
