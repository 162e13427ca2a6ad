"""Bat's input rebuilt in backward (disha_bench.methods.input_rebuild) instead of saved.

The recipe must reproduce x bit for bit, be found for the RMSNorm and SwiGLU products of a Llama
block (fp32 and bf16), and be refused wherever reading autograd's saved tensors is not safe; Bat on
a tiny Llama must still match PEFT's Bat to 1e-5 and keep no more activation storage than Bone.
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)

from disha_bench import methods
from disha_bench.methods import input_rebuild
from disha_bench.methods.input_rebuild import Cast, Product
from disha_bench.running.activation_trace import graph_saved_bytes

LAYERS = 2


def rms_norm_output(dtype, weight_grad=False):
    """transformers' LlamaRMSNorm on a residual stream that requires grad."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    norm = LlamaRMSNorm(16).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    norm.weight.requires_grad_(weight_grad)
    h = torch.randn(2, 5, 16, dtype=dtype, requires_grad=True)
    return norm(h * 1.0)


# ---------------------------------------------------------------------------------------------
# recipes


def test_product_is_rebuilt_bit_for_bit():
    a = torch.randn(3, 7, requires_grad=True)
    b = torch.randn(3, 7, requires_grad=True)
    x = torch.nn.functional.silu(a) * b  # SwiGLU
    recipe, operands = input_rebuild.plan(x)
    assert recipe == Product(0, 1) and len(operands) == 2
    assert torch.equal(input_rebuild.rebuild(recipe, operands), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_output_is_rebuilt_bit_for_bit(dtype):
    x = rms_norm_output(dtype)
    recipe, operands = input_rebuild.plan(x)
    if dtype == torch.float32:  # the casts in LlamaRMSNorm are no-ops
        assert recipe == Product(0, Product(1, 2))
    else:
        assert recipe == Product(0, Cast(Product(1, 2), torch.bfloat16))
    assert not any(t.data_ptr() == x.data_ptr() for t in operands)
    rebuilt = input_rebuild.rebuild(recipe, operands)
    assert rebuilt.dtype == x.dtype and torch.equal(rebuilt, x)


def test_no_recipe_where_x_is_not_a_product_of_saved_tensors():
    a = torch.randn(4, 6, requires_grad=True)
    b = torch.randn(4, 6, requires_grad=True)
    assert input_rebuild.plan(a) is None  # a leaf
    assert input_rebuild.plan((a * b).view(6, 4)) is None  # a view of a product
    assert input_rebuild.plan(torch.nn.functional.gelu(a)) is None  # an activation
    assert input_rebuild.plan(a * 2.0) is None  # a product with a Python number
    assert input_rebuild.plan(a.detach() * b.detach()) is None  # no graph
    assert input_rebuild.plan(a * torch.tensor(3.0)) is None  # a 0-dim operand
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):  # checkpointing, offload
        assert input_rebuild.plan(a * b) is None


def test_no_recipe_with_a_zero3_parameter_operand():
    """ZeRO-3 empties a partitioned parameter's storage between forward and backward."""
    x = rms_norm_output(torch.float32)
    weight = x.grad_fn._saved_self
    assert input_rebuild.plan(x) is not None
    weight.ds_id = 0  # what DeepSpeed sets on every ZeRO-3 parameter
    try:
        assert input_rebuild.plan(x) is None
    finally:
        del weight.ds_id


def test_operand_changed_in_place_fails_loudly():
    """An operand overwritten between forward and backward is an error, never a wrong gradient."""
    from disha_bench.methods.bat_kernel import bat_linear

    a = torch.randn(4, 16, requires_grad=True)
    b = torch.randn(4, 16, requires_grad=True)
    w = torch.randn(8, 16)
    d = (0.1 * torch.randn(2, 4, 4)).requires_grad_()
    prod = a * b
    y = bat_linear(prod, w, d)
    assert y.grad_fn.x_recipe is not None
    with torch.no_grad():
        prod.grad_fn._saved_other.add_(1.0)  # b itself
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# ---------------------------------------------------------------------------------------------
# Bat on a tiny Llama


def tiny_llama(dtype=torch.float32, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=128, max_position_embeddings=64)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).to(dtype)


def bat_llama(kernel, dtype=torch.float32, checkpointing=False):
    model = methods.apply(tiny_llama(dtype), "bat", r=16, kernel=kernel)
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "miss_block" in name:
                p.copy_(0.05 * torch.randn_like(p))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model.train()


def walk(loss):
    """Every autograd node of the graph behind ``loss``."""
    stack, seen = [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(fn for fn, _ in node.next_functions)


def saved_activation_bytes(model, loss) -> int:
    """Bytes of distinct storages kept for backward, parameters excluded."""
    return graph_saved_bytes(loss.grad_fn, {p.untyped_storage().data_ptr() for p in model.parameters()})


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    recipes = [node.x_recipe for node in walk(loss) if type(node).__name__ == "BatLinearFunctionBackward"]
    loss.backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach().float(), grads, recipes


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "grad-checkpointing"])
def test_llama_bat_matches_peft_with_rebuilt_inputs(checkpointing):
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    l_ref, g_ref, _ = loss_and_grads(bat_llama("peft"), ids)
    l_eff, g_eff, recipes = loss_and_grads(bat_llama("efficient", checkpointing=checkpointing), ids)
    torch.testing.assert_close(l_eff, l_ref, rtol=1e-5, atol=1e-5)
    assert g_ref.keys() == g_eff.keys() and len(g_ref) == 7 * LAYERS
    for k in g_ref:
        assert g_ref[k].abs().max() > 0, k
        torch.testing.assert_close(g_eff[k], g_ref[k], rtol=1e-5, atol=1e-5, msg=k)
    rebuilt = sum(r is not None for r in recipes)
    assert len(recipes) == 7 * LAYERS
    if checkpointing:  # saved-tensor hooks: every layer saves (a checkpointed copy of) x
        assert rebuilt == 0
    else:  # all but layer 0's q/k/v (its input needs no grad) and o_proj (a view of attention's output)
        assert rebuilt == 7 * LAYERS - 3 - LAYERS, recipes


def test_llama_bat_bf16_matches_peft_with_rebuilt_inputs():
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
    l_ref, g_ref, _ = loss_and_grads(bat_llama("peft", torch.bfloat16), ids)
    l_eff, g_eff, recipes = loss_and_grads(bat_llama("efficient", torch.bfloat16), ids)
    assert any(isinstance(r, Product) and isinstance(r.right, Cast) for r in recipes)  # RMSNorm in bf16
    torch.testing.assert_close(l_eff, l_ref, rtol=1e-2, atol=1e-2)
    for k in g_ref:
        scale = g_ref[k].abs().max().clamp_min(1e-6)
        assert ((g_eff[k] - g_ref[k]).abs().max() / scale) < 5e-2, k


def test_bat_keeps_no_more_activations_than_bone():
    """Bone's dL/dD needs only the r-wide shard sum of x; Bat's needs all of x, rebuilt in backward."""
    ids = torch.randint(0, 128, (2, 48), generator=torch.Generator().manual_seed(1))
    kept = {}
    for label, name, params in [("bone", "bone", {"r": 16}), ("bat", "bat", {"r": 16}),
                                ("bat-peft", "bat", {"r": 16, "kernel": "peft"})]:
        model = methods.apply(tiny_llama(), name, **params).train()
        loss = model(input_ids=ids, labels=ids).loss
        kept[label] = saved_activation_bytes(model, loss)
        loss.backward()
    assert kept["bat"] <= kept["bone"] < kept["bat-peft"], kept


ZERO3_SCRIPT = r"""
import os, socket, sys, torch
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
import deepspeed
sys.path.insert(0, sys.argv[1])
from test_input_rebuild import bat_llama, walk
from disha_bench.methods import bat_kernel
config = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}},
          "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(1))
for kernel in ("peft", "efficient"):
    model = bat_llama(kernel)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=config)
    bat_kernel.register_zero3_parameters(engine.module)
    losses = []
    for _ in range(3):
        loss = engine(input_ids=ids, labels=ids).loss
        recipes = [type(n.x_recipe).__name__ for n in walk(loss) if type(n).__name__ == "BatLinearFunctionBackward"]
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    print(kernel, "recipes", recipes.count("Product"), "of", len(recipes), "losses", repr(losses), flush=True)
"""


def test_zero3_rebuilds_swiglu_inputs_and_matches_peft(tmp_path):
    """A real ZeRO-3 engine (1 rank, gloo): its module hooks are looked through, so down_proj's SwiGLU
    input is rebuilt; the RMSNorm outputs are not (their weights are partitioned); the three-step loss
    curve equals PEFT's Bat kernel's."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "zero3_bat.py"
    script.write_text(ZERO3_SCRIPT)
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    proc = subprocess.run([sys.executable, str(script), str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if " recipes " in line}
    assert f"recipes {LAYERS} of {7 * LAYERS}" in lines["efficient"], lines
    assert "recipes 0 of 0" in lines["peft"]  # PEFT's forward: no Bat autograd function at all
    curves = {k: ast.literal_eval(line.split("losses ", 1)[1]) for k, line in lines.items()}
    assert curves["efficient"] == pytest.approx(curves["peft"], rel=1e-5, abs=1e-6)
    assert curves["efficient"][-1] < curves["efficient"][0]
