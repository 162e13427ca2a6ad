"""The held-out convergence curve: the loss of a fixed set of examples, from step 0 to the last step.

    python -m pytest -q tests/test_heldout.py

The set is the task's `heldout(n)` (validation split, test split, canonical solutions or extra
generated examples: never trained on, the same for every method and seed). It is measured on the
unadapted model (step 0), every `evaluation.heldout_every` steps (default max_steps // 10) and at
the last step. Causal LM: mean over all supervised tokens of the set (token-weighted); heads: mean
cross-entropy / MSE per example. Every rank evaluates its shard (padded so that all ranks run the
same number of forwards: ZeRO-3 needs every rank in every forward) and the sums are all-reduced.
Batches are the training micro-batch size, so a held-out forward never needs more memory than a
training step. Its time is counted apart: training time and throughput exclude it.
"""

from __future__ import annotations

import math
import time

import torch

from disha_bench.running import distributed
from disha_bench.analysis.results import HeldOut, HeldOutPoint
from disha_bench.tasks.base import collate
from disha_bench.training.loop import FitState, loss_terms


def default_every(max_steps: int) -> int:
    """max_steps // 10 (at least 1): ten points after step 0."""
    return max(1, max_steps // 10)


@torch.no_grad()
def heldout_sums(model, features: list[dict], batch_size: int, pad_id: int, device) -> tuple[float, int]:
    """(summed loss, number of loss terms) of this rank's shard: supervised tokens for causal LM,
    examples for heads. All ranks run the same number of forwards; padding forwards count nothing."""
    world, rank = distributed.world_size(), distributed.rank()
    shard = features[rank::world]
    per_rank = math.ceil(len(features) / world)
    n_batches = math.ceil(per_rank / batch_size)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for index in range(n_batches):
        chunk = shard[index * batch_size : (index + 1) * batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk or features[:1], pad_id).items()}
        loss = model(**batch).loss
        terms = loss_terms(batch["labels"]) if chunk else 0
        if terms:  # a batch without a supervised token has a NaN mean: it adds nothing
            total += float(loss) * terms
            count += terms
    model.train(was_training)
    return total, count


def heldout_loss(model, features: list[dict], batch_size: int, pad_id: int, device) -> float:
    """The held-out loss of `model` over `features`, over all ranks (NaN when nothing is supervised)."""
    total, count = distributed.all_reduce_sum(list(heldout_sums(model, features, batch_size, pad_id, device)), device)
    return total / count if count else float("nan")


class HeldOutCurve:
    """Measures the held-out loss at step 0, every `every` steps and at the last step (call it with
    the fit state between steps, and `finish` after fit)."""

    def __init__(self, model, features: list[dict], pad_id: int, device, *, batch_size: int, every: int,
                 max_steps: int, source: str):
        self.model, self.features, self.pad_id, self.device = model, features, pad_id, device
        self.batch_size, self.max_steps = batch_size, max_steps
        self.curve = HeldOut(n_examples=len(features), source=source, every=every)

    def measure(self, step: int, train_time_s: float, tokens: int) -> float:
        started = time.perf_counter()
        loss = heldout_loss(self.model, self.features, self.batch_size, self.pad_id, self.device)
        self.curve.points.append(HeldOutPoint(step=step, loss=loss, train_time_s=train_time_s, tokens=tokens))
        self.curve.eval_time_s += time.perf_counter() - started
        distributed.log(f"held-out loss at step {step}: {loss:.4f}")
        return loss

    def __call__(self, state: FitState) -> None:
        if state.step % self.curve.every == 0 or state.step == self.max_steps:
            self.measure(state.step, state.train_time_s, state.tokens)

    def finish(self, state: FitState) -> HeldOut:
        """The curve, with a point at the last step done (a run that stopped early included)."""
        if not self.curve.points or self.curve.points[-1].step != state.step:
            self.measure(state.step, state.train_time_s, state.tokens)
        return self.curve


def run_heldout_loss(model, result) -> float:
    """The held-out loss of `model` (e.g. a saved adapter reloaded on its base) on the held-out set of
    a finished run `result`, computed as the run computed it (one process, CPU)."""
    from disha_bench import models, tasks

    config = result.run.config
    task = tasks.get(config["task"]["name"])
    task.load(config["task"], None)
    tokenizer = models.load_tokenizer(config["model"]["name"])
    encoded = (task.encode(r, tokenizer, config["training"]["max_length"]) for r in task.heldout(result.heldout.n_examples))
    features = [f for f in encoded if f is not None]
    return heldout_loss(model, features, config["training"]["batch_size"], tokenizer.pad_token_id, torch.device("cpu"))
