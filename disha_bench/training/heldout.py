"""The held-out convergence curve: the loss of a fixed set of examples, from step 0 to the last step.

    python -m pytest -q tests/test_heldout.py

The set is the task's `heldout(n)` (validation split, test split, canonical solutions or extra
generated examples: never trained on, the same for every method and seed). It is measured on the
unadapted model (step 0), after every one of the first `evaluation.heldout_dense_steps` steps
(default: one `heldout_every` interval), where early targets are crossed, then every
`evaluation.heldout_every` steps (default max_steps // 10) and at the last step. Causal LM: mean
over all supervised tokens of the set (token-weighted); heads: mean cross-entropy / MSE per example.
Each point also keeps every example's own loss (token-weighted within the example), in the order of
the set's example ids, so that analysis can resample examples. Every rank evaluates its shard (padded so that all ranks run the
same number of forwards: ZeRO-3 needs every rank in every forward) and the sums are all-reduced.
Batches are the training micro-batch size, so a held-out forward never needs more memory than a
training step. Its time is counted apart: training time and throughput exclude it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from disha_bench.contracts.results import HeldOut, HeldOutPoint
from disha_bench.tasks.base import IGNORE_INDEX, collate
from disha_bench.training import distributed
from disha_bench.training.loop import FitState, loss_terms


def default_every(max_steps: int) -> int:
    """max_steps // 10 (at least 1): ten points after step 0."""
    return max(1, max_steps // 10)


@dataclass(frozen=True)
class Schedule:
    """When the held-out loss is measured: step 0, every step up to `dense_steps`, then every
    `every` steps, and the last step."""

    dense_steps: int
    every: int

    @classmethod
    def of(cls, evaluation, max_steps: int) -> "Schedule":
        """The suite's schedule: `heldout_every` (default max_steps // 10) after a dense start of
        `heldout_dense_steps` steps (default: one such interval)."""
        every = evaluation.heldout_every or default_every(max_steps)
        dense = evaluation.heldout_dense_steps
        return cls(dense_steps=every if dense is None else dense, every=every)

    def is_due(self, step: int) -> bool:
        return step <= self.dense_steps or step % self.every == 0

    def describe(self) -> str:
        dense = f"every step to {self.dense_steps}, then " if self.dense_steps > 0 else ""
        return f"step 0, {dense}every {self.every}, and the last step"


def example_losses(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Each row's own loss, as the model's mean loss weighs it: causal LM the mean over the row's
    supervised tokens (shifted by one), classification the cross-entropy, regression the squared error."""
    logits = logits.float()
    if labels.dim() == 2 and labels.dtype == torch.long:
        targets = labels[:, 1:]
        tokens = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        counts = (targets != IGNORE_INDEX).sum(1)
        return [float(s / c) if c else float("nan") for s, c in zip(tokens.sum(1), counts)]
    if labels.dtype == torch.long:
        return F.cross_entropy(logits, labels, reduction="none").tolist()
    return ((logits.reshape(labels.shape[0], -1)[:, 0] - labels.float()) ** 2).tolist()


@torch.no_grad()
def heldout_sums(model, features: list[dict], batch_size: int, pad_id: int, device,
                 per_example: list[float] | None = None) -> tuple[float, int]:
    """(summed loss, number of loss terms) of this rank's shard: supervised tokens for causal LM,
    examples for heads. All ranks run the same number of forwards; padding forwards count nothing.
    `per_example`, when given, receives the shard's examples' own losses in shard order."""
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
        output = model(**batch)
        loss = output.loss
        if per_example is not None and chunk:
            per_example += example_losses(output.logits, batch["labels"])
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


def heldout_losses(model, features: list[dict], batch_size: int, pad_id: int, device) -> tuple[float, list[float]]:
    """The held-out loss over all ranks, and every example's own loss in the order of `features`."""
    mine: list[float] = []
    total, count = distributed.all_reduce_sum(list(heldout_sums(model, features, batch_size, pad_id, device, mine)), device)
    world = distributed.world_size()
    shards = distributed.gather_objects(mine)
    ordered = [shards[i % world][i // world] for i in range(len(features))]  # rank r held features[r::world]
    return (total / count if count else float("nan")), ordered


class HeldOutCurve:
    """Measures the held-out loss at the steps of its `Schedule` and at the last step (call it with
    the fit state between steps, and `finish` after fit)."""

    def __init__(self, model, features: list[dict], pad_id: int, device, *, batch_size: int, schedule: Schedule,
                 max_steps: int, source: str, example_ids: list[str] | None = None):
        self.model, self.features, self.pad_id, self.device = model, features, pad_id, device
        self.batch_size, self.max_steps, self.schedule = batch_size, max_steps, schedule
        self.curve = HeldOut(n_examples=len(features), source=source, every=schedule.every,
                             example_ids=example_ids, schedule=schedule.describe())

    def measure(self, step: int, train_time_s: float, tokens: int) -> float:
        started = time.perf_counter()
        loss, per_example = heldout_losses(self.model, self.features, self.batch_size, self.pad_id, self.device)
        self.curve.points.append(HeldOutPoint(step=step, loss=loss, train_time_s=train_time_s, tokens=tokens,
                                              per_example=per_example))
        self.curve.eval_time_s += time.perf_counter() - started
        distributed.log(f"held-out loss at step {step}: {loss:.4f}")
        return loss

    def __call__(self, state: FitState) -> None:
        if self.schedule.is_due(state.step) or state.step == self.max_steps:
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
