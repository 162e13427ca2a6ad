"""What autograd keeps between forward and backward, per token and decoder layer, for one method.

    python -m disha_bench.running.activation_trace llama2-7b-shape-1l bone '{"r": 64}' --zero-stage 3

Not assumed from a formula: one decoder layer of the model's architecture is built on this CPU from
its configuration (random weights, the training dtype; nothing downloaded or read), the method is
applied as a run applies it, a few tokens go forward, and the tensors held by the backward graph are
summed, once (`torch.autograd` exposes every node's saved tensors; custom functions' through
`saved_tensors`). That covers what a formula would miss: PEFT casting an adapter's input, Bone
keeping only the r-wide sums of its input, Bat rebuilding its input in backward (methods/input_rebuild).

ZeRO-3 changes what is kept, and the trace reproduces both ways it does (measured on an H200, issue
23's GPU check: Bone 1.4 GB above its ZeRO-2 peak at batch 8, LoRA unchanged): DeepSpeed replaces
`torch.nn.functional.linear` by its own autograd function, which saves a frozen layer's input too,
and a partitioned parameter (it carries `ds_id`) cannot serve Bat's input rebuild.

Two lengths and layer counts give the per-token and per-layer terms exactly (what is saved is linear
in tokens for these models: flash / memory-efficient attention keeps no tokens x tokens matrix).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

SHORT, LONG = 8, 16
"""Token counts of the two traced forwards."""
TRACE_VOCAB = 128
"""The traced model's vocabulary: the loss's memory is computed, not traced (memory_model)."""


@dataclass(frozen=True)
class SavedBytes:
    """Bytes autograd keeps for backward."""

    per_token_per_layer: float
    """Per token of the micro-batch and decoder layer."""
    per_token_outside_layers: float
    """Per token, outside the decoder layers at the traced vocabulary (embedding output, final norm)."""


def saved_bytes(config: Any, method, dtype: str, zero_stage: int) -> SavedBytes:
    """Trace `method` (a methods.Method) on `config`'s architecture (a transformers config)."""
    totals = {}
    for layers in (1, 2):
        model = _build(config, method, dtype, layers)
        for tokens in (SHORT, LONG):
            totals[layers, tokens] = _trace(model, zero_stage, tokens)
    layer_short = totals[2, SHORT] - totals[1, SHORT]
    layer_long = totals[2, LONG] - totals[1, LONG]
    per_layer = (layer_long - layer_short) / (LONG - SHORT)
    outside = (totals[1, LONG] - layer_long - (totals[1, SHORT] - layer_short)) / (LONG - SHORT)
    return SavedBytes(per_layer, outside)


def _build(config: Any, method, dtype: str, layers: int):
    import torch
    from transformers import AutoModelForCausalLM

    small = copy.deepcopy(config)
    small.num_hidden_layers, small.vocab_size = layers, TRACE_VOCAB
    torch_dtype = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                   "float16": torch.float16}.get(dtype, torch.float32)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # built in the training dtype: no fp32 copy of a 7B layer
    try:
        model = AutoModelForCausalLM.from_config(small)
    finally:
        torch.set_default_dtype(previous)
    model = method.apply(model).to(torch_dtype)  # DeepSpeed's bf16 casts adapters to the model's dtype too
    model.train()
    return model


def _trace(model, zero_stage: int, tokens: int) -> int:
    import torch

    ids = torch.randint(3, TRACE_VOCAB, (1, tokens))
    with _zero3_semantics(model) if zero_stage == 3 else contextlib.nullcontext():
        loss = model(input_ids=ids, labels=ids).loss
        return graph_saved_bytes(loss.grad_fn, {p.untyped_storage().data_ptr() for p in model.parameters()})


@contextlib.contextmanager
def _zero3_semantics(model):
    """DeepSpeed ZeRO-3's two effects on saved tensors: its linear function, and partitioned frozen
    parameters (marked as DeepSpeed marks them)."""
    import torch
    from deepspeed.runtime.zero.linear import zero3_linear_wrap

    marked = [p for p in model.parameters() if not p.requires_grad and not hasattr(p, "ds_id")]
    for index, p in enumerate(marked):
        p.ds_id = index
    original = torch.nn.functional.linear
    torch.nn.functional.linear = zero3_linear_wrap
    try:
        yield
    finally:
        torch.nn.functional.linear = original
        for p in marked:
            del p.ds_id


def graph_saved_bytes(root, exclude: set[int]) -> int:
    """Bytes of the distinct storages the autograd graph under `root` holds for backward, leaving out
    the storages in `exclude` (the parameters: counted as weights)."""
    storages: dict[int, int] = {}
    stack, visited = [root], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        for tensor in _saved_tensors(node):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in exclude and storage.nbytes():
                storages[storage.data_ptr()] = storage.nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sum(storages.values())


def _saved_tensors(node) -> list:
    import torch

    found = []
    for name in dir(node):
        if not name.startswith("_saved_"):
            continue
        try:
            value = getattr(node, name)
        except RuntimeError:  # freed, or not a tensor attribute
            continue
        values = value if isinstance(value, (tuple, list)) else [value]
        found += [v for v in values if isinstance(v, torch.Tensor)]
    with contextlib.suppress(RuntimeError, AttributeError):
        found += [t for t in node.saved_tensors if isinstance(t, torch.Tensor)]  # custom autograd functions
    return found


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from disha_bench import methods, models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("method")
    parser.add_argument("params", nargs="?", default="{}", help="the method's parameters as JSON")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--zero-stage", type=int, default=2)
    args = parser.parse_args(argv)
    config = models.architecture_config(args.model)
    if config is None:
        raise SystemExit(f"error: the configuration of model '{args.model}' is not known offline")
    saved = saved_bytes(config, methods.parse(args.method, json.loads(args.params)), args.dtype, args.zero_stage)
    print(f"{args.method}: {saved.per_token_per_layer:,.0f} bytes per token and layer")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
