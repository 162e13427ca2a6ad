"""GSM8K through lm-eval itself, offline: a task YAML over local files and `simple_evaluate`.

    python -c "from disha_bench.tasks.lm_eval_gsm8k import evaluate; ..."   # see tests/test_gsm8k.py

`write_task_yaml` copies lm-eval's own `gsm8k` task (prompt, stop strings, strict-match and
flexible-extract filters, exact_match settings) but reads `dataset_path: json` with absolute
`data_files`, so no hub access is needed. `evaluate` runs an in-memory (PEFT) model through
`HFLM(pretrained=model, tokenizer=tokenizer)` with `bootstrap_iters=0` (the stderr bootstrap takes
minutes) and returns {"exact_match_strict", "exact_match_flexible"} as plain floats - the same keys
as the `gsm8k` task, so the two paths can be compared run for run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from disha_bench.data import find_local
from disha_bench.errors import UserError
from disha_bench.tasks import gsm8k

TASK_NAME = "disha_gsm8k_local"


def task_config(train_file: str | Path, test_file: str | Path, name: str = TASK_NAME,
                max_gen_toks: int = 256) -> dict[str, Any]:
    """lm-eval's gsm8k.yaml (0.4.x) with local JSON data files (absolute paths: lm-eval resolves
    relative ones against the working directory, not the YAML). `max_gen_toks` is HFLM's
    default (256) unless set here: HFLM 0.4.13 takes the budget only from generation_kwargs."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": str(Path(train_file).resolve()), "test": str(Path(test_file).resolve())}},
        "output_type": "generate_until",
        "training_split": "train",
        "fewshot_split": "train",
        "test_split": "test",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "metric_list": [{
            "metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
            "ignore_case": True, "ignore_punctuation": False, "regexes_to_ignore": list(gsm8k.IGNORE_PATTERNS),
        }],
        "generation_kwargs": {"until": list(gsm8k.STOP), "do_sample": False, "temperature": 0.0,
                              "max_gen_toks": max_gen_toks},
        "repeats": 1,
        "num_fewshot": 5,
        "filter_list": [
            {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": gsm8k.STRICT_PATTERN},
                                                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                     "regex_pattern": gsm8k.FLEXIBLE_PATTERN},
                                                    {"function": "take_first"}]},
        ],
        "metadata": {"version": 3.0},
    }


def write_task_yaml(directory: str | Path, train_file: str | Path, test_file: str | Path, name: str = TASK_NAME,
                    max_gen_toks: int = 256) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task_config(train_file, test_file, name, max_gen_toks), sort_keys=False))
    return path


def local_files(data_dir: str | None) -> tuple[Path, Path]:
    """GSM8K train and test .jsonl under the data directory (lm-eval's json loader reads .jsonl)."""
    train = find_local(data_dir, ["gsm8k/train.jsonl"])
    test = find_local(data_dir, ["gsm8k/test.jsonl"])
    if train is None or test is None:
        raise UserError("lm-eval gsm8k needs gsm8k/train.jsonl and gsm8k/test.jsonl under the data directory "
                        "(set --data-dir or DISHA_BENCH_DATA)")
    return train, test


def evaluate(model, tokenizer, data_dir: str | None, *, limit: int | None = None, num_fewshot: int = 0,
             batch_size: int = 16, max_new_tokens: int = 256) -> dict[str, float]:
    """Run lm-eval's gsm8k (our local copy) on an in-memory model; metrics as plain floats."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    train, test = local_files(data_dir)
    with tempfile.TemporaryDirectory(prefix="disha-lm-eval-") as tmp:
        write_task_yaml(tmp, train, test, max_gen_toks=max_new_tokens)
        # include_defaults=False: indexing lm-eval's thousands of built-in YAMLs takes minutes.
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        results = lm_eval.simple_evaluate(
            model=lm, tasks=[TASK_NAME], num_fewshot=num_fewshot, limit=limit, bootstrap_iters=0,
            task_manager=TaskManager(include_path=tmp, include_defaults=False), log_samples=False,
        )
    row = results["results"][TASK_NAME]
    # lm-eval reports numpy floats keyed "metric,filter": convert for JSON and rename to ours.
    return {"exact_match_strict": float(row["exact_match,strict-match"]),
            "exact_match_flexible": float(row["exact_match,flexible-extract"])}
