"""Memory-efficient Bat (DiSHA block affine transformation) for PEFT's MiSS layers.

Bat updates every r x r block of a linear weight W (out x in) with the trainable matrix of its row
block a:  W'_{a,b} = W_{a,b} (I + D_a) + D_a,  D of shape (out/r, r, r).

PEFT's forward (``MissLinear.forward`` with ``init_weights="bat"``) clones W, builds W' through
permuted copies and calls ``F.linear``; autograd then keeps the clone and W' of *every* adapted layer
alive until backward. :class:`BatLinearFunction` builds W' transiently with one batched GEMM on a
contiguous view, saves only x, the base weight (a reference to the frozen parameter, no copy) and D,
and rebuilds W' in backward. The extra cost is one ``(out*in*r)`` batched GEMM per step and layer.
Where x is an RMSNorm or SwiGLU product, it keeps the product's operands, which autograd holds anyway,
instead of x and rebuilds x in backward (:mod:`input_rebuild`): Bat then keeps no more activations
than Bone, whose gradient needs only the r-wide sum of x's shards.

Layout trick: for a row block a, ``W.view(out/r, r * in/r, r)[a]`` has rows (i, b) and columns j, so
``W_{a,b} @ D_a`` for all b at once is a plain ``bmm`` and W' comes out contiguous in W's layout.

:class:`EfficientBatLinear` is PEFT's ``MissLinear`` with only ``forward`` replaced (installed by a
class swap on the existing module), so parameter names, ``state_dict``, adapter files, ``merge`` and
``unmerge`` (through PEFT's fp32 inverse) are PEFT's own. Works on any device; under DeepSpeed ZeRO-3
:func:`register_zero3_parameters` makes DeepSpeed gather the base weight for this module's forward
and backward; the weight is read from the module at call time and never cached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from disha_bench.methods import input_rebuild

if TYPE_CHECKING:  # peft is imported on first use (see _efficient_class)
    from peft.tuners.miss.layer import MissLinear

__all__ = ["BatLinearFunction", "bat_weight", "bat_linear", "patch_bat_layers", "register_zero3_parameters", "is_bat_layer"]


def bat_weight(weight: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """W' = W + dW with dW_{a,b} = W_{a,b} D_a + D_a, as a new contiguous (out, in) tensor.

    ``weight`` (out, in) and ``block`` (out/r, r, r) must share a dtype.
    """
    out_f, in_f = weight.shape
    nb, r, _ = block.shape
    wv = weight.reshape(nb, r * (in_f // r), r)  # [a, (i, b), j]
    new = torch.baddbmm(wv, wv, block)  # W + W @ D per block: [a, (i, b), k]
    new.view(nb, r, in_f // r, r).add_(block.unsqueeze(2))  # + D_a broadcast over column blocks b
    return new.view(out_f, in_f)


def _block_grad(weight: torch.Tensor, grad_w: torch.Tensor, nb: int, r: int) -> torch.Tensor:
    """dL/dD from dL/dW' (both (out, in)):  sum_{i,b} W[a,i,b,j] G[a,i,b,k] + sum_b G[a,j,b,k]."""
    in_f = weight.shape[1]
    gv = grad_w.reshape(nb, r * (in_f // r), r)
    wv = weight.reshape(nb, r * (in_f // r), r)
    grad_block = torch.bmm(wv.transpose(1, 2), gv)
    grad_block += grad_w.reshape(nb, r, in_f // r, r).sum(dim=2)
    return grad_block


class BatLinearFunction(torch.autograd.Function):
    """y = x W'^T + bias with W' = bat_weight(W, D), recomputing W' in backward.

    ``dtype`` is the compute dtype (PEFT's: the promotion of W's and D's dtypes); x, W and D are cast
    to it transiently, in forward and again in backward, so a bf16 model with an fp32 adapter keeps no
    fp32 copy of x or W alive. Saved for backward: x (or, when x is a product of tensors autograd keeps
    anyway, those tensors, see :mod:`input_rebuild`), W (the frozen parameter itself) and D; nothing
    of size out x in stays alive between forward and backward.
    """

    @staticmethod
    def forward(ctx, x, weight, block, bias, dtype=None):
        dtype = dtype or torch.promote_types(weight.dtype, block.dtype)
        new_w = bat_weight(weight.to(dtype), block.to(dtype))
        y = F.linear(x.to(dtype), new_w, None if bias is None else bias.to(dtype))
        del new_w
        # x is needed only for dL/dD and dL/dW; when it is a product of tensors autograd keeps anyway
        # (RMSNorm, SwiGLU), keep those and rebuild x in backward instead (see input_rebuild)
        needs_x = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        found = input_rebuild.plan(x) if needs_x else None
        ctx.x_recipe, x_sources = found if found is not None else (None, [x] if needs_x else [])
        ctx.save_for_backward(*x_sources, weight, block)
        ctx.has_bias = bias is not None
        ctx.dtype = dtype
        ctx.x_dtype = x.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        *x_sources, weight, block = ctx.saved_tensors
        need_x, need_w, need_d, need_b = ctx.needs_input_grad[:4]
        dtype = ctx.dtype
        nb, r, _ = block.shape
        w = weight.to(dtype)
        d = block.to(dtype)
        grad_y = grad_y.to(dtype)
        grad_x = grad_w = grad_d = grad_b = None
        if need_x:
            grad_x = (grad_y @ bat_weight(w, d)).to(ctx.x_dtype)  # W' rebuilt, freed right after
        if need_w or need_d:
            x = input_rebuild.rebuild(ctx.x_recipe, x_sources) if ctx.x_recipe is not None else x_sources[0]
            gy2 = grad_y.reshape(-1, grad_y.shape[-1])
            x2 = x.reshape(-1, x.shape[-1]).to(dtype)
            del x
            grad_full = gy2.t() @ x2  # dL/dW' (out, in): the weight-gradient GEMM Bat cannot avoid
            del x2
            if need_d:
                grad_d = _block_grad(w, grad_full, nb, r).to(block.dtype)
            if need_w:  # dL/dW = G_{a,b} (I + D_a)^T; only when the base weight is trainable
                gv = grad_full.view(nb, -1, r)
                grad_w = torch.baddbmm(gv, gv, d.transpose(1, 2)).view(weight.shape).to(weight.dtype)
            del grad_full
        if ctx.has_bias and need_b:
            grad_b = grad_y.reshape(-1, grad_y.shape[-1]).sum(0)
        return grad_x, grad_w, grad_d, grad_b, None


def bat_linear(x, weight, block, bias=None, dtype=None):
    """Functional memory-efficient Bat linear (see :class:`BatLinearFunction`)."""
    return BatLinearFunction.apply(x, weight, block, bias, dtype)


def _miss_linear_cls():
    from peft.tuners.miss.layer import MissLinear

    return MissLinear


def is_bat_layer(module: nn.Module) -> TypeGuard[MissLinear]:
    """A PEFT MiSS linear layer in Bat mode (``init_weights="bat"``)."""
    try:
        miss_linear = _miss_linear_cls()
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, miss_linear) and getattr(module, "miss_fn", None) == "bat"


_EFFICIENT_CLASS: type | None = None


def _efficient_class() -> type:
    """EfficientBatLinear is created lazily so importing this module does not import peft."""
    global _EFFICIENT_CLASS
    if _EFFICIENT_CLASS is not None:
        return _EFFICIENT_CLASS
    from peft.tuners.miss.layer import MissLinear

    class EfficientBatLinear(MissLinear):
        """PEFT's Bat ``MissLinear`` with a recomputing forward; everything else is PEFT's."""

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            active = [a for a in self.active_adapters if a in self.miss_block.keys()]
            quant = getattr(self, "quantization_backend", None)
            if (
                self.disable_adapters
                or self.merged
                or len(active) != 1
                or quant is not None
                or not self.cast_input_dtype_enabled
            ):
                # disabled / merged / stacked adapters / quantized base / no input cast: PEFT's own path
                return super().forward(x, *args, **kwargs)
            weight = self.get_base_weight()  # read now: under ZeRO-3 it is the gathered weight
            block = self.miss_block[active[0]]
            dtype = torch.promote_types(weight.dtype, block.dtype)  # PEFT computes W' in this dtype
            result = BatLinearFunction.apply(x, weight, block, self.base_layer.bias, dtype)
            return result.to(x.dtype)

    _EFFICIENT_CLASS = EfficientBatLinear
    return EfficientBatLinear


def __getattr__(name: str):  # module attribute EfficientBatLinear, created on first use
    if name == "EfficientBatLinear":
        return _efficient_class()
    raise AttributeError(name)


def patch_bat_layers(model: nn.Module) -> int:
    """Switch every PEFT Bat layer in ``model`` to the efficient forward, in place.

    Idempotent; returns the number of Bat layers now using the efficient kernel. Call it again after
    ``PeftModel.from_pretrained`` to use the efficient kernel on a reloaded Bat adapter.
    """
    cls = _efficient_class()
    n = 0
    for module in model.modules():
        if is_bat_layer(module):
            if type(module) is not cls:
                module.__class__ = cls
            n += 1
    return n


def register_zero3_parameters(model: nn.Module) -> int:
    """DeepSpeed ZeRO-3: gather what a Bat layer's forward reads from its child modules (the base
    weight and bias, whose own forward never runs, and D) for that forward and its backward.

    Call right after ``deepspeed.initialize``; both kernels need it. Returns the number of layers.
    (Marking the layer a ZeRO-3 leaf module instead gathers the forward but breaks the gradient
    accumulation of D in backward: DeepSpeed 0.19 leaves an empty .grad placeholder on it.)
    """
    import deepspeed

    n = 0
    for module in model.modules():
        if is_bat_layer(module):
            base = module.base_layer
            for param in (base.weight, base.bias, *module.miss_block.parameters()):
                if param is not None:
                    deepspeed.zero.register_external_parameter(module, param)
            n += 1
    return n


def unpatch_bat_layers(model: nn.Module) -> int:
    """Back to PEFT's own Bat forward (the reference kernel). Returns the number of layers switched."""
    cls = _efficient_class()
    n = 0
    for module in model.modules():
        if type(module) is cls:
            module.__class__ = _miss_linear_cls()
            n += 1
    return n
