"""GSM8K: train on GSM8K train (or MetaMathQA, as the DiSHA paper), evaluate by greedy generation.

    DISHA_BENCH_DATA=../shared/data python -m pytest tests/test_gsm8k.py

Prompt and scoring are lm-eval's `gsm8k` task (0.4.x), so numbers are comparable with
`lm_eval --tasks gsm8k` (lm-eval itself runs through `disha_bench.evaluation.lm_eval_backend`):

- prompt `Question: {question}\\nAnswer:`, target ` {answer}`, k-shot examples joined by a blank
  line; generation stops at `Question:` (and at EOS);
- `exact_match_strict` (primary): the first `#### (-?[0-9.,]+)` in the output;
  `exact_match_flexible`: the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)` (the last number);
- `exact_match_answer`: the first answer line in either format, MetaMathQA's `The answer is: X` or
  `#### X` (primary with `prompt: alpaca`, whose model answers as MetaMathQA does);
- all compared with the reference after lm-eval's exact_match normalisation: remove `,`, `$`,
  everything up to the last `#### `, one trailing `.`, then lower-case.

Few-shot examples (EvalSettings.num_fewshot) come from GSM8K *train*, chosen once with the
config's `sample_seed` and shared by every question (so every rank and shard builds identical
prompts), never from the evaluation set.

Data: hub `openai/gsm8k` (config main) or `<data dir>/gsm8k/{train,test}.jsonl[.gz]`;
`train_source: metamathqa` trains on hub `meta-math/MetaMathQA` or
`<data dir>/metamathqa/MetaMathQA-395K.json` (or `train.jsonl`) with `query`/`response` fields.
MetaMathQA responses end in `The answer is: X`; we append `\\n#### X` so a MetaMathQA-trained
model learns the answer line that strict match (and GSM8K training) uses.

`prompt: alpaca` is the DiSHA paper's setting (JL-er/MiSS finetune.py): the Alpaca prompt without
input, `PAPER_PROMPT`, and the target `{response}\\n` followed by the tokenizer's EOS (the authors
append the text `<|EOT|>`, which Llama-2 has no token for); MetaMathQA responses stay as written
(no `#### X` line: the primary metric is then `exact_match_answer`, and lm-eval's
flexible-extract is the comparable lm-eval figure). Its own evaluation
is zero-shot in the same template. `train_subset: first` takes the first `train_limit` rows of the
file (the authors' `train[:100000]`) instead of a seeded random subset.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Literal, Sequence

from disha_bench.contracts.metrics import share_of_examples
from disha_bench.core.datasets import HubSpec, load_split, read_records
from disha_bench.core.errors import UserError
from disha_bench.tasks.base import EvalSettings, Task, TaskOptions, encode_prompt_answer, generate, register, subsample

# --- lm-eval's gsm8k filters and metric settings (lm_eval/tasks/gsm8k/gsm8k.yaml) --------------
STRICT_PATTERN = r"#### (\-?[0-9\.\,]+)"
FLEXIBLE_PATTERN = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
FALLBACK = "[invalid]"
IGNORE_PATTERNS = (",", r"\$", r"(?s).*#### ", r"\.$")
STOP = ("Question:", "</s>", "<|im_end|>")
FEWSHOT_DELIMITER = "\n\n"

_STRICT = re.compile(STRICT_PATTERN)
_FLEXIBLE = re.compile(FLEXIBLE_PATTERN)
_METAMATH_ANSWER = re.compile(r"The answer is:?\s*(.+?)\s*$", re.DOTALL)
ANSWER_PATTERN = r"(?:The answer is:?|####)\s*(-?[$0-9.,]*[0-9])"
"""The answer line of either format: MetaMathQA's `The answer is: X` (what `prompt: alpaca` trains
on) or GSM8K's `#### X`; the first one in the output."""
_ANSWER = re.compile(ANSWER_PATTERN)


def extract(text: str, pattern: re.Pattern, group_select: int) -> str:
    """lm-eval's RegexFilter: the `group_select`-th match (first non-empty group), stripped."""
    matches = pattern.findall(text)
    if not matches:
        return FALLBACK
    match = matches[group_select]
    if isinstance(match, tuple):
        groups = [m for m in match if m]
        match = groups[0] if groups else FALLBACK
    return match.strip()


def extract_strict(text: str) -> str:
    return extract(text, _STRICT, 0)


def extract_flexible(text: str) -> str:
    return extract(text, _FLEXIBLE, -1)


def extract_answer(text: str) -> str:
    """The number of the first answer line (`The answer is: X` or `#### X`), else the fallback."""
    return extract(text, _ANSWER, 0)


def normalize(text: str) -> str:
    """lm-eval exact_match with the gsm8k regexes_to_ignore and ignore_case."""
    for pattern in IGNORE_PATTERNS:
        text = re.sub(pattern, "", text)
    return text.lower()


def reference(answer: str) -> str:
    """The normalised target of a GSM8K answer (`... #### 1,234` -> `1234`)."""
    return normalize(answer)


def strict_correct(output: str, answer: str) -> bool:
    return normalize(extract_strict(output)) == reference(answer)


def flexible_correct(output: str, answer: str) -> bool:
    return normalize(extract_flexible(output)) == reference(answer)


PAPER_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{query}\n\n### Response:"
)
"""The Alpaca prompt without input, as the DiSHA authors train (and evaluate instruction-style)."""
PAPER_STOP = ("### Instruction:",)
AUTHORS_END = "<|EOT|>"
"""The end-of-text marker the DiSHA authors' finetune.py appends to every target (`{output}\n<|EOT|>`):
plain text to Llama-2's tokenizer, which has no such token, and no EOS after it."""


def paper_target(response: str, target_end: str) -> tuple[str, bool]:
    """(target text, append EOS) for the paper's prompt: `{response}\n` then EOS, or `{response}\n<|EOT|>`."""
    return (response + "\n" + AUTHORS_END, False) if target_end == AUTHORS_END else (response + "\n", True)


def paper_stops(target_end: str) -> tuple[str, ...]:
    """Stop strings of generation under the paper's prompt: a model trained to end with the marker stops at it."""
    return PAPER_STOP + ((AUTHORS_END,) if target_end == AUTHORS_END else ())


def take_train(records: list[dict], config: dict) -> list[dict]:
    """`train_subset: first`: the first `train_limit` rows in file order; else a seeded random subset."""
    if config.get("train_subset", "random") == "first":
        return records[: config.get("train_limit")] if config.get("train_limit") else records
    return subsample(records, config.get("train_limit"), config.get("sample_seed", 0))


def prompt(question: str, fewshot: Sequence[dict] = ()) -> str:
    shots = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in fewshot]
    return FEWSHOT_DELIMITER.join(shots + [f"Question: {question}\nAnswer:"])


# --- data ----------------------------------------------------------------------------------------
GSM8K_HUB = "openai/gsm8k"
METAMATH_HUB = "meta-math/MetaMathQA"
TRAIN_SOURCES = ("gsm8k", "metamathqa")


def read_gsm8k(path: Path) -> list[dict]:
    records = read_records(path, ("question", "answer"))
    return [{"question": r["question"], "answer": r["answer"]} for r in records]


def read_metamath(path: Path) -> list[dict]:
    records = read_records(path, ("query", "response"))
    return [from_metamath(r) for r in records]


def from_metamath(row: dict) -> dict:
    response = row["response"].rstrip()
    match = _METAMATH_ANSWER.search(response.rsplit("\n", 1)[-1])
    answer = response + (f"\n#### {match.group(1)}" if match and "####" not in response else "")
    return {"question": row["query"], "answer": answer, "response": row["response"]}


def load_gsm8k_split(config: dict, data_dir: str | None, split: str) -> list[dict]:
    name = "train" if split == "train" else "test"
    return load_split(
        config, data_dir, split, local=[f"gsm8k/{name}.jsonl", f"gsm8k/{name}.jsonl.gz"], read_local=read_gsm8k,
        hub=HubSpec(GSM8K_HUB, "main", name), from_hub=lambda r: {"question": r["question"], "answer": r["answer"]},
    )


class GSM8KOptions(TaskOptions):
    """GSM8K's own suite keys."""

    train_source: Literal["gsm8k", "metamathqa"] = "gsm8k"
    """Training data: GSM8K's train split, or MetaMathQA (the DiSHA paper's; query -> response,
    hub `meta-math/MetaMathQA` or `metamathqa/` under the data directory)."""
    prompt: Literal["lm_eval", "alpaca"] = "lm_eval"
    """Prompt format: `lm_eval` (lm-eval's `Question: ...\nAnswer:`, answers as GSM8K writes them) or
    `alpaca` (the DiSHA authors' Alpaca prompt without input; target = the raw response + newline + EOS)."""
    train_subset: Literal["random", "first"] = "random"
    """How `train_limit` picks training rows: a seeded `random` subset, or the `first` rows (the authors' scripts)."""
    target_end: Literal["eos", "<|EOT|>"] = "eos"
    """With `prompt: alpaca`, what ends a training target: the tokenizer's `eos`, or the text `<|EOT|>`
    after a newline, as the DiSHA authors' finetune.py (no EOS; generation stops at that text)."""


@register
class GSM8K(Task):
    name = "gsm8k"
    head = "causal_lm"
    primary_metric = "exact_match_strict"
    metrics = (
        share_of_examples("exact_match_strict", "share of problems whose first `#### n` answer matches (lm-eval strict-match)"),
        share_of_examples("exact_match_flexible", "share of problems whose last number matches (lm-eval flexible-extract)"),
        share_of_examples("exact_match_answer", "share of problems whose first answer line (`The answer is: n` or `#### n`) matches"),
    )
    example_metrics = ("exact_match_strict", "exact_match_flexible")
    description = "GSM8K grade-school math, greedy generation, lm-eval strict/flexible match (hub openai/gsm8k or gsm8k/*.jsonl)"
    Options = GSM8KOptions
    heldout_source = "test split (never trained on)"

    def __init__(self) -> None:
        self._config: dict | None = None
        self._data_dir: str | None = None
        self._gsm8k_train: list[dict] | None = None

    def load(self, config: dict[str, Any], data_dir: str | None) -> tuple[list[dict], list[dict]]:
        source = config.get("train_source", "gsm8k")
        if source not in TRAIN_SOURCES:
            raise UserError(f"unknown train_source {source!r}; expected one of {list(TRAIN_SOURCES)}", key="train_source")
        self._config, self._data_dir = config, data_dir
        # A model trained in the Alpaca template answers as MetaMathQA does ("The answer is: X"),
        # never with "#### X": strict match would read ~0 for every method by construction.
        self.primary_metric = "exact_match_answer" if self.paper_prompt else type(self).primary_metric
        if source == "gsm8k":
            train = self._gsm8k_train = load_gsm8k_split(config, data_dir, "train")
        else:
            train = load_split(
                config, data_dir, "train", local=["metamathqa/MetaMathQA-395K.json", "metamathqa/train.jsonl"],
                read_local=read_metamath, hub=HubSpec(METAMATH_HUB, None, "train"), from_hub=from_metamath,
                what="gsm8k (train_source metamathqa)",
            )
        seed = config.get("sample_seed", 0)
        evaluation = subsample(load_gsm8k_split(config, data_dir, "eval"), None, seed)
        self._heldout_pool = evaluation
        return take_train(train, config), evaluation[: config.get("eval_limit")]

    @property
    def _target_end(self) -> str:
        return (self._config or {}).get("target_end", "eos")

    @property
    def paper_prompt(self) -> bool:
        return (self._config or {}).get("prompt", "lm_eval") == "alpaca"

    def fewshot(self, k: int) -> list[dict]:
        """k worked examples from GSM8K train, the same for every question (seeded by sample_seed)."""
        if k == 0:
            return []
        if self._gsm8k_train is None:
            if self._config is None:
                raise RuntimeError("gsm8k: call load() before predict() with num_fewshot > 0")
            # MetaMathQA training: the shots still come from GSM8K train, the format the eval uses.
            # data_files.train names the MetaMathQA file then, so look GSM8K train up without it.
            config = {**self._config, "data_files": {}}
            self._gsm8k_train = load_gsm8k_split(config, self._data_dir, "train")
        return random.Random((self._config.get("sample_seed") if self._config else 0) or 0).sample(self._gsm8k_train, k)

    def encode(self, record: dict, tokenizer, max_length: int) -> dict[str, Any] | None:
        if self.paper_prompt:
            target, eos = paper_target(record.get("response", record["answer"]), self._target_end)
            return encode_prompt_answer(tokenizer, PAPER_PROMPT.format(query=record["question"]), target, max_length, eos)
        return encode_prompt_answer(tokenizer, prompt(record["question"]), " " + record["answer"], max_length)

    def predict(self, model, tokenizer, records: Sequence[dict], settings: EvalSettings) -> list[dict]:
        if self.paper_prompt:  # zero-shot, the training template; the model ends with EOS
            prompts = [PAPER_PROMPT.format(query=r["question"]) for r in records]
            outputs = generate(model, tokenizer, prompts, settings, stop=paper_stops(self._target_end) + STOP)
        else:
            shots = self.fewshot(settings.num_fewshot)
            outputs = generate(model, tokenizer, [prompt(r["question"], shots) for r in records], settings, stop=STOP)
        return [
            {"target": reference(r["answer"]), "output": o, "strict": extract_strict(o), "flexible": extract_flexible(o),
             "answer": extract_answer(o)}
            for r, o in zip(records, outputs)
        ]

    def score(self, predictions: list[dict]) -> dict[str, float]:
        n = max(len(predictions), 1)
        strict = sum(normalize(extract_strict(p["output"])) == p["target"] for p in predictions)
        flexible = sum(normalize(extract_flexible(p["output"])) == p["target"] for p in predictions)
        answer = sum(normalize(extract_answer(p["output"])) == p["target"] for p in predictions)
        return {"exact_match_strict": strict / n, "exact_match_flexible": flexible / n, "exact_match_answer": answer / n}
