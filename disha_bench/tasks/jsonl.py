"""Your own data: a classification or a generation task read from JSON Lines files.

    tasks:
      - name: jsonl-classification
        data_files: {train: data/reviews-train.jsonl, eval: data/reviews-dev.jsonl}
        labels: [negative, positive]          # {"text": "...", "label": "positive"} per line
      - name: jsonl-generation
        data_files: {train: data/qa-train.jsonl, eval: data/qa-dev.jsonl}
        stop: ["\\n"]                          # {"prompt": "Q: ...\\nA:", "answer": " ..."} per line

Both read `data_files` (`train` and `eval`; .jsonl, .jsonl.gz, or .json holding one array); the
evaluation file is also the held-out set of the convergence curve, as GLUE's validation split is.
The field names are options. Every line is checked when the files are read, which `run` does in
its preflight, before any model loads: a bad line is a one-line error naming the file and the line.

Classification: a `sequence_classification` head with one class per entry of `labels`; a record's
label is one of those names or its index; scored by accuracy. Generation: the model learns the
answer after the prompt (loss on the answer only; the answer follows the prompt directly, so put any
separator at the end of the prompt or the start of the answer), then generates greedily up to the
first `stop` string; scored by exact match after stripping surrounding whitespace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from pydantic import Field, field_validator

from disha_bench.contracts.metrics import share_of_examples
from disha_bench.core.datasets import read_jsonl
from disha_bench.core.errors import UserError
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


class ClassificationOptions(TaskOptions):
    """The suite keys of `jsonl-classification`."""

    labels: list[str] = Field(min_length=2)
    """The class names, in the order of the head's outputs; a record's label is a name or its index."""
    text_field: str = "text"
    """Field holding the text to classify."""
    text_pair_field: Optional[str] = None
    """Field holding a second text (sentence pairs, as in MRPC or RTE); null for single texts."""
    label_field: str = "label"
    """Field holding the label."""

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"label '{repeated[0]}' appears twice")
        return labels


class GenerationOptions(TaskOptions):
    """The suite keys of `jsonl-generation`."""

    prompt_field: str = "prompt"
    """Field holding the prompt, given to the model as written."""
    answer_field: str = "answer"
    """Field holding the reference answer, learnt right after the prompt."""
    stop: list[str] = ["\n\n"]
    """Generation ends at the first of these strings (not included in the output)."""


def _read(config: dict[str, Any], what: str) -> dict[str, tuple[Path, list[dict]]]:
    """{split: (file, records)} of both splits, read whole (also when preflight probes)."""
    files = config.get("data_files") or {}
    missing = [split for split in ("train", "eval") if not files.get(split)]
    if missing:
        raise UserError(f"{what} reads your own files: give `data_files: {{train: <path>, eval: <path>}}` "
                        f"(missing: {', '.join(missing)})", key="data_files")
    out = {}
    for split in ("train", "eval"):
        path = Path(files[split]).expanduser()
        if not path.is_file():
            raise UserError(f"{what}: data file for split '{split}' not found", file=str(path), key=f"data_files.{split}")
        records = read_jsonl(path)
        if not records:
            raise UserError("no records", file=str(path))
        out[split] = (path, records)
    return out


def _field(record: dict, name: str, path: Path, kinds: tuple[type, ...] = (str,)) -> Any:
    value = record.get(name)
    if not isinstance(value, kinds) or isinstance(value, bool):
        where = f"line {record.get('_line', '?')}: "
        got = "missing" if name not in record else f"{str(value)[:40]!r} ({type(value).__name__})"
        expected = " or ".join(k.__name__ for k in kinds).replace("str", "a string").replace("int", "an integer")
        raise UserError(f"{where}field '{name}' is {got}; expected {expected}", file=str(path))
    return value


class JsonlTask(Task):
    """Shared loading: both splits read and checked, the evaluation split doubling as the held-out set."""

    heldout_source = "evaluation file"

    def load(self, config: dict[str, Any], data_dir: str | None) -> tuple[list[dict], list[dict]]:
        splits = _read(config, self.name)
        train, evaluation = (self.convert(records, path, config) for path, records in (splits["train"], splits["eval"]))
        seed = config.get("sample_seed", 0)
        evaluation = subsample(evaluation, None, seed)
        self._heldout_pool = evaluation
        return subsample(train, config.get("train_limit"), seed), evaluation[: config.get("eval_limit")]

    def convert(self, records: list[dict], path: Path, config: dict[str, Any]) -> list[dict]:
        """The file's records in the task's own shape; UserError naming the line of a bad one."""
        raise NotImplementedError


@register
class JsonlClassification(JsonlTask):
    name = "jsonl-classification"
    head = "sequence_classification"
    num_labels = 2  # the instance's own count is set from `labels` when it loads
    primary_metric = "accuracy"
    metrics = (share_of_examples("accuracy", "share of evaluation records classified correctly"),)
    description = "your own classification data: JSON Lines files with a text and a label per line"
    Options = ClassificationOptions

    def convert(self, records: list[dict], path: Path, config: dict[str, Any]) -> list[dict]:
        labels = list(config["labels"])
        setattr(self, "num_labels", len(labels))  # this task object's own count, shadowing the class default
        pair = config.get("text_pair_field")
        out = []
        for record in records:
            text = _field(record, config["text_field"], path)
            if pair:
                text = [text, _field(record, pair, path)]
            out.append({"text": text, "label": self._label(record, config["label_field"], labels, path)})
        return out

    @staticmethod
    def _label(record: dict, field: str, labels: list[str], path: Path) -> int:
        value = _field(record, field, path, (str, int))
        if isinstance(value, int) and 0 <= value < len(labels):
            return value
        if isinstance(value, str) and value in labels:
            return labels.index(value)
        raise UserError(f"line {record.get('_line', '?')}: label {value!r} is not one of {labels} "
                        f"(nor an index below {len(labels)})", file=str(path))

    def encode(self, record: dict, tokenizer, max_length: int) -> dict:
        text = record["text"] if isinstance(record["text"], str) else tuple(record["text"])
        return encode_text_classification(tokenizer, text, record["label"], max_length)

    def predict(self, model, tokenizer, records: Sequence[dict], settings: EvalSettings) -> list[dict]:
        texts = [r["text"] if isinstance(r["text"], str) else tuple(r["text"]) for r in records]
        predicted = classify(model, tokenizer, texts, settings, regression=False)
        return [{"label": r["label"], "prediction": int(p)} for r, p in zip(records, predicted)]

    def score(self, predictions: list[dict]) -> dict[str, float]:
        correct = sum(p["label"] == p["prediction"] for p in predictions)
        return {"accuracy": correct / max(len(predictions), 1)}


@register
class JsonlGeneration(JsonlTask):
    name = "jsonl-generation"
    head = "causal_lm"
    primary_metric = "exact_match"
    metrics = (share_of_examples("exact_match", "share of evaluation records whose output equals the answer, "
                                                "surrounding whitespace stripped"),)
    description = "your own generation data: JSON Lines files with a prompt and an answer per line"
    Options = GenerationOptions
    stop: tuple[str, ...] = ("\n\n",)

    def convert(self, records: list[dict], path: Path, config: dict[str, Any]) -> list[dict]:
        self.stop = tuple(config["stop"])
        return [{"prompt": _field(r, config["prompt_field"], path), "answer": _field(r, config["answer_field"], path)}
                for r in records]

    def encode(self, record: dict, tokenizer, max_length: int) -> dict | None:
        return encode_prompt_answer(tokenizer, record["prompt"], record["answer"], max_length)

    def predict(self, model, tokenizer, records: Sequence[dict], settings: EvalSettings) -> list[dict]:
        outputs = generate(model, tokenizer, [r["prompt"] for r in records], settings, stop=self.stop)
        return [{"target": r["answer"], "output": o} for r, o in zip(records, outputs)]

    def score(self, predictions: list[dict]) -> dict[str, float]:
        hits = sum(p["output"].strip() == p["target"].strip() for p in predictions)
        return {"exact_match": hits / max(len(predictions), 1)}
