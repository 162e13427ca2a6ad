"""The global batch is the suite's on any rank count, and a run never starts a pass over the data
the suite did not ask for.

    python -m pytest -q tests/test_global_batch.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from disha_bench.cli import main
from disha_bench.config.batching import check_epochs
from disha_bench.config.expansion import expand_runs
from disha_bench.config.suite import load_suite
from disha_bench.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
NLG = REPO / "suites" / "nlg.yaml"


@pytest.mark.parametrize("ranks", [1, 2, 4, 8, 16, 32])
def test_the_paper_suite_keeps_global_batch_64_on_any_rank_count(ranks):
    suite, _ = load_suite(NLG)
    for run in expand_runs(suite, ranks):
        assert run.training.batch_size * run.training.grad_accum * ranks == 64, (ranks, run.run_id)


def _suite(tmp_path, **training) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "model": {"name": "tiny-llama"}, "tasks": [{"name": "synthetic-sentiment", "train_limit": 16}],
        "methods": [{"name": "lora", "r": 4}], "training": {"max_steps": 2, "batch_size": 2, **training}}))
    return path


@pytest.mark.parametrize("argv,training,key", [
    (["validate", "--nproc", "3"], {"global_batch": 8}, "training.global_batch: global_batch 8 cannot be held on 3 rank(s)"),
    (["plan", "--nproc", "3"], {"global_batch": 8}, "training.global_batch: global_batch 8 cannot be held on 3 rank(s)"),
    (["validate"], {"global_batch": 7}, "training.global_batch: expected a multiple of batch_size 2"),
    (["validate"], {"global_batch": 8, "grad_accum": 2}, "training.grad_accum: set global_batch or grad_accum, not both"),
    (["plan", "--nproc", "2"], {"global_batch": 8, "max_epochs": 1, "max_steps": 3}, "training.max_epochs: max_steps 3 x global batch 8"),
])
def test_a_global_batch_the_ranks_cannot_hold_is_one_line_exit_2(tmp_path, capsys, argv, training, key):
    path = _suite(tmp_path, **training)
    assert main([argv[0], str(path), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {path}: {key}"), err


def test_run_refuses_before_anything_starts(tmp_path, capsys):
    path, out = _suite(tmp_path, global_batch=8), tmp_path / "out"
    assert main(["run", str(path), "--nproc", "3", "--out", str(out)]) == 2
    assert "cannot be held on 3 rank(s)" in capsys.readouterr().err and not out.exists()


def test_epochs_past_max_epochs_are_refused_and_otherwise_counted(tmp_path):
    suite, _ = load_suite(_suite(tmp_path, global_batch=8, max_epochs=1.0, max_steps=2))
    training = expand_runs(suite, 2)[0].training
    assert training.grad_accum == 2 and check_epochs(training, 2, 16) == 1.0
    with pytest.raises(UserError, match=r"1\.067 passes over 15 training examples.*at most 1\)"):
        check_epochs(training, 2, 15)  # a second pass the suite did not ask for: refused
    unlimited = training.model_copy(update={"max_epochs": None})
    assert check_epochs(unlimited, 2, 8) == 2.0  # without max_epochs: allowed, and stated in the log
