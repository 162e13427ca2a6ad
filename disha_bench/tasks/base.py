"""What a task is: where its examples come from, how they become training batches, how it is scored.

A task is a small class with class attributes and five methods; the runner calls them in order:

    train, evaluation = task.load(config, data_dir)          # raw records (dicts)
    features = [task.encode(r, tokenizer, max_length) for r in train]
    batch = collate(features, pad_id)                          # shared, below
    predictions = task.predict(model, tokenizer, evaluation_shard, eval_cfg)   # every rank its shard
    metrics = task.score(all_predictions)                      # rank 0

Two kinds of model head exist: `causal_lm` (generation tasks, loss on the answer tokens only) and
`sequence_classification` (NLU: a classification or regression head on an encoder or a decoder).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Sequence, TypeVar

import torch

from disha_bench.contracts.metrics import Metric, by_name
from disha_bench.core.registry import Registry
from disha_bench.core.schema import StrictModel

IGNORE_INDEX = -100


class TaskOptions(StrictModel):
    """A task's own suite keys beyond the common TaskConfig fields (none by default). Each task
    declares a subclass with a docstring per field; `disha-bench validate` checks a suite's values
    against it and `disha-bench list tasks` prints it."""


@dataclass
class EvalSettings:
    """The evaluation knobs a task's `predict` receives (the suite's `evaluation` section)."""

    batch_size: int = 16
    """Examples per forward / generate call."""
    max_new_tokens: int = 256
    """Generation budget per example."""
    num_fewshot: int = 0
    """Worked examples put before each question (generation tasks that support it)."""
    synced_gpus: bool = False
    """Set by the runner under ZeRO-3 with several ranks: every rank must keep calling forward."""
    engine: str = "hf"
    """`hf` or `vllm` (`tasks/vllm_engine.py`): who generates."""
    vllm_gpu_memory: float = 0.4
    """With `engine: vllm`, the share of the GPU vLLM may take."""
    vllm_python: str | None = None
    """With `engine: vllm`, the interpreter of vLLM's own environment; None: this one."""


class Task:
    """Base class: subclasses set the class attributes and implement load/encode/predict/score."""

    name: ClassVar[str]
    """Registry name used in suites."""
    head: ClassVar[str] = "causal_lm"
    """`causal_lm` or `sequence_classification`."""
    num_labels: ClassVar[int] = 0
    """Classes of a classification head; 1 means regression; 0 for causal LM tasks."""
    primary_metric: str
    """Headline metric reported in leaderboards; one of `metrics`. A class attribute that a task may set
    per instance in `load` (GSM8K's depends on its prompt)."""
    metrics: ClassVar[tuple[Metric, ...]] = ()
    """The declaration (direction, range, whether a count) of every metric `score` can report;
    each result records those it reports, and analysis reads them instead of guessing from names."""
    description: ClassVar[str] = ""
    """One line for `disha-bench list tasks`."""
    runs_code: ClassVar[bool] = False
    """Scoring executes model-written code in `disha_bench.evaluation.sandbox` (preflight checks the sandbox)."""
    Options: ClassVar[type[TaskOptions]] = TaskOptions
    """The typed model of the task's own suite keys."""
    options: ClassVar[dict[str, Any]] = {}
    """Those keys' defaults (derived from `Options`), the base of every resolved task config."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # model_construct: an option without a default (one the suite must give) has no default to list
        cls.options = cls.Options.model_construct().model_dump()

    heldout_source: ClassVar[str] = "validation split"
    """Where `heldout` records come from (recorded in each result's held-out curve)."""
    _heldout_pool: list[dict] | None = None
    """Set by `load`: labelled records never trained on, in a fixed (sample_seed) order."""

    def load(self, config: dict[str, Any], data_dir: str | None) -> tuple[list[dict], list[dict]]:
        """(train records, evaluation records), already limited and shuffled with the config's seed."""
        raise NotImplementedError

    def heldout(self, n: int) -> list[dict]:
        """After `load`: `n` labelled records for the held-out loss curve, never trained on and the
        same for every method (they depend on the data and `sample_seed` only, which is the run
        seed unless the suite fixes it)."""
        if self._heldout_pool is None:
            raise RuntimeError(f"{self.name}: call load() before heldout()")
        return self._heldout_pool[:n]

    def encode(self, record: dict, tokenizer, max_length: int) -> dict[str, Any] | None:
        """One training feature: `input_ids` (list) and `labels` (list for causal LM, number for heads);
        None when the example cannot be encoded whole within max_length (it is dropped and counted)."""
        raise NotImplementedError

    def predict(self, model, tokenizer, records: Sequence[dict], settings: EvalSettings) -> list[dict]:
        """One JSON-serialisable prediction per record, in order (must include what `score` needs)."""
        raise NotImplementedError

    def score(self, predictions: list[dict]) -> dict[str, float]:
        """Metrics over all predictions; must contain `primary_metric`."""
        raise NotImplementedError

    def declarations(self, reported: Iterable[str]) -> dict[str, Metric]:
        """{name: declaration} of the `reported` metrics; ValueError naming one this task does not declare."""
        declared = by_name(self.metrics)
        missing = [name for name in reported if name not in declared]
        if missing:
            raise ValueError(f"task '{self.name}' reports metric '{missing[0]}' but does not declare it "
                             f"(declared: {', '.join(declared) or 'none'}); add it to the task's `metrics`")
        return {name: declared[name] for name in reported}

    example_metrics: ClassVar[tuple[str, ...]] = ()
    """Metrics that are a mean over examples (exact match, pass@1): `score_examples` lists each
    example's own value, so analysis can pair methods example by example and resample examples."""

    def score_examples(self, predictions: list[dict]) -> tuple[dict[str, float], dict[str, list]]:
        """(metrics, per-example columns): `score`, plus each example's value of every
        `example_metrics` metric and, for classification predictions, `prediction` and `label` (corpus
        metrics such as MCC or F1 are recomputed from them on resamples). Tasks whose scoring is costly
        (the sandbox) override it to score once."""
        metrics = self.score(predictions)
        columns: dict[str, list] = {}
        if predictions and "label" in predictions[0] and "prediction" in predictions[0]:
            columns["prediction"] = [p["prediction"] for p in predictions]
            columns["label"] = [p["label"] for p in predictions]
            if "accuracy" in metrics:
                columns["accuracy"] = [float(p["prediction"] == p["label"]) for p in predictions]
        for name in self.example_metrics:
            columns[name] = [float(self.score([p])[name]) for p in predictions]
        return metrics, columns


def example_id(record: dict) -> str:
    """A stable id of a raw record: its own `id` / `task_id` when it has one, else a digest of its
    content (the same on every machine, for every method and seed)."""
    own = record.get("id", record.get("task_id"))
    if own is not None:
        return str(own)
    return hashlib.sha1(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:12]


def example_ids(records: Sequence[dict]) -> list[str]:
    """`example_id` of each record; a repeated one (generated data repeats itself) gets `#2`, `#3`, ..."""
    seen: dict[str, int] = {}
    ids = []
    for record in records:
        base = example_id(record)
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return ids


def encode_prompt_answer(tokenizer, prompt: str, answer: str, max_length: int, eos: bool = True) -> dict[str, list[int]] | None:
    """Causal-LM feature with the loss on the answer (and EOS, unless `eos` is False: an answer that
    ends in an end marker of its own, e.g. the DiSHA authors' `<|EOT|>` text) only. When it does not fit, the
    prompt is cut from the left (a leading BOS stays) and the answer is kept whole; None when the
    answer alone leaves no room for one prompt token (the first answer token needs one before it):
    the caller drops the example and counts it."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if eos and tokenizer.eos_token_id is not None:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False) else []
    room = max_length - len(answer_ids) - len(bos)
    if room < 1 and not (bos and room == 0):
        return None
    prompt_ids = bos + (prompt_ids[len(prompt_ids) - room :] if len(prompt_ids) > room else prompt_ids)
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


def encode_text_classification(tokenizer, text: str | tuple[str, str], label: float | int, max_length: int) -> dict:
    """Feature for a classification/regression head: one text or a sentence pair."""
    pair = (text,) if isinstance(text, str) else tuple(text)
    ids = tokenizer(*pair, truncation=True, max_length=max_length)["input_ids"]
    return {"input_ids": ids, "labels": label}


def collate(features: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of features into tensors (labels padded with IGNORE_INDEX)."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        input_ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        attention_mask[i, : len(f["input_ids"])] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    first = features[0]["labels"]
    if isinstance(first, list):
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(features):
            labels[i, : len(f["labels"])] = torch.tensor(f["labels"])
        batch["labels"] = labels
    else:
        dtype = torch.float if isinstance(first, float) else torch.long
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=dtype)
    return batch


def subsample(records: list[dict], limit: int | None, seed: int | None) -> list[dict]:
    """A seeded random subset of at most `limit` records (all of them, shuffled, when limit is None).
    A seed of None (a suite's `sample_seed` not yet resolved to the run seed) means 0, never a random draw."""
    records = list(records)
    random.Random(seed or 0).shuffle(records)
    return records[:limit] if limit is not None else records


@torch.no_grad()
def classify(model, tokenizer, texts: Sequence, settings: EvalSettings, regression: bool) -> list[float]:
    """Batched forward of a sequence-classification model: class ids, or scores for regression."""
    model.eval()
    device = next(model.parameters()).device
    outputs: list[float] = []
    for start in range(0, len(texts), settings.batch_size):
        chunk = texts[start : start + settings.batch_size]
        pairs = [(t,) if isinstance(t, str) else tuple(t) for t in chunk]
        firsts = [p[0] for p in pairs]
        seconds = [p[1] for p in pairs] if len(pairs[0]) == 2 else None
        enc = tokenizer(firsts, seconds, padding=True, truncation=True, max_length=512, return_tensors="pt")
        logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float()
        outputs += logits[:, 0].tolist() if regression else logits.argmax(-1).tolist()
    return outputs


class StopAtStrings:
    """Marks a row finished as soon as its continuation contains a stop string, during generation.

    The test is `cut_at_stop`'s own: the continuation decoded with `skip_special_tokens` contains
    one of `stop`. Once it does, no later token can move the cut, so the row's kept text is final;
    `model.generate` then pads that row until the whole batch is done, and a batch ends when its last
    member is, not at `max_new_tokens` (`generate`'s `batches` mode and sampling; the default `pool`
    mode drops finished rows instead, `tasks/generation.py`, with the same test). Rows keep their place in the batch (the batch shape never
    changes), so every other row's arithmetic - and its greedy path - is exactly as without it.
    A transformers `StoppingCriteria` by duck typing: subclassing it would import transformers
    whenever tasks are listed or a suite validated.
    """

    def __init__(self, tokenizer, stop: Sequence[str], prompt_width: int) -> None:
        self.tokenizer, self.stop, self.prompt_width = tokenizer, tuple(stop), prompt_width
        self.finished: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.finished is None or self.finished.shape[0] != input_ids.shape[0]:
            self.finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        continuations = input_ids[:, self.prompt_width :].tolist()
        for row in (~self.finished).nonzero().flatten().tolist():
            text = self.tokenizer.decode(continuations[row], skip_special_tokens=True)
            if any(s in text for s in self.stop):
                self.finished[row] = True
        return self.finished.clone()


def stopping_criteria(tokenizer, stop: Sequence[str], prompt_width: int):
    """`generate(stopping_criteria=...)` for a left-padded batch whose prompts are `prompt_width` wide."""
    from transformers import StoppingCriteriaList

    return StoppingCriteriaList([StopAtStrings(tokenizer, stop, prompt_width)] if stop else [])


GENERATION_MODES = ("pool", "batches", "to_end")
"""How `generate` runs greedy decoding: `pool` keeps `batch_size` rows in flight, a finished row's
place taken by the next prompt (`tasks/generation.py`; falls back to `batches` where it cannot
reproduce `model.generate`, e.g. ZeRO-3 with several ranks); `batches` runs `model.generate` on fixed
batches, each row stopping at its stop strings (`StopAtStrings`); `to_end` runs it to EOS or
`max_new_tokens` and only cuts afterwards. All three give the same texts up to a matmul's rounding
with the batch shape; `benchmarks/bench_gsm8k_eval.py` counts how many agree."""


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], settings: EvalSettings, stop: Sequence[str] = (),
             mode: str = "pool") -> list[str]:
    """Greedy generation with left padding; each output is cut at the first stop string (`GENERATION_MODES`)."""
    from disha_bench.evaluation import generation

    if mode not in GENERATION_MODES:
        raise ValueError(f"generation mode {mode!r}, expected one of {GENERATION_MODES}")
    model.eval()
    if settings.engine == "vllm":
        from disha_bench.evaluation.vllm_engine import generate_with_vllm

        texts = generate_with_vllm(model, tokenizer, prompts, settings.max_new_tokens, stop, settings.vllm_gpu_memory,
                                   settings.vllm_python)
        return [cut_at_stop(text, stop) for text in texts]
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        if mode == "pool" and generation.usable(model, settings.synced_gpus):
            texts = generation.greedy_pool(model, tokenizer, prompts, settings.batch_size,
                                           settings.max_new_tokens, stop)
        else:
            texts = generate_batches(model, tokenizer, prompts, settings, stop if mode != "to_end" else ())
    finally:
        tokenizer.padding_side = saved_side
    return [cut_at_stop(text, stop) for text in texts]


def generate_batches(model, tokenizer, prompts: Sequence[str], settings: EvalSettings,
                     stop: Sequence[str]) -> list[str]:
    """`model.generate` on fixed left-padded batches; rows stop at `stop` (none: at EOS / max_new_tokens)."""
    device = next(model.parameters()).device
    texts: list[str] = []
    for start in range(0, len(prompts), settings.batch_size):
        enc = tokenizer(list(prompts[start : start + settings.batch_size]), return_tensors="pt", padding=True)
        enc = {k: v.to(device) for k, v in enc.items()}
        width = enc["input_ids"].shape[1]
        out = model.generate(
            **enc,
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            synced_gpus=settings.synced_gpus,
            stopping_criteria=stopping_criteria(tokenizer, stop, width),
        )
        texts += [tokenizer.decode(row, skip_special_tokens=True) for row in out[:, width:]]
    return texts


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the first occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


REGISTRY: Registry[type[Task]] = Registry("task")


TaskClass = TypeVar("TaskClass", bound=type[Task])


def register(cls: TaskClass) -> TaskClass:
    """Add `cls` to the registry; ValueError when its primary metric is not among its declared `metrics`."""
    declared = by_name(cls.metrics)
    if cls.primary_metric not in declared:
        raise ValueError(f"task '{cls.name}': primary metric '{cls.primary_metric}' is not declared in `metrics` "
                         f"(declared: {', '.join(declared) or 'none'})")
    REGISTRY.register(cls.name, cls)
    return cls
