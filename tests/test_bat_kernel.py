"""The memory-efficient Bat kernel against PEFT's own Bat layer (MissConfig(init_weights="bat")).

Loss and gradients must match PEFT's to 1e-5 in fp32 for random non-zero D, with bias, and loosely
in bf16; nothing of size out x in may stay saved for backward; merge, unmerge and adapter files are
PEFT's. Runs on CPU and, when present, CUDA.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

torch.set_num_threads(1)  # tiny tensors: one thread is faster and immune to a busy machine

from disha_bench.methods import bat_kernel
from disha_bench.methods.bat_kernel import BatLinearFunction, bat_linear, bat_weight, patch_bat_layers

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_bat_weight(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Bat's definition, block by block: W'_{a,b} = W_{a,b} (I + D_a) + D_a."""
    r = d.shape[-1]
    out = w.clone()
    for a in range(w.shape[0] // r):
        for b in range(w.shape[1] // r):
            blk = w[a * r : (a + 1) * r, b * r : (b + 1) * r]
            out[a * r : (a + 1) * r, b * r : (b + 1) * r] = blk + blk @ d[a] + d[a]
    return out


class Net(nn.Module):
    """Two linear layers (with bias) so the adapted layer sits inside a graph."""

    def __init__(self, i=32, h=48, o=16, bias=True):
        super().__init__()
        self.fc1 = nn.Linear(i, h, bias=bias)
        self.fc2 = nn.Linear(h, o, bias=bias)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def make_pair(r=8, dtype=torch.float32, device="cpu", bias=True, autocast_adapter_dtype=True, seed=0):
    """The same Net wrapped twice with PEFT Bat: (PEFT's forward, efficient forward), equal random D."""
    from peft import MissConfig, get_peft_model

    models = []
    for _ in range(2):
        torch.manual_seed(seed)
        net = Net(bias=bias).to(device=device, dtype=dtype)
        cfg = MissConfig(r=r, init_weights="bat", target_modules=["fc1", "fc2"])
        models.append(get_peft_model(net, cfg, autocast_adapter_dtype=autocast_adapter_dtype))
    ref, eff = models
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for (n1, p1), (n2, p2) in zip(ref.named_parameters(), eff.named_parameters()):
            assert n1 == n2
            if "miss_block" in n1:
                p1.copy_(0.05 * torch.randn_like(p1, dtype=torch.float32).to(p1.dtype))
                p2.copy_(p1)
    assert patch_bat_layers(eff) == 2
    return ref, eff


def loss_and_grads(model, x, target):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    loss = ((model(x).float() - target) ** 2).mean()
    loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), x.grad.detach().float(), grads


# ---------------------------------------------------------------------------------------------
# the function itself


def test_bat_weight_matches_definition():
    torch.manual_seed(0)
    w, d = torch.randn(24, 40, dtype=torch.float64), torch.randn(3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(bat_weight(w, d), reference_bat_weight(w, d), rtol=1e-12, atol=1e-12)


def test_gradcheck_float64_all_inputs():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 16, dtype=torch.float64, requires_grad=True)  # base weight trainable too: covers dL/dW
    d = (0.3 * torch.randn(2, 4, 4, dtype=torch.float64)).requires_grad_()
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: bat_linear(*a), (x, w, d, b))
    assert torch.autograd.gradcheck(lambda x, w, d: bat_linear(x, w, d), (x, w, d))


def test_saves_no_weight_sized_tensor():
    """Only x, the base weight itself (no copy) and D are kept for backward."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 96)
    lin.weight.requires_grad_(False)
    d = torch.zeros(96 // 16, 16, 16, requires_grad=True)
    x = torch.randn(5, 64, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = BatLinearFunction.apply(x, lin.weight, d, lin.bias, torch.float32)
    big = [t for t in saved if t.numel() >= lin.weight.numel()]
    assert all(t.data_ptr() == lin.weight.data_ptr() for t in big), [t.shape for t in big]
    y.sum().backward()
    assert d.grad is not None and x.grad is not None


# ---------------------------------------------------------------------------------------------
# against PEFT's Bat layer


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False])
def test_parity_with_peft_fp32(device, bias):
    ref, eff = make_pair(device=device, bias=bias)
    torch.manual_seed(3)
    x = torch.randn(4, 7, 32, device=device)
    target = torch.randn(4, 7, 16, device=device)
    l1, gx1, g1 = loss_and_grads(ref, x, target)
    l2, gx2, g2 = loss_and_grads(eff, x, target)
    torch.testing.assert_close(l2, l1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx2, gx1, rtol=1e-5, atol=1e-5)
    assert g1.keys() == g2.keys() and any("miss_block" in k for k in g1)
    for k in g1:
        assert g1[k].abs().max() > 0, k  # D is non-zero, so every grad is informative
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("autocast_adapter_dtype", [True, False], ids=["fp32-adapter", "bf16-adapter"])
def test_parity_with_peft_bf16(device, autocast_adapter_dtype):
    """bf16 model; PEFT's default keeps the adapter in fp32 (computes W' in fp32), or all bf16."""
    ref, eff = make_pair(dtype=torch.bfloat16, device=device, autocast_adapter_dtype=autocast_adapter_dtype)
    torch.manual_seed(3)
    x = torch.randn(4, 7, 32, device=device, dtype=torch.bfloat16)
    target = torch.randn(4, 7, 16, device=device)
    l1, gx1, g1 = loss_and_grads(ref, x, target)
    l2, gx2, g2 = loss_and_grads(eff, x, target)
    torch.testing.assert_close(l2, l1, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx2, gx1, rtol=5e-2, atol=5e-2)
    for k in g1:
        scale = g1[k].abs().max().clamp_min(1e-6)
        assert ((g2[k] - g1[k]).abs().max() / scale) < 5e-2, k


def test_efficient_path_is_used_and_falls_back(monkeypatch):
    ref, eff = make_pair()
    calls = []
    orig = BatLinearFunction.apply
    monkeypatch.setattr(BatLinearFunction, "apply", lambda *a: calls.append(1) or orig(*a))
    x = torch.randn(3, 32)
    y = eff(x)
    assert len(calls) == 2  # both layers
    with eff.disable_adapter():  # disabled adapters: the base model, through PEFT's path
        y_base = eff(x)
    with ref.disable_adapter():
        y_base_ref = ref(x)
    assert len(calls) == 2
    torch.testing.assert_close(y_base, y_base_ref)
    assert (y_base - y).abs().max() > 1e-4  # the adapter does change the output
    torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)


def test_merge_unmerge_through_fp32_inverse():
    ref, eff = make_pair()
    x = torch.randn(5, 32)
    eff.eval()
    w0 = eff.base_model.model.fc1.base_layer.weight.detach().clone()
    y0 = eff(x)
    eff.merge_adapter()
    w_merged = eff.base_model.model.fc1.base_layer.weight.detach()
    d = eff.base_model.model.fc1.miss_block["default"].detach()
    torch.testing.assert_close(w_merged, reference_bat_weight(w0, d), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eff(x), y0, rtol=1e-5, atol=1e-5)
    eff.unmerge_adapter()
    torch.testing.assert_close(eff.base_model.model.fc1.base_layer.weight.detach(), w0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eff(x), y0, rtol=1e-5, atol=1e-5)


def test_adapter_files_load_in_plain_peft(tmp_path):
    from peft import PeftModel

    _, eff = make_pair()
    eff.eval()
    x = torch.randn(5, 32)
    y = eff(x)
    eff.save_pretrained(tmp_path)
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(Net(), tmp_path).eval()
    assert type(loaded.base_model.model.fc1).__name__ == "MissLinear"  # PEFT's own class
    torch.testing.assert_close(loaded(x), y, rtol=1e-6, atol=1e-6)
    assert patch_bat_layers(loaded) == 2
    torch.testing.assert_close(loaded(x), y, rtol=1e-6, atol=1e-6)


def test_patch_is_idempotent_and_unpatches():
    _, eff = make_pair()
    assert patch_bat_layers(eff) == 2
    layer = eff.base_model.model.fc1
    assert patch_bat_layers(eff) == 2 and type(layer).__name__ == "EfficientBatLinear"
    from peft.tuners.miss.layer import MissLinear

    assert isinstance(layer, MissLinear)
    assert bat_kernel.unpatch_bat_layers(eff) == 2
    assert type(layer) is MissLinear


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_keeps_less_memory_than_peft():
    """On CUDA: activation memory kept between forward and backward is far below PEFT's."""
    from peft import MissConfig, get_peft_model

    peaks = {}
    for kernel in ("peft", "efficient"):
        torch.manual_seed(0)
        net = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(4)]).cuda()
        model = get_peft_model(net, MissConfig(r=64, init_weights="bat", target_modules=["0", "1", "2", "3"]))
        if kernel == "efficient":
            patch_bat_layers(model)
        x = torch.randn(8, 1024, device="cuda")
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        y = model(x)
        peaks[kernel] = torch.cuda.memory_allocated() - before
        y.sum().backward()
    assert peaks["efficient"] < 0.5 * peaks["peft"], peaks
