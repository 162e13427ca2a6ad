"""The fit loop: optimizer steps over the sampler's batches until the budget or a divergence.

    python -m pytest -q tests/test_runner.py -k bitwise

All that the loop carries from one step to the next is in `FitState` (step, sampler position, step
log, outcome, training time), so a checkpoint of the state plus the engine continues the run exactly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from disha_bench.analysis import convergence
from disha_bench.config.suite import TrainingConfig
from disha_bench.contracts import events
from disha_bench.contracts.results import COMPLETE, DIVERGED, StepLog
from disha_bench.tasks.base import IGNORE_INDEX, collate
from disha_bench.training import distributed
from disha_bench.training.sampler import GlobalBatches

SLOWDOWN_ENV = "DISHA_BENCH_TEST_SLOWDOWN"
"""Test hook, below the configuration: `<method label>=<factor>` (e.g. `bat=1.5`) makes every
training step of that method's runs `factor` times as long, as slower code would: busy work inside
the timed step until the step's CPU time is `factor` times what it was (on one thread its wall time
too), so that tests can prove `check` sees a slower method. Never set it outside tests."""
_slowdown = 1.0


def set_test_slowdown(method_label: str) -> None:
    """Read SLOWDOWN_ENV for this process's method (called once per worker at set-up)."""
    global _slowdown
    label, _, factor = os.environ.get(SLOWDOWN_ENV, "").partition("=")
    _slowdown = float(factor) if label == method_label and factor else 1.0


@dataclass
class FitState:
    """Everything the loop carries between steps."""

    sampler: GlobalBatches
    """The data order and where it stands."""
    step: int = 0
    """Optimizer steps done."""
    steps: list[StepLog] = field(default_factory=list)
    """One entry per optimizer step done."""
    status: str = COMPLETE
    """COMPLETE while training goes on; DIVERGED when the loss exploded; BUDGET_STOPPED when
    training.max_time was spent."""
    error: str | None = None
    """Why training stopped early, else None."""
    stopped_at_step: int | None = None
    """Step at which training stopped early, else None."""
    train_time_s: float = 0.0
    """Seconds spent in optimizer steps (what a user pays; anything measured between steps excluded),
    summed over resumed segments."""
    resumed_from_step: int | None = None
    """Step of the checkpoint this process resumed from (resume.FitControl); None: from the start."""

    @property
    def tokens(self) -> int:
        """Training tokens so far, all ranks."""
        return sum(s.tokens for s in self.steps)


def fit(engine, features: list[dict], pad_id: int, state: FitState, training: TrainingConfig, device,
        name: str, between_steps: Callable[[FitState], bool | None] | None = None) -> FitState:
    """Train from `state.step` to `training.max_steps`; `between_steps(state)` runs after each step,
    outside the timed part (held-out evaluation, checkpoints), and ends training when it returns True
    (the time budget; see resume.FitControl)."""
    engine.train()
    for step in range(state.step + 1, training.max_steps + 1):
        started = time.perf_counter()
        micro_batches = [collate([features[i] for i in state.sampler.next()], pad_id) for _ in range(training.grad_accum)]
        log = train_step(engine, micro_batches, step, device, token_weighted=training.loss_weighting == "token")
        state.steps.append(log)
        state.step = step
        if distributed.rank() == 0:  # the runner draws the run's progress from these events
            events.emit_step(name, log, training.max_steps)
        diverged = convergence.is_diverged(log.loss, state.steps[0].loss, training.divergence_factor)
        state.train_time_s += time.perf_counter() - started
        if diverged:
            state.status, state.stopped_at_step = DIVERGED, step
            state.error = f"diverged at step {step}: loss {log.loss} (first loss {state.steps[0].loss:.4f})"
            distributed.log(f"{name}: {state.error}")
            break
        if between_steps is not None:
            stop = between_steps(state)
            engine.train()
            if stop:
                break
    return state


def train_step(engine, micro_batches: list[dict], step: int, device, token_weighted: bool = False) -> StepLog:
    """One optimizer step over the micro-batches (gradient accumulation), logged across ranks.

    The loss is the mean over the micro-batches that have a supervised token (one without any - only
    possible with hand-made features; encoding drops such examples - adds a zero gradient and no NaN),
    or with `token_weighted` the mean over every supervised token of the step on all ranks (HF
    Trainer's, the DiSHA authors'): each micro-batch's mean is weighted by its share of those tokens,
    times accumulation x ranks, which DeepSpeed's backward and gradient averaging divide out again."""
    start, cpu_start = time.perf_counter(), time.process_time()
    lr = engine.get_lr()[0]
    terms = [loss_terms(batch["labels"]) for batch in micro_batches]
    if token_weighted:  # one small collective per step: every rank's supervised tokens
        step_terms = distributed.all_reduce_sum([float(sum(terms))], device)[0]
        scale = len(micro_batches) * distributed.world_size() / max(step_terms, 1.0)
    losses, weights, tokens = [], [], 0
    for batch, count in zip(micro_batches, terms):
        tokens += int(batch["attention_mask"].sum())  # counted on the host: no device sync per micro-batch
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        output = engine(**batch)
        # Every rank still runs forward and backward (ZeRO reduces gradients over all of them).
        loss = output.loss if count > 0 else output.logits.sum() * 0.0
        engine.backward(loss * (count * scale) if token_weighted and count > 0 else loss)
        engine.step()
        if count > 0:
            losses.append(loss.detach())
            weights.append(count if token_weighted else 1)
    # One device-to-host copy per step (a GPU keeps queueing work meanwhile); the same float64
    # arithmetic, in the same order, as reading each micro-batch's loss as it came.
    values = torch.stack(losses).tolist() if losses else []
    loss_sum = sum(value * weight for value, weight in zip(values, weights))
    loss_sum, all_tokens, counted = distributed.all_reduce_sum([loss_sum, tokens, sum(weights)], device)
    if not counted:
        raise ValueError(f"step {step}: no supervised token in any micro-batch of any rank")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if _slowdown > 1.0:
        until = time.process_time() + (time.process_time() - cpu_start) * (_slowdown - 1.0)
        while time.process_time() < until:
            pass
    norm = engine.get_global_grad_norm()
    return StepLog(step, loss_sum / counted, lr, float(norm) if norm is not None else None, int(all_tokens), time.perf_counter() - start)


def loss_terms(labels: torch.Tensor) -> int:
    """How many terms the model's mean loss averages: the supervised tokens after the first position
    (causal LM: labels are shifted by one) or the examples (classification / regression heads)."""
    if labels.dim() == 2 and labels.dtype == torch.long:
        return int((labels[:, 1:] != IGNORE_INDEX).sum())
    return int(labels.shape[0])
