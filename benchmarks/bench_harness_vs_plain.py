"""The harness's training step against a plain PEFT loop on identical batches, per method: tokens/s,
their ratio (goal: >= 0.9x) and MFU.

    DS_ACCELERATOR=cpu python benchmarks/bench_harness_vs_plain.py                 # CPU, a small random Llama
    python benchmarks/bench_harness_vs_plain.py --size gpu --precision bf16        # on a GPU (gpu_check runs it)

Both sides train the same randomly initialised Llama (a fixed seed), adapted the same way, on the
same micro-batches (random tokens with the loss on the second half of each row, or real GSM8K rows
from `gpu_check.py prepare` with `--data`). The harness side is what a run executes: a real
`deepspeed.initialize` with the config `ds_config.deepspeed_config` generates and the fit loop's
`train_step` (accumulation, logged loss and tokens, gradient norm). The plain side is what a user
writes with PEFT alone: the model in the training dtype, torch AdamW, `loss / accum` backward,
gradient clipping, step. The two sides alternate in blocks of steps, so drift of the machine hits
both alike; the figure is the median step.

MFU = model FLOPs per second / the device's measured dense matmul rate in the training dtype
(`matmul_rate`, measured here, printed beside it). Model FLOPs per token: 2 x all parameters
(forward) + 2 x all parameters (input gradients) + 2 x trainable parameters (weight gradients);
attention scores left out. Figures measured on a shared machine are not measurements.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SIZES = {
    "tiny": {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 2, "vocab": 512, "seq": 64, "batch": 2, "r": 16},
    "cpu": {"hidden": 512, "intermediate": 1376, "layers": 2, "heads": 8, "kv_heads": 8, "vocab": 4096, "seq": 128, "batch": 4, "r": 32},
    "gpu": {"hidden": 2048, "intermediate": 5632, "layers": 16, "heads": 16, "kv_heads": 4, "vocab": 32000, "seq": 512, "batch": 8, "r": 64},
}
METHOD_PARAMS = {"lora": lambda r: {"r": r * 9 // 16, "alpha": 2 * (r * 9 // 16)}, "bone": lambda r: {"r": r},
                 "bat": lambda r: {"r": r}}
"""LoRA at 9/16 of Bone's r: the paper's r=36 against Bone's r=64 (about equal trainable counts)."""


def build(size: dict, method: str, dtype, device, checkpointing: bool):
    """The random Llama (seed 0) with `method` on all seven projections."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from disha_bench import methods

    config = LlamaConfig(vocab_size=size["vocab"], hidden_size=size["hidden"], intermediate_size=size["intermediate"],
                         num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
                         num_key_value_heads=size["kv_heads"], max_position_embeddings=4096)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    params = {**METHOD_PARAMS[method](size["r"]), "target_modules": PROJECTIONS}
    model = methods.apply(model, method, **params)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, params


def batches(size: dict, count: int, accum: int, data: str | None) -> list[list[dict]]:
    """`count` optimizer steps of `accum` collated micro-batches, the same for both sides."""
    import torch

    from disha_bench.tasks.base import IGNORE_INDEX, collate

    if data:
        from gpu_check import load_features  # benchmarks/ is on sys.path when run as a script

        features, _, pad_id = load_features(__import__("pathlib").Path(data), size["seq"])
        rows = iter(features * (1 + count * accum * size["batch"] // max(len(features), 1)))
        return [[collate([next(rows) for _ in range(size["batch"])], pad_id) for _ in range(accum)] for _ in range(count)]
    generator = torch.Generator().manual_seed(0)
    steps = []
    for _ in range(count):
        micro = []
        for _ in range(accum):
            ids = torch.randint(3, size["vocab"], (size["batch"], size["seq"]), generator=generator)
            labels = ids.clone()
            labels[:, : size["seq"] // 2] = IGNORE_INDEX
            micro.append({"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)})
        steps.append(micro)
    return steps


def harness_side(model, method: str, params: dict, args):
    """A step function running the harness's engine and `train_step`."""
    import deepspeed
    import torch

    from disha_bench import methods
    from disha_bench.config.suite import TrainingConfig
    from disha_bench.training.ds_config import deepspeed_config
    from disha_bench.training.loop import train_step

    training = TrainingConfig(batch_size=args.size_spec["batch"], grad_accum=args.accum, precision=args.precision,
                              zero_stage=args.zero_stage, lr=1e-4, gradient_checkpointing=args.checkpointing)
    groups = methods.parse(method, params).param_groups(model, training.lr, training.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=training.lr)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(training, 1))
    engine.train()
    return lambda step, micro: train_step(engine, micro, step, args.device).tokens


def plain_side(model, args):
    """A step function running a plain PEFT loop."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    model.train()

    def step(_, micro):
        tokens = 0
        for batch in micro:
            batch = {k: v.to(args.device) for k, v in batch.items()}
            (model(**batch).loss / len(micro)).backward()
            tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return tokens

    return step


def timed(step_fn, work: list, offset: int, device) -> list[tuple[float, int]]:
    """(seconds, tokens) of each step of `work`."""
    import torch

    out = []
    for index, micro in enumerate(work):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        tokens = step_fn(offset + index + 1, micro)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append((time.perf_counter() - started, tokens))
    return out


def matmul_rate(device, dtype) -> float:
    """Measured dense matmul FLOP/s of this device in `dtype` (the MFU denominator)."""
    import torch

    n = 4096 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    reps = 20 if device.type == "cuda" else 5
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - started)


def compare(method: str, args) -> dict:
    """Both sides of one method, alternating blocks: median tokens/s, ratio, MFU."""
    import torch

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    harness_model, params = build(args.size_spec, method, dtype, args.device, args.checkpointing)
    plain_model, _ = build(args.size_spec, method, dtype, args.device, args.checkpointing)
    total = sum(p.numel() for p in plain_model.parameters())
    trainable = sum(p.numel() for p in plain_model.parameters() if p.requires_grad)
    sides = {"harness": harness_side(harness_model, method, params, args), "plain": plain_side(plain_model, args)}
    work = batches(args.size_spec, args.warmup + args.steps, args.accum, args.data)
    for name, fn in sides.items():
        timed(fn, work[: args.warmup], 0, args.device)
    figures: dict[str, list] = {name: [] for name in sides}
    for start in range(args.warmup, len(work), args.block):
        for name, fn in sides.items():
            figures[name] += timed(fn, work[start : start + args.block], start, args.device)
    rate = {name: statistics.median(tokens / seconds for seconds, tokens in f) for name, f in figures.items()}
    flops_per_token = 4 * total + 2 * trainable
    return {"method": method, "harness_tokens_per_s": rate["harness"], "plain_tokens_per_s": rate["plain"],
            "ratio": rate["harness"] / rate["plain"], "mfu_harness": rate["harness"] * flops_per_token / args.matmul_rate,
            "mfu_plain": rate["plain"] * flops_per_token / args.matmul_rate, "trainable": trainable, "params": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "bone", "bat"], choices=sorted(METHOD_PARAMS))
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on both sides")
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per side")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--block", type=int, default=2, help="steps per alternating block")
    parser.add_argument("--data", help="folder written by `gpu_check.py prepare`: real GSM8K rows instead of random tokens")
    args = parser.parse_args(argv)

    from disha_bench.training import distributed

    distributed.ensure_single_process_env()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        distributed.skip_cpu_shm_build()
    import deepspeed

    deepspeed.init_distributed(verbose=False)
    args.device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    args.size_spec = dict(SIZES[args.size])
    if args.data:  # real rows: the model's vocabulary is the tokenizer's that encoded them
        from gpu_check import load_features

        args.size_spec["vocab"] = load_features(__import__("pathlib").Path(args.data), args.size_spec["seq"])[1]
    args.matmul_rate = matmul_rate(args.device, torch.bfloat16 if args.precision == "bf16" else torch.float32)
    print(f"harness vs plain loop: {args.size} {args.size_spec}, {args.precision}, ZeRO-{args.zero_stage}, accum "
          f"{args.accum}, checkpointing {args.checkpointing}, {args.steps} timed steps; measured matmul rate "
          f"{args.matmul_rate / 1e12:.2f} TFLOP/s on {args.device}", flush=True)
    worst = float("inf")
    for method in args.methods:
        r = compare(method, args)
        worst = min(worst, r["ratio"])
        print(f"RESULT {method:5s} harness {r['harness_tokens_per_s']:10.1f} tok/s  plain {r['plain_tokens_per_s']:10.1f} tok/s  "
              f"ratio {r['ratio']:.3f}x  MFU harness {r['mfu_harness']:.1%} plain {r['mfu_plain']:.1%}  "
              f"(trainable {r['trainable']:,} of {r['params']:,})", flush=True)
    print(f"lowest ratio {worst:.3f}x (goal >= 0.9x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
