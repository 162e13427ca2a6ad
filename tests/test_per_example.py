"""Per-example outputs (schema v3): same-example differences with a two-way bootstrap over seeds and
examples replace the Newcombe hull; v2 results keep it."""

from __future__ import annotations

import random

import pytest
from report_fixtures import make

from disha_bench.analysis import compare, stats

N = 200


def _runs(rate: dict[str, float], shared_ids: bool = True, heldout: bool = False) -> list:
    """synth-cls runs scored on N examples each, every example right with probability rate[method];
    the two methods agree on the examples both get right (same draw), as close methods do."""
    runs = []
    for seed in range(3):
        rng = random.Random(seed)
        ids = [f"{'' if shared_ids else f's{seed}-'}ex{i}" for i in range(N)]
        draws = [rng.random() for _ in ids]
        for method in ("lora", "bone"):
            r = make("synth-cls", method, seed)
            scores = [float(u < rate[method]) for u in draws]
            r.evaluation.update(accuracy=sum(scores) / N, n_examples=N, per_example={"ids": ids, "accuracy": scores})
            if heldout:
                r.heldout.example_ids = ids
                r.heldout.points[-1].per_example = [1.0 - 0.5 * s + 0.01 * seed for s in scores]
            runs.append(r)
    return runs


def test_same_example_differences_replace_the_newcombe_hull():
    (a,) = compare.analyze_suite(_runs({"lora": 0.70, "bone": 0.80}))
    c = a.comparisons[("bone", "metric:accuracy")]
    assert "bootstrap" in c.extra and "n_examples" not in c.extra  # no Newcombe hull, no pooled counts
    # Bone is right wherever LoRA is, plus about 10% more: every discordant example favours Bone.
    assert c.extra["discordant"]["reference_only"] == 0 and c.extra["discordant"]["method_only"] > 0
    assert c.estimate == pytest.approx(0.10, abs=0.03) and 0 < c.ci_low < c.estimate < c.ci_high
    assert c.p_value >= 2 / (stats.BOOTSTRAP_REPLICATES + 1)  # never 0
    # v2 results (no per-example outputs) keep the seeds-plus-Newcombe rule.
    for r in (old := _runs({"lora": 0.70, "bone": 0.80})):
        del r.evaluation["per_example"]
    (v2,) = compare.analyze_suite(old)
    assert v2.comparisons[("bone", "metric:accuracy")].extra["n_examples"] == N


def test_each_seed_drawing_its_own_examples_is_bootstrapped_within_seeds():
    (a,) = compare.analyze_suite(_runs({"lora": 0.70, "bone": 0.80}, shared_ids=False))
    c = a.comparisons[("bone", "metric:accuracy")]
    assert "bootstrap" in c.extra and c.ci_low < c.estimate < c.ci_high


def test_a_method_against_itself_example_by_example_is_not_a_difference():
    (a,) = compare.analyze_suite(_runs({"lora": 0.75, "bone": 0.75}))
    c = a.comparisons[("bone", "metric:accuracy")]
    assert c.estimate == 0 and c.p_value == 1.0


def test_heldout_loss_per_example_is_paired_by_example():
    (a,) = compare.analyze_suite(_runs({"lora": 0.70, "bone": 0.80}, heldout=True))
    c = a.comparisons[("bone", "heldout_final")]
    assert "bootstrap" in c.extra and c.estimate == pytest.approx(-0.05, abs=0.02) and c.ci_high < 0
    assert c.verdict == "better"


def test_the_details_show_a_seeds_by_examples_interval_instead_of_pooled_counts(tmp_path):
    from report_fixtures import write

    from disha_bench.analysis import report

    runs = _runs({"lora": 0.70, "bone": 0.80})
    for r in runs:  # a tiny evaluation set, where v2 results show pooled counts (k/48)
        scores = r.evaluation["per_example"]["accuracy"][:16]
        r.evaluation["per_example"] = {"ids": r.evaluation["per_example"]["ids"][:16], "accuracy": scores}
        r.evaluation.update(accuracy=sum(scores) / 16, n_examples=16)
    text = report.write_report(write(tmp_path / "r", runs), tmp_path / "r.md", "x", draw=False).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| bone | accuracy |")]
    assert rows and "(seeds x examples)" in rows[0] and "/48" not in rows[0]


def test_a_seeds_by_examples_comparison_states_its_minimum_detectable_effect():
    """The primary comparisons kept per example (held-out loss here) get a minimum detectable effect
    from their bootstrap, as per-seed ones do from their spread: wider than the 95% interval's half-width
    (80% power at Holm's level), and the printed line names it."""
    from disha_bench.analysis import findings, verdicts

    (a,) = compare.analyze_suite(_runs({"lora": 0.70, "bone": 0.80}, heldout=True))
    c = a.comparisons[("bone", "heldout_final")]
    mde = verdicts.minimum_detectable_from_draws(c.extra["bootstrap"], 1)
    assert mde is not None and mde > (c.ci_high - c.ci_low) / 2 > 0
    assert verdicts.minimum_detectable_from_draws(c.extra["bootstrap"], 8) > mde  # Holm's first level is stricter
    (line,) = findings.minimum_detectable_lines([a])
    assert line.startswith("- synth-cls: held-out loss at budget ")
    shown = float(line.split("held-out loss at budget ")[1].split(";")[0].split(" ")[0])
    assert shown == pytest.approx(verdicts.minimum_detectable_from_draws(c.extra["bootstrap"], len(a.family)), rel=1e-2)
