"""lm-eval as an evaluation backend: lm-eval's own gsm8k over local files, on an in-memory Bat model.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 DISHA_BENCH_DATA=../shared/data python -m pytest tests/test_lm_eval_backend.py
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from disha_bench.core.errors import UserError  # noqa: E402
from disha_bench.evaluation import lm_eval_backend  # noqa: E402
from disha_bench.evaluation.lm_eval_backend import LmEvalTaskConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DISHA_BENCH_DATA") or REPO.parent / "shared" / "data")
needs_data = pytest.mark.skipif(not (DATA / "gsm8k").is_dir(), reason=f"no GSM8K data in {DATA} (set DISHA_BENCH_DATA)")


@pytest.mark.parametrize("task", ["humaneval", "mbpp", "mbpp_plus", "humaneval_instruct"])
def test_code_executing_tasks_are_refused_before_a_model_loads(task):
    with pytest.raises(UserError, match="sandbox"):
        lm_eval_backend.preflight([LmEvalTaskConfig(task=task)], str(DATA), offline=False)


def test_offline_gsm8k_without_files_says_what_it_needs(tmp_path):
    with pytest.raises(UserError, match="gsm8k/train.jsonl"):
        lm_eval_backend.preflight([LmEvalTaskConfig(task="gsm8k")], str(tmp_path), offline=True)
    lm_eval_backend.preflight([LmEvalTaskConfig(task="gsm8k")], str(tmp_path), offline=False)  # the hub will do


@needs_data
def test_local_gsm8k_is_lm_evals_own_task_over_local_files(tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    files = lm_eval_backend.local_files("gsm8k", str(DATA))
    written = yaml.safe_load(lm_eval_backend.local_task_yaml("gsm8k", files, tmp_path).read_text())
    shipped = yaml.safe_load((importlib.resources.files(lm_eval) / "tasks" / "gsm8k" / "gsm8k.yaml").read_text())
    changed = {k for k in set(written) | set(shipped) if written.get(k) != shipped.get(k)}
    assert changed == {"dataset_path", "dataset_name", "dataset_kwargs"}
    assert written["task"] == "gsm8k" and written["dataset_path"] == "json"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in written["dataset_kwargs"]["data_files"].values())


@needs_data
@pytest.mark.slow  # imports lm-eval and builds the json dataset: ~30 s idle, minutes on a loaded CPU
def test_gsm8k_through_lm_eval_on_an_in_memory_bat_model(monkeypatch, tmp_path):
    pytest.importorskip("lm_eval")
    import torch

    from disha_bench import methods, models
    from disha_bench.methods.bat_kernel import BatLinearFunction

    model = methods.apply(models.load_model("tiny-llama", "causal_lm"), "bat", r=16)  # efficient kernel
    tokenizer = models.load_tokenizer("tiny-llama")
    calls, kernel = [], BatLinearFunction.apply
    monkeypatch.setattr(BatLinearFunction, "apply", lambda *args: calls.append(1) or kernel(*args))
    configs = [{"task": "gsm8k", "num_fewshot": 1, "limit": 3, "gen_kwargs": {"max_gen_toks": 8}}]  # as in a run spec
    result = lm_eval_backend.evaluate_lm_eval(model, tokenizer, configs, torch.device("cpu"), str(DATA), batch_size=3)
    assert calls, "lm-eval did not run the in-memory model's efficient Bat kernel"
    record = result["gsm8k"]
    assert record["n_samples"] == 3 and record["num_fewshot"] == 1 and record["source"]["test"].endswith("test.jsonl")
    assert set(record["metrics"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    # declared with lm-eval's own direction (exact match: higher is better)
    assert {k: d["higher_is_better"] for k, d in record["metric_declarations"].items()} == dict.fromkeys(record["metrics"], True)
    for entry in record["metrics"].values():
        assert 0.0 <= entry["value"] <= 1.0
        assert isinstance(entry["stderr"], float) and entry["stderr"] >= 0.0  # closed form: sqrt(p(1-p)/(n-1))

    # A task of one's own that executes code (unsafe_code) is refused by name-blind lm-eval itself.
    spec = yaml.safe_load(lm_eval_backend.local_task_yaml("gsm8k", lm_eval_backend.local_files("gsm8k", str(DATA)),
                                                          tmp_path).read_text())
    (tmp_path / "gsm8k.yaml").unlink()
    (tmp_path / "runs_code.yaml").write_text(yaml.safe_dump({**spec, "task": "runs_code", "unsafe_code": True}))
    unsafe = [LmEvalTaskConfig(task="runs_code", limit=1, include_path=str(tmp_path))]
    with pytest.raises(UserError, match="sandbox"):
        lm_eval_backend.evaluate_lm_eval(model, tokenizer, unsafe, torch.device("cpu"), str(DATA))
