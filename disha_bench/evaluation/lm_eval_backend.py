"""lm-evaluation-harness as an evaluation backend: lm-eval tasks on the trained, in-memory model.

    # a suite:  evaluation: {lm_eval: [{task: gsm8k, num_fewshot: 5, limit: 200}]}
    python -m pytest tests/test_lm_eval_backend.py

`evaluate_lm_eval(model, tokenizer, tasks, device, data_dir)` runs every configured task through
`lm_eval.simple_evaluate` with `HFLM(pretrained=model)`: the very module that was trained (PEFT
adapters, the efficient Bat kernel), unmerged, on one process. It returns, per task, every metric
with its standard error (`{"exact_match,strict-match": {"value": 0.41, "stderr": 0.014}}`) and its
declaration (`metric_declarations`: direction from lm-eval's own `higher_is_better`), the number of documents, the shots, the generation settings and where the data came from.

- **Offline.** Tasks in `LOCAL_TASKS` (GSM8K) are lm-eval's *own* task YAML, read from the
  installed lm-eval and changed in one place only: `dataset_path: json` with absolute
  `data_files` under the data directory (lm-eval's `datasets` loader resolves relative paths
  against the working directory). The task keeps its name (`gsm8k`), prompt, stops, filters and metric, so a figure
  is comparable with `lm_eval --tasks gsm8k` on the hub. Without local files the hub task runs.
- **Hub.** Any other lm-eval task (e.g. `minerva_math`, `hendrycks_math`) loads from lm-eval's
  task index; `include_path` adds a folder of task YAMLs of one's own.
- **No unguarded code execution.** lm-eval tasks that execute generated code (`unsafe_code: true`:
  humaneval, mbpp, ...) are refused with a UserError: disha-bench runs generated code only inside
  its sandbox (the `humaneval` task of a suite). `preflight` checks names before any model loads.
- **Where it runs.** One process, on the whole model: under ZeRO-2 every rank holds it (call on
  rank 0 with `engine.module`); under ZeRO-3 with several ranks the parameters are partitioned,
  so rank 0 evaluates the base model with the saved adapter reloaded (`methods.apply` then the
  adapter weights, which keeps the efficient Bat kernel), not the partitioned engine.
- **Standard errors.** Mean-aggregated metrics (exact_match, acc) get lm-eval's closed-form
  stderr; others a bootstrap of `BOOTSTRAP_ITERS` resamples (lm-eval's default 100,000 took
  minutes for F1/MCC on a few rows).
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from pydantic import Field

from disha_bench.contracts.metrics import DECLARATIONS_KEY, Metric
from disha_bench.core.datasets import find_local
from disha_bench.core.errors import UserError
from disha_bench.core.schema import StrictModel

BOOTSTRAP_ITERS = 1000
LOCAL_TASKS: dict[str, dict[str, str]] = {
    "gsm8k": {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
}
"""lm-eval task -> its splits as files under the data directory (the hub dataset's own splits)."""
CODE_TASK_PREFIXES = ("humaneval", "mbpp", "ds1000", "apps", "codexglue", "instructhumaneval", "bigcodebench")
"""Names of lm-eval tasks that run generated code: refused before any model loads."""


def as_configs(tasks: Sequence) -> list:
    """`LmEvalTaskConfig`s from configs or from their dicts (a run spec's `evaluation.lm_eval`)."""

    return [t if isinstance(t, LmEvalTaskConfig) else LmEvalTaskConfig.model_validate(t) for t in tasks]


def preflight(tasks: Sequence, data_dir: str | None, offline: bool) -> None:
    """Cheap checks for `validate`: no code-executing task; offline tasks have their local files."""
    for index, config in enumerate(as_configs(tasks)):
        key = f"evaluation.lm_eval.{index}.task"
        if config.task.lower().startswith(CODE_TASK_PREFIXES):
            raise UserError(refusal(config.task), key=key)
        if offline and config.task in LOCAL_TASKS and local_files(config.task, data_dir) is None:
            wanted = ", ".join(LOCAL_TASKS[config.task].values())
            raise UserError(f"lm-eval task {config.task!r} offline needs {wanted} under the data directory "
                            "(--data-dir or DISHA_BENCH_DATA), or the hub", key=key)


def refusal(task: str) -> str:
    return (f"lm-eval task {task!r} executes generated code without isolation; disha-bench runs generated "
            "code only in its sandbox: use the suite task `humaneval` instead")


def local_files(task: str, data_dir: str | None) -> dict[str, Path] | None:
    """The task's splits under the data directory, or None when any is missing."""
    found = {split: find_local(data_dir, [relative]) for split, relative in LOCAL_TASKS.get(task, {}).items()}
    present = {split: path for split, path in found.items() if path is not None}
    return present if present and len(present) == len(found) else None


def local_task_yaml(task: str, files: dict[str, Path], directory: Path) -> Path:
    """lm-eval's own YAML for `task`, reading `files` (absolute paths) instead of the hub."""
    import lm_eval

    shipped = Path(lm_eval.__file__).parent / "tasks" / task / f"{task}.yaml"
    spec = yaml.safe_load(shipped.read_text())
    spec.pop("dataset_name", None)
    spec["dataset_path"] = "json"
    spec["dataset_kwargs"] = {"data_files": {split: str(path.resolve()) for split, path in files.items()}}
    path = directory / f"{task}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def tasks_defined_in(include_path: str | None) -> set[str]:
    """`task:` names declared by the YAML files of a folder (a line scan: YAMLs may hold !function tags)."""
    if not include_path:
        return set()
    folder = Path(include_path).expanduser()
    if not folder.is_dir():
        raise UserError(f"lm-eval include_path {include_path!r} is not a directory", key="evaluation.lm_eval.include_path")
    names = set()
    for path in list(folder.rglob("*.yaml")) + list(folder.rglob("*.yml")):
        names.update(re.findall(r"^task:\s*['\"]?([\w.\-]+)", path.read_text(errors="replace"), flags=re.M))
    return names


def evaluate_lm_eval(model, tokenizer, tasks: Sequence, device, data_dir: str | None,
                     batch_size: int = 16, bootstrap_iters: int = BOOTSTRAP_ITERS) -> dict[str, Any]:
    """Run each `LmEvalTaskConfig` (or its dict) on the in-memory model; {task: record} (see `_task_record`)."""
    tasks = as_configs(tasks)
    preflight(tasks, data_dir, offline=False)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="disha-lm-eval-") as tmp:
        for config in tasks:
            results[config.task] = _run_one(model, tokenizer, config, device, data_dir, Path(tmp), batch_size,
                                            bootstrap_iters)
    return results


def _run_one(model, tokenizer, config, device, data_dir, tmp: Path, batch_size: int, bootstrap_iters: int) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    include = [str(Path(config.include_path).expanduser())] if config.include_path else []
    files = local_files(config.task, data_dir)
    if files is not None:
        folder = tmp / config.task
        folder.mkdir(exist_ok=True)
        local_task_yaml(config.task, files, folder)
        include.insert(0, str(folder))
    # Indexing lm-eval's thousands of built-in YAMLs takes minutes on a small CPU: only when needed.
    needs_defaults = files is None and config.task not in tasks_defined_in(config.include_path)
    manager = TaskManager(include_path=include or None, include_defaults=needs_defaults)
    if str(next(model.parameters()).device) != str(device):
        model.to(device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    started = time.perf_counter()
    try:
        output = lm_eval.simple_evaluate(
            model=lm, tasks=[config.task], task_manager=manager, num_fewshot=config.num_fewshot, limit=config.limit,
            gen_kwargs=dict(config.gen_kwargs) or None, bootstrap_iters=bootstrap_iters, log_samples=False,
            confirm_run_unsafe_code=False,  # lm-eval then refuses tasks marked unsafe_code, before generating
        )
    except ValueError as err:
        if "unsafe" in str(err):
            raise UserError(refusal(config.task), key="evaluation.lm_eval.task") from None
        raise
    record = _task_record(output, config, started)
    record["source"] = {split: str(path) for split, path in files.items()} if files else "lm-eval task index (hub)"
    return record


def _task_record(output: dict, config, started: float) -> dict[str, Any]:
    """Every metric of every (sub)task as {"value", "stderr"} floats (None where lm-eval has none)."""
    import lm_eval

    metrics: dict[str, dict[str, dict[str, float | None]]] = {}
    declarations: dict[str, dict[str, dict[str, Any]]] = {}
    for task_name, row in output["results"].items():
        entries = {}
        directions = (output.get("higher_is_better") or {}).get(task_name) or {}
        for key, value in row.items():
            metric, _, filter_name = key.partition(",")
            # Metric keys are "metric,filter"; others (alias, sample_len) are bookkeeping.
            if not filter_name or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = row.get(f"{metric}_stderr,{filter_name}")
            entries[key] = {"value": float(value), "stderr": _number(stderr)}
            declarations.setdefault(task_name, {})[key] = lm_eval_declaration(task_name, key, directions.get(metric)).to_dict()
        metrics[task_name] = entries
    n_samples = {name: counts.get("effective", counts.get("original"))
                 for name, counts in (output.get("n-samples") or {}).items()}
    shots = output.get("n-shot") or {}
    return {
        "metrics": metrics if len(metrics) > 1 else next(iter(metrics.values()), {}),
        DECLARATIONS_KEY: declarations if len(declarations) > 1 else next(iter(declarations.values()), {}),
        "n_samples": n_samples.get(config.task, n_samples),
        "num_fewshot": shots.get(config.task, shots),
        "limit": config.limit,
        "gen_kwargs": dict(config.gen_kwargs),
        "eval_time_s": round(time.perf_counter() - started, 3),
        "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
    }


def lm_eval_declaration(task: str, key: str, higher_is_better: bool | None) -> Metric:
    """The declaration of lm-eval metric `key` ("metric,filter") of `task`: its direction as lm-eval
    declares it (higher is better when lm-eval says nothing, and the help says so). lm-eval declares
    no range and no per-example count, so the metric is unbounded and not a count."""
    stated = isinstance(higher_is_better, bool)
    return Metric(key, higher_is_better if isinstance(higher_is_better, bool) else True,
                  help=f"lm-eval task {task}, metric,filter {key}; direction "
                       + ("from lm-eval's higher_is_better" if stated else "not declared by lm-eval, taken as higher is better"))


def _number(value) -> float | None:
    """lm-eval writes numpy floats, or the string "N/A" where it computed no stderr."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class LmEvalTaskConfig(StrictModel):
    task: str
    """lm-eval task name (e.g. `gsm8k`), or a task defined by a YAML file under `include_path`."""
    num_fewshot: Optional[int] = Field(None, ge=0)
    """Few-shot examples; null: the task's default."""
    limit: Optional[int] = Field(None, gt=0)
    """Evaluate at most this many documents; null: all."""
    include_path: Optional[str] = None
    """Folder of extra task YAMLs (offline tasks over local files)."""
    gen_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Generation settings passed to lm-eval (e.g. max_gen_toks, until)."""
    for_task: Optional[str] = None
    """The suite task whose runs run it; null: the suite task of the same name when there is one
    (lm-eval's `gsm8k` after GSM8K runs only, not after HumanEval's), else every task's runs."""
