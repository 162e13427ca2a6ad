"""Rebuild a layer's input in backward from tensors that autograd keeps anyway, instead of saving it.

Bat's gradient dL/dD needs the adapted layer's whole input x in backward (dL/dW' = g^T x; Bone needs
only the sum of x's r-wide shards), so saving x costs one (tokens x in_features) tensor per layer
that Bone never keeps. In a Llama block those inputs are elementwise products whose operands autograd
already saves for the products' own backward:

    q/k/v, gate/up input   RMSNorm output   weight * (h * rsqrt(mean(h^2) + eps)).to(dtype)
    down_proj input        SwiGLU           act(gate) * up

The products' backward runs after the layer's, so holding the operands does not lengthen their
life, and the product recomputed in backward is x bit for bit (an elementwise product is
deterministic). Under DeepSpeed ZeRO-3 every module's inputs and outputs pass through identity
autograd functions (``ALIAS_NODES``) that the walk looks through.

:func:`plan` finds such a recipe when there is one. Anything else gives ``None`` and the caller saves
x itself: a view, an activation, no graph, saved-tensor hooks (activation checkpointing, CPU
offload), or a ZeRO-3 parameter operand (released between forward and backward).

Operands are read from the autograd node's ``_saved_self`` / ``_saved_other`` attributes, the saved
tensors PyTorch exposes on every ``grad_fn`` (autograd notes, "Saved tensors"); a cast's dtype from
the node's ``_input_metadata``. Should a PyTorch release drop either, ``plan`` returns ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch

__all__ = ["Cast", "Product", "Recipe", "plan", "rebuild"]

MAX_DEPTH = 3  # a bf16 RMSNorm output is product(weight, cast(product(h, rsqrt))); deeper is not worth it


# DeepSpeed ZeRO-3 wraps every module's inputs and outputs in these autograd functions to gather
# parameters in backward; their forward returns ``tensor.detach()``, an alias with the same values
ALIAS_NODES = frozenset({"PreBackwardFunctionForModuleBackward", "PostBackwardFunctionModuleBackward"})


@dataclass(frozen=True)
class Product:
    """``left * right``; an int is an index into the saved operand list, anything else is rebuilt first."""

    left: "Recipe"
    right: "Recipe"


@dataclass(frozen=True)
class Cast:
    """``source.to(dtype)`` on the same device (the dtype casts inside a bf16 RMSNorm)."""

    source: "Recipe"
    dtype: torch.dtype


Recipe = Union[int, Product, Cast]


def _saved_tensor_hooks_active() -> bool:
    """Saved-tensor hooks (checkpointing, offload) pack what we would read: do not plan under them."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    if top is None:  # an older or newer PyTorch without the query: assume hooks, keep x
        return True
    return top(False) is not None


def _recomputable(t: torch.Tensor) -> bool:
    # ZeRO-3 empties a parameter's storage right after its module's forward (DeepSpeed 0.19 does so
    # even for the small ones it marks ds_persist, at least while it traces the first steps)
    return t.dim() > 0 and not hasattr(t, "ds_id")


def _plan_node(node, operands: list, depth: int) -> Optional[Recipe]:
    if node is None or depth >= MAX_DEPTH:
        return None
    kind = type(node).__name__
    if kind in ALIAS_NODES and len(node.next_functions) == 1:
        return _plan_node(node.next_functions[0][0], operands, depth)
    if kind == "ToCopyBackward0":  # its input metadata describes the forward output: the cast's dtype
        source = _plan_node(node.next_functions[0][0], operands, depth + 1)
        return None if source is None else Cast(source, node._input_metadata[0].dtype)
    if kind != "MulBackward0":
        return None
    parts: list[Recipe] = []
    for attr, (producer, _) in zip(("_saved_self", "_saved_other"), node.next_functions):
        saved = getattr(node, attr, None)  # None when autograd did not need to save this operand
        if isinstance(saved, torch.Tensor):
            if not _recomputable(saved):
                return None
            operands.append(saved)
            parts.append(len(operands) - 1)
        else:
            sub = _plan_node(producer, operands, depth + 1)
            if sub is None:
                return None
            parts.append(sub)
    return Product(*parts)


def rebuild(recipe: Recipe, operands) -> torch.Tensor:
    """Evaluate ``recipe`` on ``operands`` (the list :func:`plan` returned, as saved for backward)."""
    if isinstance(recipe, int):
        return operands[recipe]
    if isinstance(recipe, Cast):
        return rebuild(recipe.source, operands).to(recipe.dtype)
    return torch.mul(rebuild(recipe.left, operands), rebuild(recipe.right, operands))


def _result_meta(recipe: Recipe, operands) -> tuple:
    """(shape, dtype, device) that :func:`rebuild` would give, without computing anything."""
    if isinstance(recipe, int):
        t = operands[recipe]
        return tuple(t.shape), t.dtype, t.device
    if isinstance(recipe, Cast):
        shape, _, device = _result_meta(recipe.source, operands)
        return shape, recipe.dtype, device
    (ls, ld, ldev), (rs, rd, rdev) = _result_meta(recipe.left, operands), _result_meta(recipe.right, operands)
    if ldev != rdev:
        raise ValueError("operands on different devices")
    return tuple(torch.broadcast_shapes(ls, rs)), torch.promote_types(ld, rd), ldev


def plan(x: torch.Tensor) -> Optional[tuple[Recipe, list[torch.Tensor]]]:
    """A recipe that rebuilds ``x`` from tensors autograd already saved, and those tensors; or None."""
    if not torch.is_tensor(x) or x.grad_fn is None or _saved_tensor_hooks_active():
        return None
    operands: list[torch.Tensor] = []
    try:
        recipe = _plan_node(x.grad_fn, operands, 0)
        if recipe is None or any(t.data_ptr() == x.data_ptr() for t in operands):
            return None  # no recipe, or x was updated in place over an operand
        if _result_meta(recipe, operands) != (tuple(x.shape), x.dtype, x.device):
            return None
    except (RuntimeError, ValueError, AttributeError, IndexError):  # freed saved variable, bad shapes, API drift
        return None
    return recipe, operands
