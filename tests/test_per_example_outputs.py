"""Schema v3 production pieces: the held-out schedule, per-example losses and scores, example ids,
per-seed sampling and the cost phase's order. (The real tiny runs that carry them end to end:
tests/test_smoke_suite.py.)

    python -m pytest -q tests/test_per_example_outputs.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from disha_bench import tasks
from disha_bench.config.expansion import expand_runs
from disha_bench.config.suite import EvaluationConfig, load_suite
from disha_bench.tasks.base import IGNORE_INDEX, example_ids
from disha_bench.training.heldout import Schedule, example_losses

SMOKE = Path(__file__).resolve().parents[1] / "suites" / "smoke.yaml"


def test_schedule_is_dense_first_then_spaced_and_heldout_every_still_works():
    default = Schedule.of(EvaluationConfig(), max_steps=30)
    assert [s for s in range(1, 31) if default.is_due(s)] == [1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert default.describe() == "step 0, every step to 3, then every 3, and the last step"
    dense = Schedule.of(EvaluationConfig(heldout_every=10, heldout_dense_steps=5), max_steps=30)
    assert [s for s in range(1, 31) if dense.is_due(s)] == [1, 2, 3, 4, 5, 10, 20, 30]
    uniform = Schedule.of(EvaluationConfig(heldout_every=10, heldout_dense_steps=0), max_steps=30)
    assert [s for s in range(1, 31) if uniform.is_due(s)] == [10, 20, 30]


def test_new_suite_fields_are_validated(tmp_path):
    from disha_bench.core.errors import UserError

    with pytest.raises(UserError, match="evaluation.heldout_dense_steps"):
        load_suite(SMOKE, ["evaluation.heldout_dense_steps=-1"])
    with pytest.raises(UserError, match="evaluation.heldout_dense_steps"):
        load_suite(SMOKE, ["evaluation.heldout_dense_steps=many"])
    with pytest.raises(UserError, match="cost.repeats"):
        load_suite(SMOKE, ["cost.repeats=-1"])
    with pytest.raises(UserError, match="cost.steps"):
        load_suite(SMOKE, ["cost.steps=1"])  # the first step is warm-up: at least one more is measured
    with pytest.raises(UserError, match="tasks\\[0\\].sample_seed"):
        load_suite(SMOKE, ["tasks.0.sample_seed=true"])
    assert load_suite(SMOKE, ["cost.repeats=0"])[0].cost.repeats == 0


def test_example_losses_are_the_rows_of_the_models_mean_loss():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    labels[:, :2] = IGNORE_INDEX  # the prompt
    labels[2, 2:4] = IGNORE_INDEX  # a shorter answer
    rows = example_losses(logits, labels)
    for row, (lg, lb) in enumerate(zip(logits, labels)):
        assert rows[row] == pytest.approx(float(F.cross_entropy(lg[:-1], lb[1:], ignore_index=IGNORE_INDEX)), rel=1e-6)
    classes = torch.randn(4, 3)
    targets = torch.tensor([0, 2, 1, 2])
    assert sum(example_losses(classes, targets)) / 4 == pytest.approx(float(F.cross_entropy(classes, targets)), rel=1e-6)
    scores, gold = torch.randn(4, 1), torch.randn(4)
    assert sum(example_losses(scores, gold)) / 4 == pytest.approx(float(F.mse_loss(scores[:, 0], gold)), rel=1e-6)


def test_example_ids_are_stable_and_unique():
    records = [{"q": "a"}, {"q": "b"}, {"q": "a"}, {"task_id": "HumanEval/3"}]
    ids = example_ids(records)
    assert ids == example_ids([dict(r) for r in records])  # content, not identity or order of creation
    assert len(set(ids)) == 4 and ids[2] == ids[0] + "#2" and ids[3] == "HumanEval/3"


def test_each_seed_draws_its_own_sample_unless_the_suite_fixes_it():
    suite, _ = load_suite(SMOKE, ["seeds=[0,1]"])
    by_seed = {(r.seed, r.method.label): r.task.sample_seed for r in expand_runs(suite) if r.task.name == "synthetic-sentiment"}
    assert by_seed[(0, "bone")] == 0 and by_seed[(1, "bone")] == 1 and by_seed[(1, "lora")] == 1
    fixed, _ = load_suite(SMOKE, ["seeds=[0,1]", "tasks.0.sample_seed=7"])
    assert {r.task.sample_seed for r in expand_runs(fixed) if r.task.name == "synthetic-sentiment"} == {7}

    def drawn(seed):
        task = tasks.get("synthetic-arith")
        config = {**task.options, "name": task.name, "train_limit": 32, "eval_limit": 8, "sample_seed": seed}
        train, evaluation = task.load(config, None)
        return example_ids(train), example_ids(task.heldout(8)), example_ids(evaluation)

    assert drawn(0) == drawn(0)
    assert all(a != b for a, b in zip(drawn(0), drawn(1)))  # training subset, held-out set, evaluation sample


def test_per_example_scores_hold_what_corpus_metrics_need():
    sentiment = tasks.get("synthetic-sentiment")
    metrics, columns = sentiment.score_examples([{"label": 1, "prediction": 1}, {"label": 0, "prediction": 1}])
    assert metrics["accuracy"] == 0.5 and columns == {"prediction": [1, 1], "label": [1, 0], "accuracy": [1.0, 0.0]}
    arith = tasks.get("synthetic-arith")
    metrics, columns = arith.score_examples([{"target": "5", "output": " 2 + 3 = 5\n#### 5"}, {"target": "4", "output": "#### 3"}])
    assert metrics["exact_match"] == 0.5 and columns == {"exact_match": [1.0, 0.0]}


def test_cost_phase_interleaves_methods_in_rounds_drawn_from_the_seed():
    from disha_bench.running.cost import interleaved

    suite, _ = load_suite(SMOKE, ["seeds=[0,1]"])
    runs = [r for r in expand_runs(suite) if r.task.name == "synthetic-sentiment" and not r.is_unadapted]
    for seed in (0, 1):
        members = [r for r in runs if r.seed == seed]
        order = [r.method.label for r in interleaved(members, 4, "synthetic-sentiment", seed)]
        rounds = [order[i : i + 3] for i in range(0, 12, 3)]
        assert all(sorted(r) == ["bat", "bone", "lora"] for r in rounds)  # A B C, A B C: each method once a round
        assert order == [r.method.label for r in interleaved(members, 4, "synthetic-sentiment", seed)]
        assert len({tuple(r) for r in rounds}) > 1  # the order is drawn again each round
    orders = {s: [r.method.label for r in interleaved([r for r in runs if r.seed == s], 4, "synthetic-sentiment", s)]
              for s in (0, 1)}
    assert orders[0] != orders[1]
