"""Per-step overhead of the disha-bench training loop against a bare `deepspeed.initialize` loop.

    python benchmarks/bench_runner_overhead.py [--model tiny-llama] [--steps 40] [--batch 8] [--length 64]

Both loops drive the same DeepSpeed engine on the same model and batch, interleaved in blocks so
that drift of the machine hits both alike. The runner's step adds what a real run records:
collating the batch from features, the learning rate, loss and token counts reduced across ranks,
the gradient norm and the divergence check. Prints medians and their ratio (goal: <= 1.03).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--method", default="bone")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40, help="measured steps per loop")
    parser.add_argument("--block", type=int, default=5, help="steps per interleaved block")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--zero-stage", type=int, default=2)
    args = parser.parse_args()

    from disha_bench.training import distributed

    distributed.ensure_single_process_env()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import torch

    from disha_bench import methods, models
    from disha_bench.analysis import convergence
    from disha_bench.config.suite import TrainingConfig
    from disha_bench.tasks.base import collate
    from disha_bench.training.ds_config import deepspeed_config
    from disha_bench.training.loop import train_step

    torch.manual_seed(0)
    distributed.skip_cpu_shm_build()
    deepspeed.init_distributed(verbose=False)
    device = torch.device("cpu")
    tokenizer = models.load_tokenizer(args.model)
    model = methods.apply(models.load_model(args.model, "causal_lm"), args.method, r=args.r)
    vocab = model.config.vocab_size
    features = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, vocab, (args.batch, args.length)).tolist()]
    train_cfg = TrainingConfig(batch_size=args.batch, grad_accum=1, grad_clip=1.0, zero_stage=args.zero_stage, precision="fp32")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(train_cfg, 1))
    fixed_batch = collate(features, tokenizer.pad_token_id)

    def bare_step() -> float:
        start = time.perf_counter()
        loss = engine(**fixed_batch).loss
        engine.backward(loss)
        engine.step()
        return time.perf_counter() - start

    first_loss = None

    def runner_step(step: int) -> float:
        nonlocal first_loss
        start = time.perf_counter()
        log = train_step(engine, [collate(features, tokenizer.pad_token_id)], step, device)
        first_loss = first_loss or log.loss
        convergence.is_diverged(log.loss, first_loss, 4.0)
        return time.perf_counter() - start

    for step in range(3):  # warm-up: allocator, first optimizer state
        bare_step(), runner_step(step)
    bare, runner = [], []
    for block in range(args.steps // args.block):
        bare += [bare_step() for _ in range(args.block)]
        runner += [runner_step(block * args.block + i) for i in range(args.block)]
    bare_median, runner_median = statistics.median(bare), statistics.median(runner)
    print(f"model {args.model}, {args.method} r={args.r}, batch {args.batch}x{args.length}, ZeRO-{args.zero_stage}, "
          f"{len(bare)} steps each, torch threads {torch.get_num_threads()}")
    print(f"bare deepspeed loop   median step {bare_median * 1000:8.2f} ms")
    print(f"disha-bench runner    median step {runner_median * 1000:8.2f} ms")
    print(f"ratio runner / bare   {runner_median / bare_median:.3f}  (goal <= 1.03)")


if __name__ == "__main__":
    main()
