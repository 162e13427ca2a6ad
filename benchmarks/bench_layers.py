"""Forward+backward time and peak memory of one adapted linear layer and one adapted decoder block.

    python benchmarks/bench_layers.py [--hidden 2048 4096] [--units linear block] [--tokens N]
                                      [--methods lora bone bat bat-peft ...] [--dtype float32] [--json out.json]

Shapes are Llama-like: hidden 2048 (intermediate 5632, as TinyLlama-1.1B) and 4096 (intermediate 11008,
as Llama-2-7B), head size 128, no grouped KV. "linear" is one hidden x hidden projection; "block" is one
LlamaDecoderLayer with all 7 projections adapted. Parameters are matched to the DiSHA paper's anchor:
Bone r=64; LoRA's rank is chosen so its trainable count is closest to Bone's, and every other method
is matched to that LoRA (methods.resolve_matching, from shapes alone). Bat is measured twice: the
efficient kernel ("bat") and PEFT's own forward ("bat-peft"). Ratios are taken within the same run.

Time: median of --reps timed forward+backward passes after --warmup passes (input requires grad, as
inside a network). Peak memory: on CUDA, torch.cuda.max_memory_allocated after reset_peak_memory_stats,
minus the memory allocated before the pass; on CPU every case runs in a process of its own (forked from a fork server) and the
figure is VmHWM (reset through /proc/self/clear_refs, after malloc_trim) minus the RSS after set-up.
The memory figure is what one forward+backward adds on top of the model: activations kept for backward,
temporaries, and the gradients of the trainable parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

try:
    import disha_bench  # noqa: F401
except ImportError:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INTERMEDIATE = {2048: 5632, 4096: 11008}
ALL_METHODS = ("lora", "rslora", "dora", "pissa", "olora", "loraplus", "bone", "bone-mini", "bat", "bat-peft", "full")
ANCHOR = ("bone", {"r": 64})
# label -> (method, extra params); every label except the anchor is matched to "lora", and lora to the anchor
METHOD_TABLE = {
    "lora": ("lora", {}),
    "rslora": ("rslora", {}),
    "dora": ("dora", {}),
    "pissa": ("pissa", {"pissa_niter": 2}),
    "olora": ("olora", {}),
    "loraplus": ("loraplus", {}),
    "bone": ANCHOR,
    "bone-mini": ("bone-mini", {"mini_r": 128}),
    "bat": ("bat", {"kernel": "efficient"}),
    "bat-peft": ("bat", {"kernel": "peft"}),
    "full": ("full", {}),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hidden", type=int, nargs="+", default=[2048, 4096], help="hidden sizes (default 2048 4096)")
    parser.add_argument("--units", nargs="+", default=["linear", "block"], choices=["linear", "block"])
    parser.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS, metavar="LABEL",
                        help=f"labels to measure (default all: {' '.join(ALL_METHODS)}); lora is always added")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per pass (default 2048 on CUDA, 256 on CPU)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=None, help="untimed passes (default 3 CUDA, 1 CPU)")
    parser.add_argument("--reps", type=int, default=None, help="timed passes, median reported (default 10 CUDA, 3 CPU)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: all cores)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


# ---------------------------------------------------------------------------------------------
# units


def llama_config(hidden: int, dtype: str = "float32"):
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=INTERMEDIATE.get(hidden, hidden * 11008 // 4096 // 64 * 64),
        num_attention_heads=hidden // 128,
        num_key_value_heads=hidden // 128,
        num_hidden_layers=1,
        vocab_size=32000,
        max_position_embeddings=4096,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def build_unit(unit: str, hidden: int):
    """A bare torch module: one projection, or one Llama decoder layer with its rotary embedding."""
    import torch
    from torch import nn

    if unit == "linear":

        class Linear(nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = nn.Linear(hidden, hidden, bias=False)

            def forward(self, x):
                return self.proj(x)

        return Linear()

    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    cfg = llama_config(hidden)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = LlamaDecoderLayer(cfg, layer_idx=0)
            self.rope = LlamaRotaryEmbedding(cfg)

        def forward(self, x):
            pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
            out = self.layer(x, position_embeddings=self.rope(x, pos), position_ids=pos)
            return out[0] if isinstance(out, tuple) else out

    return Block()


def matched_params(unit: str, hidden: int, labels: list[str]) -> dict[str, tuple[str, dict, dict | None]]:
    """label -> (method, resolved params, matching info) for this unit, from shapes on the meta device."""
    import torch

    from disha_bench import methods

    suite = {}
    for label in labels:
        name, extra = METHOD_TABLE[label]
        params = dict(extra)
        if label == "lora":
            params["match_params"] = "bone"
        elif label not in ("bone", "full"):
            params["match_params"] = "lora"
        suite[label] = (name, params)
    suite.setdefault("bone", ANCHOR)
    with torch.device("meta"):
        model = build_unit(unit, hidden)
    info = methods.resolve_matching(model, {label: methods.parse(*entry) for label, entry in suite.items()})
    out = {}
    for label in labels:
        name, params = suite[label]
        if label in info:
            out[label] = (name, info[label]["method"].as_dict(), info[label])
        else:
            out[label] = (name, methods.validate_params(name, params), None)
    return out


# ---------------------------------------------------------------------------------------------
# one case


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def measure(case: dict) -> dict:
    """Build, warm up, time and measure one (unit, hidden, method) case in this process."""
    import torch

    from disha_bench import methods
    from disha_bench.training.memory import PeakMemory

    device = torch.device(case["device"])
    dtype = getattr(torch, case["dtype"])
    if device.type == "cpu" and case.get("threads"):
        torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    with torch.device(device):
        model = build_unit(case["unit"], case["hidden"]).to(dtype)
    model = methods.apply(model, case["method"], **case["params"])
    trainable = methods.count_trainable(model)
    x = torch.randn(1, case["tokens"], case["hidden"], device=device, dtype=dtype, requires_grad=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step():
        model.zero_grad(set_to_none=True)
        x.grad = None
        y = model(x)
        y.float().square().mean().backward()

    for _ in range(case["warmup"]):
        step()
    times = []
    for _ in range(case["reps"]):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)

    model.zero_grad(set_to_none=True)
    x.grad = None
    _malloc_trim()
    mem = PeakMemory(device)
    mem.start()
    step()
    peak = mem.peak_mb()
    return {
        "unit": case["unit"],
        "hidden": case["hidden"],
        "label": case["label"],
        "method": case["method"],
        "params": {k: v for k, v in case["params"].items() if k in ("r", "mini_r", "kernel", "alpha", "pissa_niter")},
        "trainable": trainable,
        "tokens": case["tokens"],
        "time_ms": 1000 * statistics.median(times),
        "best_ms": 1000 * min(times),
        "times_ms": [1000 * t for t in times],
        "peak_mb": peak,
    }


def _quiet() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def _measure_quietly(case: dict) -> dict:
    _quiet()
    return measure(case)


def run_case(case: dict) -> dict:
    """CUDA: in this process. CPU: in a process of its own from the fork server (a clean memory high-water mark)."""
    if case["device"] != "cpu":
        import torch

        result = measure(case)
        torch.cuda.empty_cache()
        return result
    from disha_bench.running.worker import call_in_own_process

    try:
        return call_in_own_process(_measure_quietly, case)
    except RuntimeError as err:
        raise RuntimeError(f"{case['unit']} h{case['hidden']} {case['label']}: {err}") from None


# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_cpu = device == "cpu"
    tokens = args.tokens or (256 if on_cpu else 2048)
    warmup = args.warmup if args.warmup is not None else (1 if on_cpu else 3)
    reps = args.reps if args.reps is not None else (3 if on_cpu else 10)
    labels = list(dict.fromkeys(["lora"] + list(args.methods)))
    where = f"{device} ({torch.cuda.get_device_name() if not on_cpu else f'{os.cpu_count()} cores, torch threads {args.threads or torch.get_num_threads()}'})"
    print(f"bench-layers: {where}, {args.dtype}, {tokens} tokens, warmup {warmup}, median of {reps}", flush=True)

    results = []
    for hidden in args.hidden:
        for unit in args.units:
            table = matched_params(unit, hidden, labels)
            for label in labels:
                name, params, _ = table[label]
                case = dict(unit=unit, hidden=hidden, label=label, method=name, params=params, tokens=tokens,
                            dtype=args.dtype, device=device, warmup=warmup, reps=reps, threads=args.threads)
                res = run_case(case)
                results.append(res)
                print(f"  {unit:6s} h{hidden} {label:9s} {_fmt_params(res['params']):22s} trainable {res['trainable']:>11,}"
                      f"  median {res['time_ms']:9.1f} ms (best {res['best_ms']:9.1f})  peak {res['peak_mb']:8.1f} MB", flush=True)
    print()
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": where, "dtype": args.dtype, "tokens": tokens, "results": results}, indent=1))
    return 0


def _fmt_params(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in p.items() if k != "kernel" and v is not None) or "-"


def report(results: list[dict]) -> str:
    """Ratios within each (unit, hidden): every method against LoRA, and Bat-efficient against PEFT's Bat."""
    lines = [f"{'unit':6s} {'hidden':>6s} {'method':9s} {'trainable':>11s} {'median ms':>10s} {'x lora':>7s} "
             f"{'best ms':>9s} {'x lora':>7s} {'peak MB':>9s} {'x lora':>7s}"]
    groups: dict[tuple, dict] = {}
    for r in results:
        groups.setdefault((r["unit"], r["hidden"]), {})[r["label"]] = r
    for (unit, hidden), by in groups.items():
        ref = by.get("lora")
        for label, r in by.items():
            tr = r["time_ms"] / ref["time_ms"] if ref else float("nan")
            br = r["best_ms"] / ref["best_ms"] if ref else float("nan")
            mr = r["peak_mb"] / ref["peak_mb"] if ref and ref["peak_mb"] > 0 else float("nan")
            lines.append(f"{unit:6s} {hidden:>6d} {label:9s} {r['trainable']:>11,} {r['time_ms']:>10.1f} {tr:>7.2f} "
                         f"{r['best_ms']:>9.1f} {br:>7.2f} {r['peak_mb']:>9.1f} {mr:>7.2f}")
        for a, b, text in (("bat", "bat-peft", "bat efficient / PEFT bat"), ("bat", "bone", "bat efficient / bone    ")):
            if a in by and b in by and by[b]["peak_mb"] > 0:
                e, p = by[a], by[b]
                lines.append(f"{'':6s} {'':>6s} {text}: time {e['time_ms'] / p['time_ms']:.2f}x median, "
                             f"{e['best_ms'] / p['best_ms']:.2f}x best; peak {e['peak_mb'] / p['peak_mb']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
