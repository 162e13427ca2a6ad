"""Every registered method through `disha-bench run` on the smoke model: ZeRO-2 on one rank, and
ZeRO-3 on two ranks (torchrun, gloo) with the adapters saved and reloaded by plain PEFT.

    pytest tests/test_all_methods.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from method_table import ROWS

from disha_bench import methods
from disha_bench.contracts.results import load_results
from disha_bench.running.runner import run_suite

pytestmark = pytest.mark.slow

# every row of the battery's table, by its label (bat-peft: PEFT's own Bat, the reference for the efficient kernel)
METHODS = [{"name": row.method, "label": label, **row.params} for label, row in ROWS.items()]
assert {m["name"] for m in METHODS} == set(methods.names())


def _suite(tmp_path: Path, zero_stage: int, **output) -> Path:
    suite = {
        "name": f"all-methods-z{zero_stage}",
        "model": {"name": "tiny-llama"},
        "tasks": [{"name": "synthetic-sentiment", "train_limit": 64, "eval_limit": 16}],
        "methods": METHODS,
        "training": {"max_steps": 4, "lr": 1.0e-3, "batch_size": 4, "max_length": 32, "zero_stage": zero_stage,
                     "warmup_steps": 0, "deepspeed": {"zero_optimization": {"stage3_param_persistence_threshold": 0}}
                     if zero_stage == 3 else {}},
        "seeds": [0],
        "evaluation": {"batch_size": 8},
        "analysis": {"unadapted": False},
        "output": {"report": False, **output},
    }
    path = tmp_path / f"suite-z{zero_stage}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _complete(out: Path) -> dict[str, object]:
    results = {r.run.method: r for r in load_results(out)}
    assert sorted(results) == sorted(m["label"] for m in METHODS)
    for name, result in results.items():
        assert result.run.status == "complete", f"{name}: {result.run.error}"
        assert len(result.training.steps) == 4 and result.training.trainable_params > 0
    # the efficient Bat kernel (input rebuilt in backward where it can be) follows PEFT's Bat step for step
    curves = {label: [s.loss for s in results[label].training.steps] for label in ("bat", "bat-peft")}
    assert curves["bat"] == pytest.approx(curves["bat-peft"], rel=1e-5, abs=1e-6)
    return results


def test_every_method_runs_under_zero2(tmp_path):
    out = tmp_path / "out"
    assert run_suite(str(_suite(tmp_path, 2)), out=str(out)) == 0
    results = _complete(out)
    assert results["full"].training.trainable_params == results["full"].training.total_params
    assert results["bone"].training.trainable_params < results["full"].training.trainable_params / 10


def test_every_method_runs_under_zero3_on_two_ranks_and_reloads(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "disha_bench.cli", "run", str(_suite(tmp_path, 3, save_adapter=True)), "--out", str(out),
         "--nproc", "2"],
        capture_output=True, text=True, timeout=1800,
    )
    logs = "".join(p.read_text()[-1500:] for p in (out / ".runs").glob("*.log"))
    assert proc.returncode == 0, proc.stdout[-3000:] + logs
    results = _complete(out)
    for name, result in results.items():
        assert result.run.world_size == 2 and len(result.memory.per_rank_train_peak_mb) == 2
        assert _reloaded_loss(out, result) == pytest.approx(result.heldout.points[-1].loss, rel=1e-4), name


def _reloaded_loss(out: Path, result) -> float:
    """Held-out loss of the saved adapter (or model, for `full`) loaded with plain transformers/PEFT."""
    from peft import PeftModel

    from disha_bench import models, tasks
    from disha_bench.training.heldout import run_heldout_loss

    saved = out / "adapters" / result.run.run_id
    config = result.run.config
    task = tasks.get(config["task"]["name"])
    if result.run.method == "full":
        model = type(models.load_model(config["model"]["name"], task.head, task.num_labels)).from_pretrained(saved)
    else:
        base = models.load_model(config["model"]["name"], task.head, task.num_labels)
        model = PeftModel.from_pretrained(base, saved)
    return run_heldout_loss(model, result)
