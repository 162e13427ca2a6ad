"""`disha-bench plan`: what a suite will cost, before anyone books a cluster.

    disha-bench plan suites/nlg.yaml [--nproc 8 | --hostfile hosts.txt] [--set KEY=VALUE ...]
    disha-bench plan suites/smoke.yaml --measure [--measure-steps 3] [--data-dir DIR]

Offline (no model, no data): one row per run with its optimizer steps, global batch, training
examples, epochs over `train_limit`, and an upper bound on the training tokens (steps x global
batch x max_length: every sequence at full length). With `--measure`, each (task, method) is
built once on this machine (the suite's model, dtype and method, on CUDA when there is one) and a
few optimizer steps on the task's real, tokenized examples are timed - the per-rank batch and
accumulation of the suite, after one untimed warm-up step - giving the real tokens per step and
an estimated training time per run (step time x max_steps; data-parallel ranks are assumed to
keep the one-rank step time, so on several ranks add communication). Evaluation is not included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class PlannedRun:
    """One row of the plan."""

    run_id: str
    """The run's stable id, as `disha-bench run` names its result."""
    steps: int
    """Optimizer steps (training.max_steps)."""
    global_batch: int
    """Sequences per optimizer step: batch_size x grad_accum x ranks."""
    token_bound: int
    """Upper bound on training tokens: steps x global batch x max_length."""
    epochs: float | None
    """Passes over the training set, when train_limit states its size; else None."""
    measured: "Measurement | None" = None
    """Filled by --measure."""


@dataclass
class Measurement:
    """Timed optimizer steps of one (task, method) on this machine."""

    step_s: float
    """Median seconds per optimizer step (all accumulation micro-batches, one rank)."""
    tokens_per_step: float
    """Mean real (unpadded) tokens per optimizer step on one rank."""
    device: str
    """Where it was measured."""


def plan_runs(suite, world: int, file: str | None = None) -> list[PlannedRun]:
    """The offline plan: every run of the suite on `world` ranks (unadapted reference runs train nothing).
    A run that would pass over its `train_limit` examples more than `max_epochs` times is refused."""
    from disha_bench.config.batching import check_epochs
    from disha_bench.config.expansion import expand_runs

    rows = []
    for run in expand_runs(suite, world, file):
        training = run.training
        steps = 0 if run.is_unadapted else training.max_steps
        global_batch = training.batch_size * training.grad_accum * world
        limit = run.task.train_limit
        if limit and steps:
            check_epochs(training, world, limit, file)
        rows.append(PlannedRun(
            run_id=run.run_id, steps=steps, global_batch=global_batch,
            token_bound=steps * global_batch * training.max_length,
            epochs=steps * global_batch / limit if limit else None,
        ))
    return rows


def format_plan(suite, rows: list[PlannedRun], world: int) -> str:
    from disha_bench.config.batching import for_ranks

    t = for_ranks(suite.training, world)
    lines = [f"suite {suite.name}: {len(rows)} runs on {world} rank(s), global batch {t.batch_size} x "
             f"{t.grad_accum} x {world} = {t.batch_size * t.grad_accum * world}, max_length {t.max_length}",
             f"{'run':44s} {'steps':>7s} {'epochs':>7s} {'tokens <=':>15s} {'tokens (meas.)':>15s} {'est. time':>10s}"]
    for row in rows:
        m = row.measured
        epochs = f"{row.epochs:.2f}" if row.epochs is not None else "-"
        real = f"{m.tokens_per_step * world * row.steps:,.0f}" if m else "-"
        when = _duration(m.step_s * row.steps) if m else "-"
        lines.append(f"{row.run_id:44s} {row.steps:7d} {epochs:>7s} {row.token_bound:15,d} {real:>15s} {when:>10s}")
    total_time = sum(r.measured.step_s * r.steps for r in rows if r.measured)
    lines.append(f"{'total':44s} {sum(r.steps for r in rows):7d} {'':>7s} {sum(r.token_bound for r in rows):15,d} "
                 f"{'':>15s} {_duration(total_time) if total_time else '-':>10s}")
    measured = next((r.measured for r in rows if r.measured), None)
    if measured:
        lines.append(f"measured on {measured.device}; training only, evaluation not included")
    return "\n".join(lines)


def power_lines(suite) -> list[str]:
    """The minimum detectable effect of the suite's seed count, from stated prior spreads: each
    compared method has two primary comparisons with the reference (held-out loss, steps to target)."""
    from disha_bench.analysis.verdicts import prior_lines

    return prior_lines(len(suite.seeds), 2 * max(1, len(suite.methods) - 1))


PAPER_PEAK_GB = {("meta-llama/Llama-2-7b-hf", "lora"): 22.3, ("meta-llama/Llama-2-7b-hf", "bone"): 20.2}
"""Peak GB per GPU in the DiSHA paper's Table 8 (Llama-2-7B), as issue 23 and suites/nlg.yaml quote it."""


def memory_lines(suite, world: int, device_tflops: float, mfu: float) -> list[str]:
    """Per-GPU peak memory and time of each method (running/memory_model), one line per method label."""
    from disha_bench import models, tasks
    from disha_bench.config.batching import for_ranks
    from disha_bench.config.expansion import expand_runs
    from disha_bench.running import memory_model
    from disha_bench.running.activation_trace import saved_bytes
    from disha_bench.training.recipe import resolve_method

    config = models.architecture_config(suite.model.name)
    if config is None:
        return [f"per-GPU memory: not modelled, the configuration of '{suite.model.name}' is not known offline"]
    causal = {t.name for t in suite.tasks if tasks.REGISTRY.get(t.name).head == "causal_lm"}
    if not causal:
        return ["per-GPU memory: modelled for causal-LM tasks only (this suite has none)"]
    t = for_ranks(suite.training, world)
    bucket = ((t.deepspeed or {}).get("zero_optimization") or {}).get("reduce_bucket_size", memory_model.DEFAULT_REDUCE_BUCKET)
    setting = memory_model.Setting(world, t.zero_stage, t.precision, t.batch_size, t.max_length,
                                   t.gradient_checkpointing, int(bucket))
    meta = memory_model.meta_model(config)
    tokens_per_step = t.batch_size * t.grad_accum * t.max_length
    lines = [f"per-GPU memory and time (first principles, running/memory_model.py; every row at max_length "
             f"{t.max_length}): {world} rank(s), ZeRO-{t.zero_stage}, {t.precision}, micro-batch {t.batch_size}, "
             f"checkpointing {'on' if t.gradient_checkpointing else 'off'}; time at an assumed {mfu:.0%} of "
             f"{device_tflops:,.0f} TFLOP/s",
             f"{'method':14s} {'trainable':>12s} {'weights':>8s} {'optim.':>7s} {'ZeRO':>6s} {'activ.':>7s} "
             f"{'loss':>6s} {'peak GB':>8s} {'paper GB':>8s} {'s/step':>7s} {'run':>8s}"]
    done: set[str] = set()
    for run in expand_runs(suite, world):
        if run.is_unadapted or run.method.label in done or run.task.name not in causal:
            continue
        done.add(run.method.label)
        method, _ = resolve_method(meta, run)
        params, trainable = memory_model.counts(config, method, meta)
        saved = saved_bytes(config, method, t.precision, t.zero_stage).per_token_per_layer
        e = memory_model.estimate(config, params, trainable, saved, setting)
        step = memory_model.step_seconds(e, tokens_per_step, device_tflops * 1e12, mfu)
        paper = PAPER_PEAK_GB.get((suite.model.name, run.method.name))
        lines.append(f"{run.method.label:14s} {trainable:12,d} {e.weights / 1024:7.1f}G {e.optimizer / 1024:6.2f}G "
                     f"{e.zero_buffers / 1024:5.2f}G {e.activations / 1024:6.2f}G {e.loss / 1024:5.2f}G "
                     f"{e.peak * 2**20 / 1e9:8.1f} {paper if paper else '-':>8} {step:7.2f} {_duration(step * t.max_steps):>8s}")
    return lines


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def measure(suite, rows: list[PlannedRun], data_dir: str | None, steps: int) -> None:
    """Time `steps` optimizer steps of each (task, method label); every seed's row gets the figure."""
    from disha_bench.config.expansion import expand_runs

    cache: dict[tuple[str, str], Measurement] = {}
    for row, run in zip(rows, expand_runs(suite, 1)):
        if run.is_unadapted:
            continue
        key = (run.task.name, run.method.label)
        if key not in cache:
            cache[key] = time_steps(run.model_copy(update={"data_dir": data_dir}), steps)
            print(f"measured {key[0]}/{key[1]}: {cache[key].step_s:.3f} s per step, "
                  f"{cache[key].tokens_per_step:,.0f} tokens per step per rank", flush=True)
        row.measured = cache[key]


def time_steps(run, steps: int) -> Measurement:
    """One warm-up and `steps` timed optimizer steps of the run's model, method and data (plain AdamW),
    set up exactly as the training recipe sets up a run."""
    import statistics

    import torch

    from disha_bench.tasks.base import collate
    from disha_bench.training.recipe import load_adapted_model
    from disha_bench.training.setup import load_task_data

    training = run.training
    needed = training.batch_size * training.grad_accum * (steps + 1)
    limit = min(run.task.train_limit or needed, needed)
    run = run.model_copy(update={"task": run.task.model_copy(update={"train_limit": limit})})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_task_data(run)
    model, _, _ = load_adapted_model(run, data)
    model.to(device)
    if training.precision == "bf16":
        model.to(torch.bfloat16)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=training.lr)
    features = list(data.features)
    while len(features) < needed:  # a small training set: cycle it
        features += features[: needed - len(features)]
    micro = [features[i : i + training.batch_size] for i in range(0, needed, training.batch_size)]
    times, tokens = [], []
    model.train()
    for step in range(steps + 1):
        started, count = time.perf_counter(), 0
        for chunk in micro[step * training.grad_accum : (step + 1) * training.grad_accum]:
            batch = {k: v.to(device) for k, v in collate(chunk, data.tokenizer.pad_token_id).items()}
            model(**batch).loss.backward()
            count += int(batch["attention_mask"].sum())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # step 0 warms up allocators and kernels
            times.append(time.perf_counter() - started)
            tokens.append(count)
    return Measurement(statistics.median(times), sum(tokens) / len(tokens), device.type)
