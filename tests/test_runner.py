"""The runner end to end with real DeepSpeed engines on CPU (tiny Llama, real SmolLM2 tokenizer).

- 1 rank and 2 ranks (torchrun, gloo) give the same fp32 loss curve at the same global batch,
  under ZeRO-2 and ZeRO-3; the adapter saved under ZeRO-3 reloads to the trained loss.
- Same seed and config twice: bitwise identical loss curves.
- SIGKILL in the middle of a suite: the re-run finishes, skips finished runs, keeps their bytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from disha_bench.contracts.results import load_results, read_result
from disha_bench.running.runner import run_suite

# One-rank runs go through `run_suite` in this process (its workers fork from one preloaded fork
# server); the two-rank runs and the run that is killed start real `disha-bench` processes.
pytestmark = pytest.mark.slow

SUITE = {
    "name": "runner-test",
    "model": {"name": "tiny-llama"},
    "tasks": [{"name": "synthetic-sentiment", "train_limit": 64, "eval_limit": 16}],
    "methods": [{"name": "bone", "r": 16}],
    "training": {"max_steps": 6, "lr": 1.0e-3, "batch_size": 4, "max_length": 32, "zero_stage": 2, "warmup_steps": 0},
    "seeds": [0],
    "evaluation": {"batch_size": 8},
    "analysis": {"unadapted": False},
    "output": {"report": False},
}


def _suite(tmp_path: Path, **changes) -> Path:
    suite = json.loads(json.dumps(SUITE))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            suite[section][field] = value
        else:
            suite[section] = value
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _run(suite: Path, out: Path, *overrides: str) -> str:
    """One rank, in process; returns what the runner printed."""
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run_suite(str(suite), out=str(out), overrides=list(overrides))
    assert code == 0, printed.getvalue()[-3000:] + _worker_logs(out)
    return printed.getvalue()


def _run_cli(suite: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "disha_bench.cli", "run", str(suite), "--out", str(out), *extra],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + _worker_logs(out)
    return proc


def _worker_logs(out: Path) -> str:
    return "".join(p.read_text()[-3000:] for p in (out / ".runs").glob("*.log")) if (out / ".runs").exists() else ""


def _losses(out: Path) -> list[float]:
    (result,) = load_results(out)
    assert result.run.status == "complete", result.run.error
    return [s.loss for s in result.training.steps]


@pytest.mark.parametrize("stage", [2, 3])
def test_one_rank_and_two_ranks_give_the_same_curve(tmp_path, stage):
    deepspeed = {"zero_optimization": {"stage3_param_persistence_threshold": 0}} if stage == 3 else {}
    suite = _suite(tmp_path, training__zero_stage=stage, training__deepspeed=deepspeed, output={"report": False, "save_adapter": stage == 3})
    _run(suite, tmp_path / "one", "training.batch_size=4")
    _run_cli(suite, tmp_path / "two", "--set", "training.batch_size=2", "--nproc", "2")
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == 6 and one[-1] < one[0]
    assert two == pytest.approx(one, rel=1e-5, abs=1e-6)
    (result,) = load_results(tmp_path / "two")
    assert result.run.world_size == 2 and len(result.memory.per_rank_train_peak_mb) == 2
    assert len(result.memory.per_rank_peak_mb) == 2 and result.memory.peak_mb == result.memory.per_rank_peak_mb[0]
    # The held-out curve is the same on 2 ranks (each evaluates its shard) as on one.
    (single,) = load_results(tmp_path / "one")
    assert [p.loss for p in result.heldout.points] == pytest.approx([p.loss for p in single.heldout.points], rel=1e-5)
    # ... and so is every example's own loss, gathered back into the set's order.
    assert result.heldout.example_ids == single.heldout.example_ids
    for two_ranks, one_rank in zip(result.heldout.points, single.heldout.points):
        assert two_ranks.per_example == pytest.approx(one_rank.per_example, rel=1e-4)
    if stage == 3:
        _assert_adapter_reloads_to_trained_loss(tmp_path / "two", result)


def _assert_adapter_reloads_to_trained_loss(out: Path, result) -> None:
    import torch
    from peft import PeftModel

    from disha_bench import models
    from disha_bench.training.heldout import run_heldout_loss

    adapter = out / "adapters" / result.run.run_id
    assert (adapter / "adapter_config.json").exists()
    config = result.run.config
    torch.manual_seed(config["seed"])  # the new classification head is initialised as in the run
    base = models.load_model(config["model"]["name"], "sequence_classification", 2)
    untrained = run_heldout_loss(base, result)  # before PEFT injects the adapter into `base` in place
    reloaded = run_heldout_loss(PeftModel.from_pretrained(base, adapter), result)
    trained = result.heldout.points[-1].loss
    assert reloaded == pytest.approx(trained, rel=1e-4)
    assert untrained == pytest.approx(result.heldout.points[0].loss, rel=1e-4)  # step 0 is the unadapted model
    assert abs(untrained - trained) > 1e-3  # the reload really carries the training


def test_same_seed_same_config_is_bitwise_identical(tmp_path):
    suite = _suite(tmp_path)
    _run(suite, tmp_path / "a")
    _run(suite, tmp_path / "b")
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    (a,), (b,) = load_results(tmp_path / "a"), load_results(tmp_path / "b")
    # The held-out curve: step 0 (unadapted), every max(1, 6 // 10) = 1 steps, deterministic too.
    assert [p.step for p in a.heldout.points] == list(range(7))
    assert [p.loss for p in a.heldout.points] == [p.loss for p in b.heldout.points]
    assert a.heldout.n_examples == 64 and a.heldout.source.startswith("extra generated")
    # Its cost is timed apart: the curve's training time is the loop's, held-out evaluation excluded.
    assert a.heldout.points[-1].train_time_s == pytest.approx(a.throughput.train_time_s)
    assert a.heldout.points[-1].tokens == sum(s.tokens for s in a.training.steps)
    assert a.heldout.eval_time_s > 0
    assert {k: a.run.analysis[k] for k in ("reference", "targets")} == {"reference": "bone", "targets": []} and a.run.node


def test_sigkill_then_rerun_resumes_and_keeps_finished_files(tmp_path):
    suite = _suite(tmp_path, methods=[{"name": "lora", "r": 4}, {"name": "bone", "r": 16}], seeds=[0, 1])
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "disha_bench.cli", "run", str(suite), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline and len(list(out.glob("*.json"))) < 2:
        time.sleep(0.5)
        assert proc.poll() is None, "the suite ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the suite and the worker in the middle of its run
    proc.wait()
    finished = {p.name: p.read_bytes() for p in out.glob("*.json")}
    assert len(finished) >= 2

    assert _run(suite, out).count("skipped") == len(finished)
    files = sorted(out.glob("*.json"))
    assert len(files) == 4
    for path in files:
        json.loads(path.read_text())  # every result file is valid JSON
        assert read_result(path).run.status == "complete"
    for name, content in finished.items():
        assert (out / name).read_bytes() == content
