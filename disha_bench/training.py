"""One run, top to bottom: model + adapter, DeepSpeed ZeRO training, evaluation, one result file.

The suite runner starts this module once per run, on one rank or many:

    python -m disha_bench.training results/smoke/.runs/<run-id>.spec.json
    torchrun --nproc_per_node 2 -m disha_bench.training <spec.json>

The spec is a resolved run configuration (see suite.expand_runs) plus where to write. Rank 0
writes the result atomically at the very end, so a killed run leaves no result behind.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
import statistics
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from disha_bench import distributed

if TYPE_CHECKING:
    from disha_bench.results import StepLog

LOG_PREFIX = "[disha]"


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    started = time.time()
    distributed.ensure_single_process_env()
    if "DS_ACCELERATOR" not in os.environ and not _cuda():
        os.environ["DS_ACCELERATOR"] = "cpu"
    from disha_bench.results import FAILED, RunResult, write_result

    try:
        result = train_and_evaluate(spec, started)
        code = 0
    except Exception as err:  # the run failed: record why, keep the suite going
        traceback.print_exc()
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        result = RunResult(run=_run_info(spec, FAILED, reason, started))
        code = 1
    if distributed.rank() == 0:
        result.meta = collect_meta(spec.get("command", ""))
        write_result(Path(spec["result_path"]), result)
    return code


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def device_is_cpu() -> bool:
    return os.environ.get("DS_ACCELERATOR") == "cpu"


def log(message: str) -> None:
    if distributed.rank() == 0:
        print(f"{LOG_PREFIX} {message}", flush=True)


def train_and_evaluate(spec: dict[str, Any], started: float):
    import deepspeed
    import numpy as np
    import torch
    from deepspeed.accelerator import get_accelerator

    from disha_bench import convergence, methods, models, tasks
    from disha_bench.memory import PeakMemory
    from disha_bench.results import COMPLETE, DIVERGED, Memory, StepLog, Throughput, Training
    from disha_bench.tasks.base import EvalSettings, collate

    seed, train_cfg, method = spec["seed"], spec["training"], spec["method"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device_is_cpu():
        distributed.skip_cpu_shm_build()
    deepspeed.init_distributed(verbose=False)
    rank, world = distributed.rank(), distributed.world_size()
    device = torch.device(get_accelerator().device_name(int(os.environ.get("LOCAL_RANK", 0))))

    # ---- data, model, adapter ------------------------------------------------------------
    task = tasks.get(spec["task"]["name"])
    train_records, eval_records = task.load(spec["task"], spec.get("data_dir"))
    tokenizer = models.load_tokenizer(spec["model"]["name"])
    model = models.load_model(spec["model"]["name"], task.head, task.num_labels, spec["model"]["dtype"], spec["model"].get("revision"))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    params, matching = resolve_method_params(model, spec)
    model = methods.apply(model, method["name"], **params)
    if train_cfg["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    trainable = methods.count_trainable(model)
    total = sum(p.numel() for p in model.parameters())
    log(f"{spec['run_id']}: {method['label']} trainable {trainable:,} / {total:,}")
    features = [task.encode(r, tokenizer, train_cfg["max_length"]) for r in train_records]
    if not features:
        raise ValueError("the task has no training examples")

    # ---- DeepSpeed engine ----------------------------------------------------------------
    groups = methods.optimizer_param_groups(model, method["name"], params, train_cfg["lr"], train_cfg["weight_decay"])
    optimizer = torch.optim.AdamW(groups, lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(train_cfg))
    ds_config = deepspeed_config(train_cfg, world)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    if train_cfg["zero_stage"] == 3:
        methods.after_zero3_init(engine.module, method["name"])

    # ---- training loop -------------------------------------------------------------------
    # The imports left hundreds of thousands of long-lived objects; a full garbage collection
    # walks them all (seconds on a slow CPU) and would land inside a timed step.
    gc.freeze()
    memory = PeakMemory(device)
    memory.start()
    train_baseline = memory.baseline_mb
    batches = GlobalBatches(len(features), train_cfg["batch_size"], world, rank, seed)
    steps: list[StepLog] = []
    status, error, stopped = COMPLETE, None, None
    engine.train()
    train_start = time.perf_counter()
    for step in range(1, train_cfg["max_steps"] + 1):
        micro_batches = [collate([features[i] for i in batches.next()], tokenizer.pad_token_id) for _ in range(train_cfg["grad_accum"])]
        steps.append(train_step(engine, micro_batches, step, device))
        mean_loss, lr = steps[-1].loss, steps[-1].lr
        if step == 1 or step % max(1, train_cfg["max_steps"] // 10) == 0:
            log(f"{spec['run_id']}: step {step}/{train_cfg['max_steps']} loss {mean_loss:.4f} lr {lr:.2e}")
        if convergence.is_diverged(mean_loss, steps[0].loss, train_cfg["divergence_factor"]):
            status, stopped = DIVERGED, step
            error = f"diverged at step {step}: loss {mean_loss} (first loss {steps[0].loss:.4f})"
            log(f"{spec['run_id']}: {error}")
            break
    train_time = time.perf_counter() - train_start
    train_peaks = distributed.gather_objects([memory.peak_mb()])
    train_reserved = memory.peak_reserved_mb()

    # ---- evaluation ----------------------------------------------------------------------
    evaluation: dict[str, Any] = {}
    eval_time, eval_peak = 0.0, None
    if spec["evaluation"]["enabled"] and status == COMPLETE:
        memory.start()
        eval_start = time.perf_counter()
        evaluation = evaluate(engine.module, tokenizer, task, eval_records, spec, device, EvalSettings)
        eval_features = [task.encode(r, tokenizer, train_cfg["max_length"]) for r in eval_records[:VALIDATION_EXAMPLES]]
        if eval_features:
            evaluation["validation_loss"] = validation_loss(engine.module, eval_features, spec["evaluation"]["batch_size"], tokenizer.pad_token_id, device)
        eval_time = time.perf_counter() - eval_start
        eval_peak = memory.peak_mb()
        log(f"{spec['run_id']}: {evaluation}")

    if spec.get("adapter_dir") and status == COMPLETE:
        save_trained(engine, method["name"], Path(spec["adapter_dir"]), train_cfg["zero_stage"])

    from disha_bench.results import RunResult

    warmup = warmup_steps_excluded(len(steps))
    steady = steps[warmup:] or steps
    step_time = statistics.median(s.step_time_s for s in steady)
    tokens_per_s = statistics.median(s.tokens / s.step_time_s for s in steady)
    return RunResult(
        run=_run_info(spec, status, error, started),
        training=Training(
            trainable_params=trainable, total_params=total, method_params=params, matching=matching,
            steps=steps, stopped_at_step=stopped, deepspeed_config=ds_config,
        ),
        evaluation=evaluation,
        convergence=convergence.summarize(steps, spec["convergence"]["targets"], spec["convergence"]["ema"], budget=train_cfg["max_steps"]),
        memory=Memory(
            device=device.type, train_peak_mb=train_peaks[0][0], train_peak_reserved_mb=train_reserved,
            eval_peak_mb=eval_peak, baseline_mb=train_baseline, per_rank_train_peak_mb=[p[0] for p in train_peaks],
        ),
        throughput=Throughput(
            tokens_per_s=tokens_per_s, tokens_per_s_per_rank=tokens_per_s / world, step_time_s=step_time,
            warmup_steps_excluded=warmup if len(steps) > warmup else 0, train_time_s=train_time, eval_time_s=eval_time,
        ),
    )


VALIDATION_EXAMPLES = 64
"""Evaluation records whose teacher-forced loss is recorded as `validation_loss`."""


def validation_loss(model, features: list[dict], batch_size: int, pad_id: int, device) -> float:
    """Mean loss over `features` (example-weighted), on every rank alike (ZeRO-3 needs all in forward)."""
    import torch

    from disha_bench.tasks.base import collate

    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            total += float(model(**batch).loss) * len(chunk)
    return total / len(features)


def resolve_method_params(model, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The method's params, with a rank chosen by `match_params` against another method of the suite."""
    from disha_bench import methods

    method = spec["method"]
    if "match_params" not in method["params"] or method["params"]["match_params"] is None:
        params = {k: v for k, v in method["params"].items() if k != "match_params"}
        return params, None
    table = {label: (entry["name"], entry["params"]) for label, entry in spec["methods_table"].items()}
    info = dict(methods.resolve_matching(model, table)[method["label"]])
    return info.pop("params"), info


def train_step(engine, micro_batches: list[dict], step: int, device) -> "StepLog":
    """One optimizer step over the micro-batches (gradient accumulation), logged across ranks."""
    import torch

    from disha_bench.results import StepLog

    start = time.perf_counter()
    lr = engine.get_lr()[0]
    loss_sum, tokens = 0.0, 0
    for batch in micro_batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        loss_sum += loss.item()
        tokens += int(batch["attention_mask"].sum())
    loss_sum, tokens = distributed.all_reduce_sum([loss_sum, tokens], device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    norm = engine.get_global_grad_norm()
    mean_loss = loss_sum / (len(micro_batches) * distributed.world_size())
    return StepLog(step, mean_loss, lr, float(norm) if norm is not None else None, int(tokens), time.perf_counter() - start)


class GlobalBatches:
    """Seeded order over the training set; every micro-step takes the next global micro-batch and
    this rank keeps its slice. One rank with batch 4 and two ranks with batch 2 see the same data."""

    def __init__(self, size: int, batch_size: int, world: int, rank: int, seed: int):
        self.size, self.batch_size, self.world, self.rank, self.seed = size, batch_size, world, rank, seed
        self.epoch, self.order, self.position = 0, self._shuffle(0), 0

    def _shuffle(self, epoch: int) -> list[int]:
        order = list(range(self.size))
        random.Random(self.seed * 100_003 + epoch).shuffle(order)
        return order

    def next(self) -> list[int]:
        take = self.batch_size * self.world
        picked: list[int] = []
        while len(picked) < take:
            if self.position == self.size:
                self.epoch += 1
                self.order, self.position = self._shuffle(self.epoch), 0
            count = min(take - len(picked), self.size - self.position)
            picked += self.order[self.position : self.position + count]
            self.position += count
        return picked[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


def lr_lambda(train_cfg: dict[str, Any]):
    """Linear warm-up to the peak, then constant, linear or cosine decay to zero at max_steps."""
    warmup, total, schedule = train_cfg["warmup_steps"], train_cfg["max_steps"], train_cfg["schedule"]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def deepspeed_config(train_cfg: dict[str, Any], world: int) -> dict[str, Any]:
    """The generated DeepSpeed config with the suite's free-form `deepspeed:` block merged over it."""
    config = {
        "train_micro_batch_size_per_gpu": train_cfg["batch_size"],
        "gradient_accumulation_steps": train_cfg["grad_accum"],
        "train_batch_size": train_cfg["batch_size"] * train_cfg["grad_accum"] * world,
        "gradient_clipping": train_cfg["grad_clip"] or 0.0,
        "zero_optimization": {"stage": train_cfg["zero_stage"]},
        "bf16": {"enabled": train_cfg["precision"] == "bf16"},
        "fp16": {"enabled": train_cfg["precision"] == "fp16"},
        # torch's AdamW needs no JIT build (DeepSpeed's fused Adam compiles for a minute on CPU).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000_000,
        "wall_clock_breakdown": False,
    }
    return merge(config, train_cfg.get("deepspeed") or {})


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def warmup_steps_excluded(n_steps: int) -> int:
    """Leading steps left out of throughput medians: allocator, JIT and cache warm-up."""
    return min(5, max(1, n_steps // 10)) if n_steps > 2 else 0


def evaluate(model, tokenizer, task, records: list[dict], spec: dict[str, Any], device, settings_cls) -> dict[str, Any]:
    """Every rank predicts its shard (padded to equal length: ZeRO-3 needs every rank in every
    forward), rank 0 scores all predictions in the original order."""
    world, rank = distributed.world_size(), distributed.rank()
    ev = spec["evaluation"]
    settings = settings_cls(
        batch_size=ev["batch_size"], max_new_tokens=ev["max_new_tokens"], num_fewshot=ev["num_fewshot"],
        synced_gpus=world > 1 and spec["training"]["zero_stage"] == 3,
    )
    per_rank = math.ceil(len(records) / world) if records else 0
    indices = list(range(rank, len(records), world))
    padded = indices + indices[-1:] * (per_rank - len(indices)) if indices else []
    predictions = task.predict(model, tokenizer, [records[i] for i in padded], settings) if padded else []
    keyed = list(zip(padded[: len(indices)], predictions[: len(indices)]))
    merged = sorted((pair for shard in distributed.gather_objects(keyed) for pair in shard), key=lambda p: p[0])
    ordered = [prediction for _, prediction in merged]
    metrics = task.score(ordered) if ordered else {}
    return {**metrics, "primary_metric": task.primary_metric, "n_examples": len(ordered)}


def save_trained(engine, method_name: str, target: Path, zero_stage: int) -> None:
    """Save the adapter (PEFT format, for the original checkpoint; the whole model for `full`). Under
    ZeRO-3 the trainable parameters are gathered first: a bare save_pretrained would write empty tensors."""
    import deepspeed

    from disha_bench import methods

    model = engine.module
    trainable = [p for p in model.parameters() if p.requires_grad]
    if zero_stage == 3:
        with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
            if distributed.rank() == 0:
                methods.save(model, method_name, target)
    elif distributed.rank() == 0:
        methods.save(model, method_name, target)
    if distributed.world_size() > 1:
        import torch

        torch.distributed.barrier()


def _run_info(spec: dict[str, Any], status: str, error: str | None, started: float):
    from disha_bench.results import RunInfo

    config = {k: spec[k] for k in ("model", "task", "method", "training", "evaluation", "seed", "world_size")}
    return RunInfo(
        run_id=spec["run_id"], suite=spec["suite"], task=spec["task"]["name"], method=spec["method"]["label"],
        seed=spec["seed"], status=status, error=error, config=config,
        started_at=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        wall_time_s=time.time() - started, world_size=distributed.world_size(),
    )


def collect_meta(command: str):
    """Versions, git state of this checkout and hardware, for the result's `meta` section."""
    import platform
    import subprocess

    import torch

    from disha_bench import __version__
    from disha_bench.results import Meta

    versions = {"python": platform.python_version(), "disha-bench": __version__}
    for name in ("torch", "transformers", "peft", "deepspeed"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # a missing optional library is recorded as absent
            versions[name] = "absent"
    repo = Path(__file__).resolve().parent.parent
    commit = dirty = None
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip() or None
        if commit:
            status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
            dirty = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    hardware: dict[str, Any] = {"cpu": _cpu_model(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        hardware["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        hardware["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return Meta(versions=versions, git_commit=commit, git_dirty=dirty, hardware=hardware, command=command)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
