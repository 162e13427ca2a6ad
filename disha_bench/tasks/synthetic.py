"""Generated tasks for the smoke suite: no download, no data directory, learnable in a few steps.

`synthetic-sentiment` is NLU-style (a two-class head); `synthetic-arith` is NLG-style (short
arithmetic word problems answered in GSM8K's `#### n` format and scored by exact match).
The data is generated from fixed seeds; the suite's `sample_seed` (by default the run seed) draws
the training subset, the held-out set and the evaluation sample from it.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from pydantic import Field

from disha_bench.contracts.metrics import share_of_examples
from disha_bench.tasks import gsm8k
from disha_bench.tasks.base import (
    EvalSettings,
    Task,
    TaskOptions,
    classify,
    encode_prompt_answer,
    encode_text_classification,
    generate,
    register,
    subsample,
)

_POSITIVE = "great wonderful delightful brilliant charming superb moving clever joyful stunning".split()
_NEGATIVE = "dull awful boring clumsy tedious dreadful bland painful messy shallow".split()
_SUBJECTS = "the film|this movie|the plot|the acting|the ending|the soundtrack|the script|the cast".split("|")
HELDOUT_SIZE = 512
"""Extra generated examples for the held-out loss (their own seed), before those that the training
subset also holds are removed: the templates are few, so the generators repeat themselves."""
HELDOUT_SOURCE = "extra generated examples (seed 3) that the training subset does not hold"
_TEMPLATES = ["{s} was {a}", "{s} felt {a} and {b}", "honestly , {s} is {a}", "i found {s} {a}"]


def unseen(candidates: list[dict], train: list[dict], key: str) -> list[dict]:
    """The candidates whose `key` no training record has, each once, in order."""
    seen = {r[key] for r in train}
    kept = []
    for record in candidates:
        if record[key] not in seen:
            seen.add(record[key])
            kept.append(record)
    return kept


def _sentiment_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = _POSITIVE if label else _NEGATIVE
        text = rng.choice(_TEMPLATES).format(s=rng.choice(_SUBJECTS), a=rng.choice(words), b=rng.choice(words))
        records.append({"text": text, "label": label})
    return records


class GeneratedOptions(TaskOptions):
    """The suite keys of a generated task: how many examples to generate."""

    train_size: int = Field(512, gt=0)
    """Generated training examples."""
    eval_size: int = Field(128, gt=0)
    """Generated evaluation examples."""


def _generated(task: Task, make: Callable[..., list[dict]], config: dict[str, Any], key: str) -> tuple[list[dict], list[dict]]:
    """Train and evaluation records from `make(n, seed=...)` (fixed seeds 1 and 2, so both splits
    are the same on every machine), each subsampled by the suite's limits; the held-out pool (seed 3)
    without the examples that training also holds (the templates repeat), in the sample seed's order
    (so each sample seed holds out its own examples)."""
    train = make(config["train_size"], seed=1)
    evaluation = make(config["eval_size"], seed=2)
    seed = config["sample_seed"]
    train = subsample(train, config["train_limit"], seed)
    task._heldout_pool = subsample(unseen(make(HELDOUT_SIZE, seed=3), train, key), None, seed)
    return train, subsample(evaluation, config["eval_limit"], seed)


class GeneratedTask(Task):
    """A task whose examples are generated (no data directory, no download)."""

    heldout_source = HELDOUT_SOURCE
    generate_records: Callable[..., list[dict]]
    """`generate_records(n, seed=...)`: the task's example generator."""
    text_key: str
    """The record key that identifies an example (held-out examples never repeat a training one)."""

    def load(self, config: dict[str, Any], data_dir: str | None) -> tuple[list[dict], list[dict]]:
        return _generated(self, type(self).generate_records, config, self.text_key)


@register
class SyntheticSentiment(GeneratedTask):
    name = "synthetic-sentiment"
    head = "sequence_classification"
    num_labels = 2
    primary_metric = "accuracy"
    metrics = (share_of_examples("accuracy", "share of generated sentences classified correctly"),)
    description = "generated two-class sentiment sentences (smoke test, offline)"
    Options = GeneratedOptions
    generate_records, text_key = staticmethod(_sentiment_records), "text"

    def encode(self, record: dict, tokenizer, max_length: int) -> dict:
        return encode_text_classification(tokenizer, record["text"], record["label"], max_length)

    def predict(self, model, tokenizer, records: Sequence[dict], settings: EvalSettings) -> list[dict]:
        predicted = classify(model, tokenizer, [r["text"] for r in records], settings, regression=False)
        return [{"label": r["label"], "prediction": int(p)} for r, p in zip(records, predicted)]

    def score(self, predictions: list[dict]) -> dict[str, float]:
        correct = sum(p["label"] == p["prediction"] for p in predictions)
        return {"accuracy": correct / max(len(predictions), 1)}


def _arith_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        question = f"Tom has {a} apples and buys {b} more. How many apples does he have now?"
        records.append({"question": question, "answer": f"He has {a} + {b} = {a + b} apples.\n#### {a + b}"})
    return records


class ArithOptions(GeneratedOptions):
    """synthetic-arith generates fewer evaluation problems: each one is a generation."""

    eval_size: int = Field(32, gt=0)
    """Generated evaluation examples."""


@register
class SyntheticArith(GeneratedTask):
    name = "synthetic-arith"
    head = "causal_lm"
    primary_metric = "exact_match"
    metrics = (share_of_examples("exact_match", "share of problems answered right (GSM8K's strict `#### n` match)"),)
    example_metrics = ("exact_match",)
    description = "generated addition word problems in GSM8K format (smoke test, offline)"
    Options = ArithOptions
    generate_records, text_key = staticmethod(_arith_records), "question"

    @staticmethod
    def prompt(record: dict) -> str:
        return f"Question: {record['question']}\nAnswer:"

    def encode(self, record: dict, tokenizer, max_length: int) -> dict[str, Any] | None:
        return encode_prompt_answer(tokenizer, self.prompt(record), " " + record["answer"], max_length)

    def predict(self, model, tokenizer, records: Sequence[dict], settings: EvalSettings) -> list[dict]:
        outputs = generate(model, tokenizer, [self.prompt(r) for r in records], settings, stop=["\n\n", "Question:"])
        return [{"target": gsm8k.reference(r["answer"]), "output": o} for r, o in zip(records, outputs)]

    def score(self, predictions: list[dict]) -> dict[str, float]:
        # GSM8K's strict match (lm-eval's `#### n` filter and normalisation), so smoke numbers
        # mean what gsm8k's exact_match_strict means.
        hits = sum(gsm8k.normalize(gsm8k.extract_strict(p["output"])) == p["target"] for p in predictions)
        return {"exact_match": hits / max(len(predictions), 1)}
