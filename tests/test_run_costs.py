"""What a run costs beyond its own work: lm-eval only for the task it belongs to, one tokenization
per node, the unadapted reference loaded straight onto its device.

    python -m pytest -q tests/test_run_costs.py
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from disha_bench.cli import main
from disha_bench.config.expansion import expand_runs
from disha_bench.config.suite import load_suite
from disha_bench.training import evaluate_only, setup

REPO = Path(__file__).resolve().parents[1]


def test_lm_eval_gsm8k_runs_after_gsm8k_only_not_after_humaneval():
    suite, _ = load_suite(REPO / "suites" / "nlg.yaml")
    lm_eval = {run.task.name: [c.task for c in run.evaluation.lm_eval] for run in expand_runs(suite, 8)}
    assert lm_eval == {"gsm8k": ["gsm8k"], "humaneval": []}
    pinned, _ = load_suite(REPO / "suites" / "nlg.yaml", ["evaluation.lm_eval.0.for_task=humaneval"])
    assert {r.task.name: len(r.evaluation.lm_eval) for r in expand_runs(pinned, 8)} == {"gsm8k": 0, "humaneval": 1}


def test_an_lm_eval_task_for_a_task_not_in_the_suite_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "model": {"name": "tiny-llama"}, "tasks": [{"name": "synthetic-arith"}],
                                    "methods": [{"name": "lora"}], "evaluation": {"lm_eval": [{"task": "gsm8k", "for_task": "gsm9k"}]}}))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: evaluation.lm_eval[0].for_task: no task 'gsm9k'") and "\n" not in err


def _smoke_run(tmp_path, unadapted: bool):
    suite, _ = load_suite(REPO / "suites" / "smoke.yaml", ["tasks.0.train_limit=16", "tasks.1.train_limit=16"])
    return next(r for r in expand_runs(suite) if r.is_unadapted == unadapted)


def test_tokenization_happens_inside_local_rank_zero_first(tmp_path, monkeypatch):
    """Local rank 0 tokenizes into the feature cache while the other ranks wait; they then read it."""
    inside, seen = [False], []
    real_cached = setup.cached_features

    @contextmanager
    def rank_zero_first():
        inside[0] = True
        try:
            yield
        finally:
            inside[0] = False

    def recording_cached(*args, **kwargs):
        seen.append(inside[0])
        return real_cached(*args, **kwargs)

    monkeypatch.setattr(setup.distributed, "local_rank_zero_first", rank_zero_first)
    monkeypatch.setattr(setup, "cached_features", recording_cached)
    data = setup.load_task_data(_smoke_run(tmp_path, unadapted=False))
    assert seen == [True] and len(data.features) == 16


class _Loaded(Exception):
    pass


def test_the_unadapted_run_loads_the_model_onto_its_device(tmp_path, monkeypatch):
    """The reference run loads the base model straight onto the rank's device (on GPUs: not one
    host-memory copy of 7B per rank, then a copy to the GPU)."""
    device, passed = torch.device("cpu"), []

    def load_base_model(spec, task, tokenizer, device=None):
        passed.append(device)
        raise _Loaded

    monkeypatch.setattr(evaluate_only, "init_process", lambda seed: device)
    monkeypatch.setattr(evaluate_only, "load_base_model", load_base_model)
    with pytest.raises(_Loaded):
        evaluate_only.unadapted(_smoke_run(tmp_path, unadapted=True), 0.0)
    assert passed == [device]
