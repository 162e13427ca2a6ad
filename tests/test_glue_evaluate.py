"""Our GLUE scores equal Hugging Face evaluate's official GLUE metric, task by task.

    DISHA_BENCH_DATA=../shared/data python -m pytest tests/test_glue_evaluate.py

The official module (`evaluate.load("glue", config)` on the hub) is read offline from the shared
data folder, `evaluate-metrics/glue` (see its SOURCES.md); it is never copied into the project.
Every GLUE task's `score` (through `disha_bench.tasks.metrics_glue`) is compared with it on seeded random
labels and predictions, several draws per task: equal to 1e-12 (STS-B: to float32 precision, the
precision evaluate computes its correlations in).
"""

from __future__ import annotations

import os
from pathlib import Path

import evaluate
import numpy as np
import pytest

from disha_bench import tasks
from disha_bench.tasks.glue import SPECS

METRIC_DIR = Path(os.environ.get("DISHA_BENCH_DATA", ".")) / "evaluate-metrics" / "glue"
# evaluate's names for our metric keys
THEIRS = {"mcc": "matthews_correlation", "accuracy": "accuracy", "f1": "f1", "pearson": "pearson", "spearman": "spearmanr"}


def _draw(spec, rng: np.random.Generator, n: int) -> tuple[list, list]:
    if spec.labels is None:  # STS-B: similarity scores in [0, 5], a noisy regression output
        labels = rng.uniform(0, 5, n)
        predictions = labels + rng.normal(0, 1.5, n)
        # evaluate stores float scores as float32 and scipy then correlates in float32: draw
        # values float32 holds exactly, and compare at float32 precision (below)
        return labels.astype(np.float32).tolist(), predictions.astype(np.float32).tolist()
    classes = spec.classes()
    return rng.integers(0, classes, n).tolist(), rng.integers(0, classes, n).tolist()


@pytest.mark.needs_data("evaluate-metrics/glue")
@pytest.mark.parametrize("name", [spec.name for spec in SPECS])
def test_scores_equal_evaluate_glue(name):
    spec = next(s for s in SPECS if s.name == name)
    official = evaluate.load(str(METRIC_DIR), name)
    task = tasks.get(name)
    rng = np.random.default_rng(sum(map(ord, name)))
    for n in (7, 50, 400):
        labels, predictions = _draw(spec, rng, n)
        ours = task.score([{"label": a, "prediction": b} for a, b in zip(labels, predictions)])
        theirs = official.compute(predictions=predictions, references=labels)
        shared = {key: THEIRS[key] for key in ours if THEIRS.get(key) in theirs}
        assert set(theirs) == set(shared.values()), (ours, theirs)  # every official number is ours too
        tolerance = {"rel": 1e-6} if spec.labels is None else {"abs": 1e-12}
        for key, their_key in shared.items():
            assert ours[key] == pytest.approx(theirs[their_key], **tolerance), (name, n, key, ours, theirs)
        assert task.primary_metric in shared
