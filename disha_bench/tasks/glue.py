"""GLUE tasks on a sequence-classification head: cola sst2 mrpc stsb qqp mnli qnli rte wnli.

    disha-bench list tasks
    DISHA_BENCH_DATA=../shared/data python -m pytest tests/test_glue.py

Data: hub `nyu-mll/glue` (config = task name; evaluation on `validation`, MNLI on
`validation_matched`), or GLUE's original files `<data dir>/glue/<DIR>/{train,dev}.tsv`
(`dev_matched.tsv` for MNLI) as `download_glue_data.py` writes them, or `data_files`.
Labels are mapped to the hub's integer ids (RTE/QNLI: entailment 0, not_entailment 1; MNLI:
entailment 0, neutral 1, contradiction 2) so local and hub runs train the same head.

Primary metrics follow the LoRA / PiSSA / DiSHA GLUE tables: Matthews correlation for CoLA,
Pearson for STS-B, accuracy for the rest (MRPC and QQP also report F1, STS-B also Spearman
and their mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from disha_bench.core.datasets import HubSpec, load_split, read_tsv, require_columns
from disha_bench.core.errors import UserError
from disha_bench.tasks.base import EvalSettings, Task, classify, encode_text_classification, register, subsample
from disha_bench.tasks.metrics_glue import DECLARED, glue_metrics

_BINARY = {"0": 0, "1": 1}
_ENTAIL = {"entailment": 0, "not_entailment": 1}
_NLI = {"entailment": 0, "neutral": 1, "contradiction": 2}


@dataclass(frozen=True)
class GlueSpec:
    name: str
    directory: str
    """Folder under `<data dir>/glue/` in GLUE's original layout."""
    text_columns: tuple
    """Header names (or column indices when there is no header) of the one or two texts."""
    label_column: str | int
    labels: dict[str, int] | None
    """Raw label string -> class id; None for STS-B's float score."""
    hub_text: tuple[str, ...]
    """Text fields of the hub rows."""
    metric: str
    """Metric kind for `glue_metrics`: mcc, correlation, f1 or accuracy."""
    primary: str
    dev_file: str = "dev.tsv"
    hub_eval_split: str = "validation"
    header: bool = True
    skip_short_rows: bool = False
    """QQP's original train.tsv has a few rows with a missing question; transformers' processor
    skips them (IndexError), so we do too. Everywhere else a short row is an error."""

    def classes(self) -> int:
        return 1 if self.labels is None else len(set(self.labels.values()))


SPECS = [
    GlueSpec("cola", "CoLA", (3,), 1, _BINARY, ("sentence",), "mcc", "mcc", header=False),
    GlueSpec("sst2", "SST-2", ("sentence",), "label", _BINARY, ("sentence",), "accuracy", "accuracy"),
    GlueSpec("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", _BINARY, ("sentence1", "sentence2"), "f1", "accuracy"),
    GlueSpec("stsb", "STS-B", ("sentence1", "sentence2"), "score", None, ("sentence1", "sentence2"), "correlation", "pearson"),
    GlueSpec("qqp", "QQP", ("question1", "question2"), "is_duplicate", _BINARY, ("question1", "question2"), "f1", "accuracy", skip_short_rows=True),
    GlueSpec("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label", _NLI, ("premise", "hypothesis"), "accuracy", "accuracy",
             dev_file="dev_matched.tsv", hub_eval_split="validation_matched"),
    GlueSpec("qnli", "QNLI", ("question", "sentence"), "label", _ENTAIL, ("question", "sentence"), "accuracy", "accuracy"),
    GlueSpec("rte", "RTE", ("sentence1", "sentence2"), "label", _ENTAIL, ("sentence1", "sentence2"), "accuracy", "accuracy"),
    GlueSpec("wnli", "WNLI", ("sentence1", "sentence2"), "label", _BINARY, ("sentence1", "sentence2"), "accuracy", "accuracy"),
]
STSB_RANGE = (0.0, 5.0)


def read_glue_tsv(spec: GlueSpec, path: Path) -> list[dict]:
    """Records {"text": str | [a, b], "label": int | float, "line": n} of one original GLUE file."""
    names = list(spec.text_columns) + [spec.label_column]
    if spec.header:
        head, rows = read_tsv(path, header=True, columns=None if not spec.skip_short_rows else 0)
        if head is None:
            raise RuntimeError(f"{path}: read_tsv(header=True) returned no header")  # it raises a UserError first
        indices = require_columns(head, names, path)
    else:
        head, rows = read_tsv(path, header=False, columns=max(names) + 1)
        indices = names
    need = max(indices) + 1
    records = []
    for line, fields in rows:
        if len(fields) < need:
            if spec.skip_short_rows:
                continue
            raise UserError(f"line {line}: {len(fields)} tab-separated fields, expected {need}", file=str(path))
        texts = [fields[i] for i in indices[:-1]]
        records.append({"text": texts[0] if len(texts) == 1 else texts,
                        "label": _parse_label(spec, fields[indices[-1]].strip(), path, line), "line": line})
    if not records:
        raise UserError("no data rows", file=str(path))
    return records


def _parse_label(spec: GlueSpec, raw: str, path: Path, line: int) -> int | float:
    if spec.labels is not None:
        if raw not in spec.labels:
            raise UserError(f"line {line}: unexpected label {raw!r}; expected one of {list(spec.labels)}", file=str(path))
        return spec.labels[raw]
    try:
        score = float(raw)
    except ValueError:
        score = float("nan")
    if not STSB_RANGE[0] <= score <= STSB_RANGE[1]:  # also rejects nan
        raise UserError(f"line {line}: unexpected score {raw!r}; expected a number from 0 to 5", file=str(path))
    return score


def _from_hub(spec: GlueSpec):
    def convert(row: dict) -> dict:
        texts = [row[name] for name in spec.hub_text]
        label = float(row["label"]) if spec.labels is None else int(row["label"])
        if spec.labels is not None and label not in set(spec.labels.values()):
            raise UserError(f"{spec.name}: hub row {row.get('idx')} has label {label}; expected one of {sorted(set(spec.labels.values()))}")
        return {"text": texts[0] if len(texts) == 1 else texts, "label": label, "line": row.get("idx")}

    return convert


class GlueTask(Task):
    """One GLUE task; subclasses below only set `spec` (and the class attributes derived from it)."""

    spec: GlueSpec
    head = "sequence_classification"

    def load(self, config: dict[str, Any], data_dir: str | None) -> tuple[list[dict], list[dict]]:
        spec = self.spec
        split_args = {
            "train": (f"glue/{spec.directory}/train.tsv", "train"),
            "eval": (f"glue/{spec.directory}/{spec.dev_file}", spec.hub_eval_split),
        }
        loaded = {}
        for split, (relative, hub_split) in split_args.items():
            loaded[split] = load_split(
                config, data_dir, split, local=[relative], read_local=lambda p: read_glue_tsv(spec, p),
                hub=HubSpec("nyu-mll/glue", spec.name, hub_split), from_hub=_from_hub(spec),
            )
        seed = config.get("sample_seed", 0)
        evaluation = subsample(loaded["eval"], None, seed)
        self._heldout_pool = evaluation
        return subsample(loaded["train"], config.get("train_limit"), seed), evaluation[: config.get("eval_limit")]

    def encode(self, record: dict, tokenizer, max_length: int) -> dict:
        return encode_text_classification(tokenizer, _pair(record["text"]), record["label"], max_length)

    def predict(self, model, tokenizer, records: Sequence[dict], settings: EvalSettings) -> list[dict]:
        texts = [_pair(r["text"]) for r in records]
        regression = self.spec.labels is None
        predicted = classify(model, tokenizer, texts, settings, regression=regression)
        return [{"label": r["label"], "prediction": float(p) if regression else int(p)} for r, p in zip(records, predicted)]

    def score(self, predictions: list[dict]) -> dict[str, float]:
        labels = [p["label"] for p in predictions]
        return glue_metrics(self.spec.metric, labels, [p["prediction"] for p in predictions])


def _pair(text: str | list[str]) -> str | tuple[str, str]:
    if isinstance(text, str):
        return text
    first, second = text  # a pair task's two text columns
    return first, second


def _make(spec: GlueSpec) -> type[GlueTask]:
    cls = type(f"Glue_{spec.name}", (GlueTask,), {
        "spec": spec, "name": spec.name, "num_labels": spec.classes(), "primary_metric": spec.primary,
        "metrics": DECLARED[spec.metric],
        "description": f"GLUE {spec.directory} ({'regression' if spec.labels is None else f'{spec.classes()} classes'}; "
                       f"hub nyu-mll/glue or glue/{spec.directory}/*.tsv)",
    })
    return register(cls)


TASKS = {spec.name: _make(spec) for spec in SPECS}
