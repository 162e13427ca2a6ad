"""GPU check: LoRA, Bone and Bat on a random ~1B Llama in bf16 under real DeepSpeed ZeRO-2 and ZeRO-3.

    # here, once (CPU): tokenize GSM8K train into .gpucheck/ (git-ignored; it travels with `carry`)
    DISHA_BENCH_DATA=../shared/data python benchmarks/gpu_check.py prepare --out .gpucheck
    # here: the whole check at tiny size on CPU, so that the one GPU call succeeds
    DS_ACCELERATOR=cpu python benchmarks/gpu_check.py run --data .gpucheck --tiny
    # on the GPU machine (device tool): benchmarks/gpu_check.sh - installs the carried wheels, runs
    # `run --data .gpucheck` (hidden 2048 x 16 layers, about 0.9B parameters, bf16, CUDA), < 10 min

Per (stage, method): a `plain` run (one micro-batch per step) and, at ZeRO-2, `ckpt+accum`
(gradient checkpointing, 4 micro-batches per step); the peak counter is reset after warm-up, so
both the whole process's peak and the timed steps' peak are printed; 20 timed steps after 3 of
warm-up. The harness-vs-plain-loop A/B (`bench_harness_vs_plain.py`, bf16, real GSM8K rows) runs
first; every figure is written to `--json` as soon as it is measured (a timeout keeps the rest).

Pretrained weights cannot travel to the GPU machine (64 MiB per call), and memory and throughput
need none: the model is a `LlamaForCausalLM` built from a config with a fixed seed. The data is
real: GSM8K train encoded as the `gsm8k` task encodes it (loss on the answer only), by the
SmolLM2 tokenizer (whose vocabulary sizes the model). Each (ZeRO stage, method) runs in a
process of its own (a clean CUDA peak), single rank: `deepspeed.initialize` with the client
AdamW, bf16 mixed precision, gradient clipping 1.0, all seven projections; LoRA's rank is matched
to Bone's trainable count (`match_params: bone`), Bone and Bat r=64. It prints, per run, CUDA
peak memory (max_memory_allocated: weights, optimizer state, activations; on CPU the VmHWM of
the process), tokens/s over the timed steps (after warm-up), and per stage the Bone/LoRA and
Bat/Bone ratios of both. `--json FILE` keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ("lora", "bone", "bat")
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FULL = {"hidden": 2048, "intermediate": 5632, "layers": 16, "heads": 16, "kv_heads": 4, "seq": 512, "batch": 8,
        "r": 64, "warmup": 3, "steps": 20}
TINY = {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 2, "seq": 128, "batch": 2,
        "r": 16, "warmup": 1, "steps": 2}
VARIANTS = {"plain": {"accum": 1, "checkpointing": False}, "ckpt+accum": {"accum": 4, "checkpointing": True}}
"""Each (stage, method) runs as `plain` (one micro-batch per step); at ZeRO-2 also with gradient
checkpointing and 4 accumulation micro-batches per step (the paper suite's path before issue 23)."""


def prepare(out: Path, examples: int) -> None:
    """GSM8K train, encoded by the gsm8k task with the SmolLM2 tokenizer, as flat int32 arrays."""
    import numpy as np

    from disha_bench import models, tasks
    from disha_bench.core.datasets import resolve_data_dir

    task = tasks.get("gsm8k")
    config = {**task.options, "name": "gsm8k", "train_limit": examples, "eval_limit": 1, "sample_seed": 0,
              "source": "auto", "data_files": None}
    train, _ = task.load(config, resolve_data_dir(None))
    tokenizer = models.load_tokenizer("tiny-llama")  # SmolLM2's tokenizer
    features = [task.encode(r, tokenizer, FULL["seq"]) for r in train]
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "gsm8k_train.npz", input_ids=np.concatenate([f["input_ids"] for f in features]).astype(np.int32),
             labels=np.concatenate([f["labels"] for f in features]).astype(np.int32),
             offsets=np.cumsum([0] + [len(f["input_ids"]) for f in features]), vocab=len(tokenizer),
             pad_id=tokenizer.pad_token_id)
    print(f"{len(features)} GSM8K examples -> {out / 'gsm8k_train.npz'}")


def load_features(data: Path, seq: int) -> tuple[list[dict], int, int]:
    import numpy as np

    with np.load(data / "gsm8k_train.npz") as z:
        ids, labels, offsets = z["input_ids"].tolist(), z["labels"].tolist(), z["offsets"]
        vocab, pad_id = int(z["vocab"]), int(z["pad_id"])
    features = [{"input_ids": ids[a:b][:seq], "labels": labels[a:b][:seq]} for a, b in zip(offsets[:-1], offsets[1:])]
    return features, vocab, pad_id


def build_model(size: dict, vocab: int, device):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=size["hidden"], intermediate_size=size["intermediate"],
                         num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
                         num_key_value_heads=size["kv_heads"], max_position_embeddings=2048)
    torch.manual_seed(0)
    with torch.device(device):  # built on the accelerator: no 4 GB of host-side initialisation
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    return model


def one(method: str, stage: int, size: dict, data: Path, variant: str = "plain") -> dict:
    """One (method, stage, variant) run in this process; returns its figures: the whole process's peak
    (weights, optimizer state, activations) and the peak of the timed steps alone (counter reset after
    warm-up: what steady training holds)."""
    import deepspeed
    import torch

    from disha_bench import methods
    from disha_bench.tasks.base import collate
    from disha_bench.training import distributed
    from disha_bench.training.memory import _status_kb

    distributed.ensure_single_process_env()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:  # the CPU dry run: no JIT build of DeepSpeed's shared-memory op (a killed build leaves a lock that hangs the next)
        distributed.skip_cpu_shm_build()
    deepspeed.init_distributed(verbose=False)
    features, vocab, pad_id = load_features(data, size["seq"])
    model = build_model(size, vocab, device)
    suite_methods = {"lora": ("lora", {"match_params": "bone", "target_modules": PROJECTIONS}),
                     "bone": ("bone", {"r": size["r"], "target_modules": PROJECTIONS}),
                     "bat": ("bat", {"r": size["r"], "target_modules": PROJECTIONS})}
    params = dict(suite_methods[method][1])
    if method == "lora":
        table = {label: methods.parse(*entry) for label, entry in suite_methods.items()}
        params = methods.resolve_matching(model, table)["lora"]["method"].as_dict()
    model = methods.apply(model, method, **params)
    accum, checkpointing = VARIANTS[variant]["accum"], VARIANTS[variant]["checkpointing"]
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    trainable = methods.count_trainable(model)
    total = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    config = {"train_micro_batch_size_per_gpu": size["batch"], "gradient_accumulation_steps": accum,
              "gradient_clipping": 1.0, "bf16": {"enabled": True}, "steps_per_print": 10**9,
              "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    if stage == 3:
        methods.parse(method, params).after_zero3_init(engine.module)
    steps, tokens, started = size["warmup"] + size["steps"], 0, 0.0
    whole_peak = first_step_mb = 0.0
    longest = 0  # the longest padded row: what the peak's activations are sized by
    after_init_mb = torch.cuda.memory_allocated(device) / 2**20 if cuda else 0.0  # weights (+ ZeRO's copies)
    for step in range(steps):
        if step == 1 and cuda:  # optimizer state exists after the first step
            first_step_mb = torch.cuda.memory_allocated(device) / 2**20
        if step == size["warmup"]:
            if cuda:
                torch.cuda.synchronize()
                whole_peak = torch.cuda.max_memory_allocated(device) / 2**20
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
        for micro in range(accum):
            index = (step * accum + micro) * size["batch"]
            chunk = [features[(index + i) % len(features)] for i in range(size["batch"])]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            longest = max(longest, batch["input_ids"].shape[1])
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            if step >= size["warmup"]:
                tokens += int(batch["attention_mask"].sum())
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    if cuda:
        train_peak = torch.cuda.max_memory_allocated(device) / 2**20
        peak = max(whole_peak, train_peak)
    else:  # VmHWM: the process's peak resident memory (not resettable per phase here)
        peak = train_peak = _status_kb("VmHWM") / 1024
    return {"method": method, "stage": stage, "variant": variant, "accum": accum, "checkpointing": checkpointing,
            "batch": size["batch"], "seq": size["seq"], "longest_padded_row": longest, "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "params": total, "trainable": trainable, "peak_mb": round(peak, 1), "train_peak_mb": round(train_peak, 1),
            "tokens_per_s": round(tokens / seconds, 1),
            "after_init_mb": round(after_init_mb, 1), "after_first_step_mb": round(first_step_mb, 1), "step_s": round(seconds / size["steps"], 4),
            "timed_steps": size["steps"], "final_loss": round(float(loss), 4)}


def save(args, figures: dict) -> None:
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


def run_all(args, size: dict, figures: dict) -> list[dict]:
    results = figures.setdefault("runs", [])
    jobs = [(stage, method, "plain") for stage in args.stages for method in args.methods]
    jobs += [(2, method, "ckpt+accum") for method in args.methods if 2 in args.stages and "ckpt+accum" in args.variants]
    for stage, method, variant in jobs:
        command = [sys.executable, os.path.abspath(__file__), "one", "--method", method, "--stage", str(stage),
                   "--variant", variant, "--data", str(args.data)] + (["--tiny"] if args.tiny else [])
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:  # one slow run must not cost the figures of the others
            print(f"ZeRO-{stage} {method} {variant}: TIMED OUT after {args.timeout:.0f} s", flush=True)
            continue
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"ZeRO-{stage} {method} {variant}: FAILED (exit {proc.returncode})\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}",
                  flush=True)
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        results.append(result)
        save(args, figures)
        print(f"ZeRO-{stage} {method:5s} {variant:10s} on {result['device']}: peak {result['peak_mb']:9.1f} MB "
              f"(timed steps {result['train_peak_mb']:9.1f} MB)  {result['tokens_per_s']:10.1f} tokens/s  "
              f"trainable {result['trainable']:,} of {result['params']:,}  loss {result['final_loss']}", flush=True)
    return results


def harness_vs_plain(args, figures: dict) -> int:
    """The A/B of benchmarks/bench_harness_vs_plain.py on this machine (bf16 on CUDA), real GSM8K rows."""
    size = "tiny" if args.tiny else "gpu"
    command = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_harness_vs_plain.py"),
               "--size", size, "--data", str(args.data), "--steps", "2" if args.tiny else "20",
               "--warmup", "1" if args.tiny else "3", "--block", "1" if args.tiny else "5"]
    if not args.tiny:
        command += ["--precision", "bf16"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout * 2)
    except subprocess.TimeoutExpired:
        print(f"harness vs plain: TIMED OUT after {args.timeout * 2:.0f} s", flush=True)
        return 1
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("RESULT", "harness vs", "lowest"))]
    print("\n".join(lines), flush=True)
    figures["harness_vs_plain"] = lines
    save(args, figures)
    if proc.returncode:
        print(f"harness vs plain: FAILED (exit {proc.returncode})\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}", flush=True)
    return proc.returncode


def print_ratios(results: list[dict]) -> None:
    by = {(r["stage"], r["method"]): r for r in results if r.get("variant", "plain") == "plain"}
    for stage in sorted({r["stage"] for r in results}):
        for a, b in (("bone", "lora"), ("bat", "bone")):
            if (stage, a) in by and (stage, b) in by:
                x, y = by[stage, a], by[stage, b]
                print(f"ZeRO-{stage} {a.capitalize()}/{b.capitalize()}: peak {x['peak_mb'] / y['peak_mb']:.3f}x  "
                      f"tokens/s {x['tokens_per_s'] / y['tokens_per_s']:.3f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare", "run", "one"])
    parser.add_argument("--out", type=Path, default=Path(".gpucheck"), help="prepare: where the tokenized data goes")
    parser.add_argument("--examples", type=int, default=2048, help="prepare: GSM8K train examples to tokenize")
    parser.add_argument("--data", type=Path, default=Path(".gpucheck"), help="the folder `prepare` wrote")
    parser.add_argument("--tiny", action="store_true", help="hidden 64 x 2 layers, 2 steps: the CPU dry run")
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--method", choices=METHODS, help="one: the method")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="run: the methods")
    parser.add_argument("--stage", type=int)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="plain")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS),
                        help="run: which variants (ckpt+accum runs at ZeRO-2 only)")
    parser.add_argument("--no-ab", action="store_true", help="run: skip the harness-vs-plain-loop A/B")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per (stage, method) process")
    parser.add_argument("--json", type=Path, help="run: write all figures here")
    args = parser.parse_args()
    size = TINY if args.tiny else FULL
    if args.command == "prepare":
        prepare(args.out, args.examples)
    elif args.command == "one":
        print("RESULT " + json.dumps(one(args.method, args.stage, size, args.data, args.variant)), flush=True)
    else:
        print(f"gpu check: {'tiny (dry run)' if args.tiny else 'full'} size {size}", flush=True)
        figures: dict = {"size": size}
        ab = 0 if args.no_ab else harness_vs_plain(args, figures)
        results = run_all(args, size, figures)
        print_ratios(results)
        expected = len(args.methods) * (len(args.stages) + (2 in args.stages and "ckpt+accum" in args.variants))
        return 0 if len(results) == expected and ab == 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
