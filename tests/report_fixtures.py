"""Constructed result files for the report tests, and the committed golden fixtures.

    python tests/report_fixtures.py      # rewrites tests/fixtures/report-synth/*.json (then re-bless the golden file)

Two tasks (a classifier scored on 16 examples, a loss-scored generator), LoRA (the reference), Bone
and Bat over 3 seeds, an unadapted reference run per task, a majority-class score, one run stopped by
its time budget, one whose evaluation failed, one failed, and one run from another commit.
Bone learns fastest, Bat close behind, LoRA slowest; Bone uses less memory.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from disha_bench.contracts.metrics import Metric, declare, share_of_examples
from disha_bench.contracts.results import (
    BUDGET_STOPPED,
    COMPLETE,
    EVAL_FAILED,
    FAILED,
    HeldOut,
    HeldOutPoint,
    Memory,
    Meta,
    RunInfo,
    RunResult,
    StepLog,
    Throughput,
    Training,
)
from disha_bench.core.io import write_json_atomic

FOLDER = Path(__file__).resolve().parent / "fixtures" / "report-synth"
STEPS, EVERY = 20, 4
TAU = {"lora": 14.0, "bone": 4.0, "bat": 5.0}
MEMORY = {"lora": 1500.0, "bone": 1200.0, "bat": 1260.0}
SPEED = {"lora": 400.0, "bone": 420.0, "bat": 330.0}
ACCURACY = {"lora": 0.70, "bone": 0.80, "bat": 0.80}
COMMAND = "disha-bench run suites/synth.yaml"
ACCURACY_METRIC = share_of_examples("accuracy", "share of the 16 examples classified correctly")
VALIDATION_LOSS = Metric("validation_loss", higher_is_better=False, lower=0.0, help="mean loss on the validation set")


def make(task: str, method: str, seed: int, status: str = COMPLETE, commit: str = "c0ffee1234") -> RunResult:
    rng = random.Random(f"{task}/{method}/{seed}")
    unadapted = method == "unadapted"
    start = 2.0 + 0.05 * seed
    steps = 0 if unadapted else (12 if status == BUDGET_STOPPED else STEPS)
    loss = lambda t: 0.6 + (start - 0.6) * math.exp(-t / TAU.get(method, 1e9)) + rng.gauss(0, 0.01) * (t > 0)  # noqa: E731
    speed = SPEED.get(method, 400.0) * (1 + rng.gauss(0, 0.02))
    points = [HeldOutPoint(step=t, loss=round(loss(t), 5), train_time_s=round(t * 64 / speed, 4), tokens=64 * t)
              for t in sorted({*range(0, steps + 1, EVERY), steps})]
    evaluated = status in (COMPLETE, BUDGET_STOPPED)
    evaluation = {}
    if evaluated and task == "synth-cls":
        correct = min(16, round(16 * (0.5 if unadapted else ACCURACY[method]) + rng.choice([-1, 0, 1])))
        evaluation = declare({"accuracy": correct / 16, "primary_metric": "accuracy", "n_examples": 16,
                              "majority_class": {"label": 1, "accuracy": 0.5625}}, {"accuracy": ACCURACY_METRIC})
    elif evaluated:
        evaluation = declare({"validation_loss": points[-1].loss + 0.02, "primary_metric": "validation_loss",
                              "n_examples": 32}, {"validation_loss": VALIDATION_LOSS})
    peak = MEMORY.get(method, 900.0) * (1 + rng.gauss(0, 0.005))
    return RunResult(
        run=RunInfo(run_id=f"{task}-{method}-s{seed}-0000abcd", suite="synth", task=task, method=method, seed=seed,
                    status=status, error={FAILED: "worker exited with code -9", EVAL_FAILED: "CUDA error in generate"}.get(status),
                    config={"method": {"name": "none" if unadapted else method}, "training": {"max_steps": STEPS, "lr": 1e-3}},
                    finished_at=f"2026-11-30T10:{seed:02d}:00+00:00", wall_time_s=30.0,
                    analysis={"reference": "lora", "targets": ["frac:0.5:lora"]}, node="ci-box"),
        training=None if status == FAILED or unadapted else Training(
            trainable_params={"lora": 24576, "bone": 24576, "bat": 24576}[method], total_params=1_000_000,
            steps=[StepLog(step=t, loss=loss(t) + 0.1, lr=1e-3, grad_norm=1.0, tokens=64, step_time_s=64 / speed)
                   for t in range(1, steps + 1)]),
        heldout=None if status == FAILED else HeldOut(n_examples=32, source="validation split", every=EVERY, points=points),
        evaluation=evaluation,
        memory=None if status == FAILED else Memory(device="cpu", peak_mb=round(peak, 1), per_rank_peak_mb=[round(peak, 1)]),
        throughput=None if status == FAILED or unadapted else Throughput(tokens_per_s=round(speed, 2), train_time_s=steps * 64 / speed),
        meta=Meta(versions={"torch": "2.13.0"}, git_commit=commit, git_dirty=False, hardware={"cpu": "test cpu"},
                  command=COMMAND if status != BUDGET_STOPPED else COMMAND + " --only 'synth-gen/bat' --fresh"),
    )


def all_results() -> list[RunResult]:
    special = {("synth-gen", "bat", 2): BUDGET_STOPPED, ("synth-cls", "bat", 1): EVAL_FAILED,
               ("synth-cls", "lora", 2): FAILED}
    out = []
    for task in ("synth-cls", "synth-gen"):
        out.append(make(task, "unadapted", 0))
        for method in ("lora", "bone", "bat"):
            for seed in (0, 1, 2):
                status = special.get((task, method, seed), COMPLETE)
                out.append(make(task, method, seed, status, commit="0ddba11999" if status == BUDGET_STOPPED else "c0ffee1234"))
    return out


def write(folder: Path, results: list[RunResult]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        write_json_atomic(folder / f"{r.run.run_id}.json", r.to_dict())
    return folder


if __name__ == "__main__":
    for old in FOLDER.glob("*.json"):
        old.unlink()
    print(write(FOLDER, all_results()))
