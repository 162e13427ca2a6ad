"""The methods package: one table-driven battery every method runs through, parity with PEFT's MiSS
layers, parameter matching, optimizer groups and bad input.

Battery, per (method, model) with a tiny random Llama (causal LM) and a tiny random BERT (sequence
classification): builds; the trainable count equals the analytic count and a hand formula; a few
AdamW steps lower the loss; save_pretrained + PeftModel.from_pretrained gives identical outputs;
merge and unmerge are exact (Bat through PEFT's fp32 inverse). ZeRO-3 is covered by the runner tests.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # tiny tensors: one thread is faster and immune to a busy machine

from method_table import ROWS, Shapes

from disha_bench import methods
from disha_bench.core.errors import UserError

# tiny Llama: per layer q 64->64, k/v 64->32, o 64->64, gate/up 64->128, down 128->64
#   sum(in + out) = 1024, sum(out) = 512, 7 modules, 2 layers
LLAMA_SUM_IN_OUT, LLAMA_SUM_OUT, LLAMA_MODULES = 2 * 1024, 2 * 512, 14
# tiny BERT: per layer q/k/v/attn-out 64->64, intermediate 64->128, output 128->64; pooler 64->64;
#   sum(in + out) = 896 and sum(out) = 448 per layer; classifier head 64->2 (130 parameters, trained through modules_to_save)
BERT_SUM_IN_OUT, BERT_SUM_OUT, BERT_MODULES, BERT_HEAD = 2 * 896 + 128, 2 * 448 + 64, 13, 130


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=64,
        attention_bias=True,  # biases in q/k/v/o: Bat and Bone parity "with bias"
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=256,
        max_position_embeddings=64,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(cfg).eval()


MODELS = {"llama": tiny_llama, "bert": tiny_bert}


def batch(kind: str):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (4, 12), generator=g)
    if kind == "llama":
        return {"input_ids": ids, "labels": ids}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 1, 0])}


SHAPES = {"llama": Shapes(LLAMA_SUM_IN_OUT, LLAMA_SUM_OUT, LLAMA_MODULES),
          "bert": Shapes(BERT_SUM_IN_OUT, BERT_SUM_OUT, BERT_MODULES)}
HEADS = {"llama": 0, "bert": BERT_HEAD}
assert {row.method for row in ROWS.values()} == set(methods.names())


def assert_trains(model, groups: list[dict], data: dict, steps: int = 6) -> None:
    """A few AdamW steps on one batch lower the loss."""
    opt = torch.optim.AdamW(groups)
    model.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model(**data).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1e-3, losses


def outputs(model, kind, data):
    with torch.no_grad():
        return model(**{k: v for k, v in data.items() if k != "labels"}).logits


def residual_base(peft_model, kind):
    """A fresh base model holding the (possibly re-initialised) frozen weights of peft_model."""
    base = MODELS[kind]()
    state = {}
    for k, v in peft_model.get_base_model().state_dict().items():
        if any(t in k for t in ("lora_", "miss_", "modules_to_save")):
            continue
        state[k.replace(".base_layer.", ".").replace(".original_module.", ".")] = v
    missing, unexpected = base.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    return base


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("label", list(ROWS))
def test_battery(label, kind, tmp_path):
    from peft import PeftModel

    row = ROWS[label]
    name, params, lr = row.method, row.params, row.lr
    model = MODELS[kind]()
    method = methods.parse(name, params)
    expected = method.expected_trainable(model)
    n_all = methods.count_all(model)
    model = method.apply(model)

    # trainable count: actual == analytic == by hand
    actual = methods.count_trainable(model)
    assert actual == expected
    assert actual == (n_all if row.count is None else row.count(SHAPES[kind], params) + HEADS[kind])
    if name == "bat" and kind == "llama":
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        want = "EfficientBatLinear" if params.get("kernel", "efficient") == "efficient" else "MissLinear"
        assert type(layer).__name__ == want

    # a few AdamW steps on one batch: the loss falls
    data = batch(kind)
    groups = method.param_groups(model, lr=lr, weight_decay=0.0)
    assert sum(p.numel() for g in groups for p in g["params"]) == actual
    assert_trains(model, groups, data)
    model.eval()
    y = outputs(model, kind, data)

    if name == "full":
        model.save_pretrained(tmp_path)
        reloaded = type(model).from_pretrained(tmp_path).eval()
        torch.testing.assert_close(outputs(reloaded, kind, data), y, rtol=0, atol=1e-6)
        return

    # save and reload with plain PEFT: identical outputs
    model.save_pretrained(tmp_path)
    base = residual_base(model, kind) if method.modifies_base_weights else MODELS[kind]()
    reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
    torch.testing.assert_close(outputs(reloaded, kind, data), y, rtol=0, atol=1e-6)
    if name == "bat":
        methods.patch_bat_layers(reloaded)
        torch.testing.assert_close(outputs(reloaded, kind, data), y, rtol=0, atol=1e-6)

    # methods.save: loads onto the original checkpoint (PiSSA/OLoRA converted to a rank-2r LoRA)
    method.save(model, tmp_path / "for-original")
    on_original = PeftModel.from_pretrained(MODELS[kind](), tmp_path / "for-original").eval()
    torch.testing.assert_close(outputs(on_original, kind, data), y, rtol=1e-5, atol=1e-5)

    # merge and unmerge: same outputs, base weights restored (Bat through the fp32 inverse)
    weights = {k: v.clone() for k, v in model.get_base_model().state_dict().items() if "base_layer.weight" in k}
    model.merge_adapter()
    torch.testing.assert_close(outputs(model, kind, data), y, rtol=1e-5, atol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(outputs(model, kind, data), y, rtol=1e-5, atol=1e-5)
    for k, v in model.get_base_model().state_dict().items():
        if k in weights:
            torch.testing.assert_close(v, weights[k], rtol=1e-5, atol=1e-5, msg=k)


# ---------------------------------------------------------------------------------------------
# parity with PEFT's MissConfig layers


def _set_random_blocks(*models, scale=0.05):
    torch.manual_seed(7)
    named = [dict(m.named_parameters()) for m in models]
    with torch.no_grad():
        for k, p in named[0].items():
            if "miss_block" in k:
                p.copy_(scale * torch.randn_like(p))
                for other in named[1:]:
                    other[k].copy_(p)


def _loss_and_grads(model, data):
    model.zero_grad(set_to_none=True)
    loss = model(**data).loss
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "method,params,peft_kwargs",
    [
        ("bone", {"r": 8}, {}),
        ("bone", {"r": 24}, {}),  # 64 % 24 != 0: padded last shard
        ("bone-mini", {"r": 8, "mini_r": 4}, {"init_weights": "mini", "mini_r": 4}),
        ("bat", {"r": 8, "kernel": "peft"}, {"init_weights": "bat"}),
        ("bat", {"r": 8, "kernel": "efficient"}, {"init_weights": "bat"}),
        ("bat", {"r": 16, "kernel": "efficient"}, {"init_weights": "bat"}),
    ],
)
def test_parity_with_peft_missconfig(method, params, peft_kwargs):
    """methods.apply == get_peft_model(MissConfig(...)) directly: loss and every gradient, random non-zero D."""
    from peft import MissConfig, get_peft_model

    ours = methods.apply(tiny_llama(), method, **params)
    theirs = get_peft_model(tiny_llama(), MissConfig(r=params["r"], target_modules="all-linear", **peft_kwargs))
    _set_random_blocks(ours, theirs)
    data = batch("llama")
    ours.train(), theirs.train()
    l1, g1 = _loss_and_grads(theirs, data)
    l2, g2 = _loss_and_grads(ours, data)
    torch.testing.assert_close(l2, l1, rtol=1e-5, atol=1e-5)
    assert g1.keys() == g2.keys()
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-5, atol=1e-5, msg=k)


def test_parity_with_peft_veraconfig():
    """methods.apply("vera") == get_peft_model(VeraConfig(...)) directly: loss and every gradient, with
    non-zero trained vectors (b starts at zero, so the update would otherwise vanish)."""
    from peft import VeraConfig, get_peft_model

    ours = methods.apply(tiny_llama(), "vera", r=16, d_initial=0.2)
    theirs = get_peft_model(tiny_llama(), VeraConfig(r=16, target_modules="all-linear", d_initial=0.2))
    torch.manual_seed(7)
    with torch.no_grad():
        mine = dict(ours.named_parameters())
        for k, p in theirs.named_parameters():
            if "vera_lambda_b" in k:
                p.copy_(0.1 * torch.randn_like(p))
                mine[k].copy_(p)
    data = batch("llama")
    l1, g1 = _loss_and_grads(theirs, data)
    l2, g2 = _loss_and_grads(ours, data)
    assert l1 != _loss_and_grads(tiny_llama(), data)[0]  # the adapter changes the output
    torch.testing.assert_close(l2, l1, rtol=1e-6, atol=1e-6)
    assert g1.keys() == g2.keys() and g1
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-6, atol=1e-6, msg=k)


def test_bone_forward_is_the_shard_sum():
    """Bone: y = W x + b + (sum of the in/r input shards) @ D, checked on one layer against the formula."""
    model = methods.apply(tiny_llama(), "bone", r=16, target_modules=["q_proj"])
    _set_random_blocks(model)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 64)
    d = layer.miss_block["default"]
    want = layer.base_layer(x) + x.reshape(3, 4, 16).sum(1) @ d
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)


def test_bat_parity_bf16():
    from peft import MissConfig, get_peft_model

    ours = methods.apply(tiny_llama().to(torch.bfloat16), "bat", r=8)
    theirs = get_peft_model(tiny_llama().to(torch.bfloat16), MissConfig(r=8, target_modules="all-linear", init_weights="bat"))
    _set_random_blocks(ours, theirs)
    data = batch("llama")
    l1, g1 = _loss_and_grads(theirs, data)
    l2, g2 = _loss_and_grads(ours, data)
    torch.testing.assert_close(l2.float(), l1.float(), rtol=2e-2, atol=2e-2)
    for k in g1:
        rel = (g2[k].float() - g1[k].float()).abs().max() / g1[k].float().abs().max().clamp_min(1e-8)
        assert rel < 5e-2, (k, rel)


# ---------------------------------------------------------------------------------------------
# matching, optimizer groups, describe


def match(model, suite: dict, key=None) -> dict:
    """resolve_matching over a table of (method name, params) as a suite writes them."""
    return methods.resolve_matching(model, {label: methods.parse(*entry) for label, entry in suite.items()}, key=key)


def test_resolve_matching_tiny_llama():
    suite = {
        "bone": ("bone", {"r": 8}),
        "lora-m": ("lora", {"match_params": "bone"}),
        "bat-m": ("bat", {"match_params": "lora-m"}),  # chains resolve in order
        "dora": ("dora", {"r": 2}),
    }
    out = match(tiny_llama(), suite)
    assert set(out) == {"lora-m", "bat-m"}
    assert out["lora-m"]["param"] == "r" and out["lora-m"]["value"] == 4  # 8 * 1024 = 4 * 2048
    assert out["lora-m"]["count"] == out["lora-m"]["target_count"] == 8192
    assert out["lora-m"]["method"].match_params is None and out["lora-m"]["method"].r == 4
    assert out["bat-m"]["value"] == 8 and out["bat-m"]["target"] == "lora-m"
    # the chosen r really gives that count
    model = out["lora-m"]["method"].apply(tiny_llama())
    assert methods.count_trainable(model) == out["lora-m"]["count"]


def test_relative_alpha_follows_the_matched_rank():
    """`alpha: 2r` means 2 x the rank match_params chooses; the resolved params carry the number,
    PEFT scales the update by 2, and Method.settings reports what the run trained with."""
    suite = {"bone": ("bone", {"r": 8}), "lora": ("lora", {"match_params": "bone", "alpha": "2r"}),
             "pissa": ("pissa", {"match_params": "bone", "alpha": "1r"}), "rs": ("rslora", {"r": 4, "alpha": "2r"})}
    out = match(tiny_llama(), suite)
    lora = out["lora"]["method"]
    assert lora.r == 4 and lora.alpha == 8.0
    assert out["pissa"]["method"].alpha == 4.0
    model = lora.apply(tiny_llama())
    assert model.peft_config["default"].lora_alpha == 8.0
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == 2.0
    settings = lora.settings(lr=1e-4, trainable=methods.count_trainable(model))
    assert settings == {"method": "lora", "r": 4, "alpha": 8.0, "scaling": 2.0, "lr": 1e-4, "trainable_params": 8192}
    # rsLoRA keeps its alpha/sqrt(r) scaling: alpha 2r = 8 at r = 4 scales by 8/2 = 4
    assert methods.parse("rslora", {"r": 4, "alpha": "2r"}).scaling() == 4.0
    # a fixed r resolves at once; null alpha means alpha = r; methods without alpha have none
    assert methods.parse("dora", {"r": 6, "alpha": "0.5r"}).alpha == 3.0
    assert methods.parse("lora", {"r": 6}).alpha == 6.0
    assert methods.parse("bone", {"r": 8}).settings()["alpha"] is None
    assert methods.parse("lora", {"match_params": "bone", "alpha": "2r"}).alpha == "2r"


@pytest.mark.parametrize("alpha", ["2", "r2", "-2r", "0r", "2rr", True])
def test_bad_relative_alpha(alpha):
    e = _err(methods.validate_params, "lora", {"alpha": alpha}, key="m")
    assert e.key == "m.alpha" and "'<k>r'" in str(e), str(e)


def test_resolve_matching_bat_only_divisors():
    # bat on q, k only: r must divide 64 and 32; its count is 192 * r
    suite = {"lora": ("lora", {"r": 3}), "bat": ("bat", {"match_params": "lora", "target_modules": ["q_proj", "k_proj"]})}
    out = match(tiny_llama(), suite)
    # lora r=3: 3 * 2048 = 6144; bat on q,k: r * (64 + 32) * 2 = 192 r -> r = 32 gives 6144
    assert out["bat"]["value"] == 32 and out["bat"]["count"] == 6144


def test_resolve_matching_paper_llama2_7b():
    """The paper's pairing on Llama2-7B shapes (meta device, no weights): Bone r=64 is 87.0M, LoRA r=36 89.9M."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, vocab_size=32000)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    assert methods.parse("bone", {"r": 64}).expected_trainable(model) == 87_031_808
    assert methods.parse("lora", {"r": 36}).expected_trainable(model) == 89_948_160
    out = match(model, {"bone": ("bone", {"r": 64}), "lora": ("lora", {"match_params": "bone"})})
    assert out["lora"]["value"] == 35


def test_loraplus_groups():
    method = methods.parse("loraplus", {"r": 4, "loraplus_lr_ratio": 8.0})
    model = method.apply(tiny_llama())
    groups = method.param_groups(model, lr=1e-3, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        kinds = {("B" if "lora_B" in names[id(p)] else "A") for p in g["params"]}
        assert kinds == ({"B"} if g["lr"] == pytest.approx(8e-3) else {"A"}), (g["lr"], kinds)
        assert g["weight_decay"] == 0.1  # PEFT's loraplus_weight_decay, fed from the suite's weight_decay
    assert sorted(g["lr"] for g in groups) == pytest.approx([1e-3, 8e-3])


def test_default_groups_no_decay_on_vectors():
    method = methods.parse("dora", {"r": 4})
    model = method.apply(tiny_llama())
    groups = method.param_groups(model, lr=1e-3, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]]
    assert no_decay and all("lora_magnitude_vector" in n for n in no_decay)


def test_describe_and_names():
    text = methods.describe()
    for name in methods.names():
        assert f"{name}:" in text
    assert "loraplus_lr_ratio" in text and "kernel" in text and "mini_r" in text


def test_validate_fills_defaults():
    p = methods.validate_params("bat", {"r": 16})
    assert p == {"r": 16, "kernel": "efficient", "target_modules": "all-linear", "match_params": None}
    assert methods.validate_params("lora", {"alpha": 16})["alpha"] == 16.0
    assert methods.validate_params("lora", {"r": 4})["alpha"] == 4.0  # alpha = r when not given
    assert methods.validate_params("full", {}) == {}


# ---------------------------------------------------------------------------------------------
# bad input


def _err(fn, *a, **kw) -> UserError:
    with pytest.raises(UserError) as info:
        fn(*a, **kw)
    return info.value


def test_unknown_method_did_you_mean():
    e = _err(methods.validate_params, "lorra", {}, file="s.yaml", key="methods.a")
    assert "did you mean 'lora'" in str(e) and e.file == "s.yaml" and e.key == "methods.a"
    assert "did you mean 'bat'" in str(_err(methods.apply, tiny_llama(), "batt"))


def test_unknown_param_did_you_mean():
    e = _err(methods.validate_params, "lora", {"dropuot": 0.1}, file="s.yaml", key="methods.a")
    assert "unknown parameter 'dropuot'" in str(e) and "did you mean 'dropout'" in str(e)
    assert e.key == "methods.a.dropuot"
    # PEFT's own names point to ours
    assert "did you mean 'r'" in str(_err(methods.validate_params, "bone", {"rank": 4}))
    assert "did you mean 'alpha'" in str(_err(methods.validate_params, "lora", {"lora_alpha": 4}))
    assert "did you mean 'dropout'" in str(_err(methods.validate_params, "bone", {"miss_dropout": 0.1}))
    e = _err(methods.validate_params, "full", {"r": 4})
    assert "unknown parameter 'r'" in str(e)


@pytest.mark.parametrize(
    "name,params,key,words",
    [
        ("lora", {"r": 0}, "r", "> 0"),
        ("bat", {"r": -8}, "r", "> 0"),
        ("lora", {"r": 4.5}, "r", "integer"),
        ("lora", {"r": True}, "r", "integer"),
        ("lora", {"r": "8"}, "r", "integer"),
        ("lora", {"dropout": 1.0}, "dropout", "< 1"),
        ("lora", {"alpha": 0}, "alpha", "> 0"),
        ("bat", {"kernel": "fast"}, "kernel", "'efficient'"),
        ("lora", {"target_modules": []}, "target_modules", "non-empty"),
        ("bone-mini", {"mini_r": 0}, "mini_r", "> 0"),
        ("loraplus", {"loraplus_lr_ratio": -1}, "loraplus_lr_ratio", "> 0"),
        ("lora", {"r": 4, "match_params": "bone"}, "match_params", "not both"),
        ("lora", {"match_params": 3}, "match_params", "string"),
    ],
)
def test_impossible_values(name, params, key, words):
    e = _err(methods.validate_params, name, params, file="s.yaml", key="m")
    assert e.key == f"m.{key}" and words in str(e), str(e)


def test_bat_shape_not_divisible_names_module_and_shape():
    e = _err(methods.apply, tiny_llama(), "bat", r=48, file="s.yaml", key="methods.bat")
    msg = str(e)
    assert "model.layers.0.self_attn.q_proj" in msg and "(64, 64)" in msg and "r=48" in msg, msg
    assert e.key == "methods.bat.r"
    e = _err(methods.apply, tiny_llama(), "bat", r=64, target_modules=["k_proj"])
    assert "model.layers.0.self_attn.k_proj" in str(e) and "(32, 64)" in str(e)


def test_no_target_module_and_unresolved_match():
    assert "match no linear module" in str(_err(methods.apply, tiny_llama(), "lora", target_modules=["qkv"]))
    assert "resolve" in str(_err(methods.apply, tiny_llama(), "lora", match_params="bone"))


def test_matching_errors():
    m = tiny_llama()
    e = _err(match, m, {"bone": ("bone", {}), "l": ("lora", {"match_params": "bon"})}, key="methods")
    assert "did you mean 'bone'" in str(e) and e.key == "methods.l.match_params"
    e = _err(match, m, {"a": ("lora", {"match_params": "b"}), "b": ("bone", {"match_params": "a"})})
    assert "cycle" in str(e)
    e = _err(match, m, {"a": ("full", {"match_params": "b"}), "b": ("bone", {})})
    assert "unknown parameter 'match_params'" in str(e)
