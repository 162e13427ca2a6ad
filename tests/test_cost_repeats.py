"""Cost figures from repeated, interleaved measurements (schema v3 `cost.repeats`): the median per
run, the repeats' range as its repeatability, a difference claimed only beyond it and the margin;
single readings (v2) fall back to the re-run repeatability, labelled."""

from __future__ import annotations

import pytest
from report_fixtures import make

from disha_bench.analysis import compare, verdicts
from disha_bench.analysis.report_tables import repeatability_note

BASE = {"lora": 1500.0, "bone": 1200.0, "bat": 1490.0}  # Bone 20% below LoRA; Bat 0.7% below


def _runs(with_repeats: bool = True) -> list:
    runs = []
    for seed in range(5):
        for method, peak in BASE.items():
            r = make("synth-gen", method, seed)
            wobble = [1.0, 1.004, 0.997][seed % 3]
            if with_repeats:  # three short repeats, interleaved; 1% apart
                r.cost = {"protocol": "3 repeats of 4 steps, A B C interleaved, order by seed",
                          "repeats": [{"peak_mb": peak * wobble * f, "tokens_per_s": 400.0 * f, "step_time_s": 0.16 / f,
                                       "increment_mb": None, "position": k, "steps": 4}
                                      for k, f in enumerate((0.995, 1.0, 1.005))]}
            runs.append(r)
    return runs


def test_repeats_give_the_median_and_a_measured_repeatability():
    (a,) = compare.analyze_suite(_runs())
    assert a.methods["bone"].values["peak_mb"][0] == pytest.approx(1200.0)  # median of the repeats
    value, source = a.repeatability["peak_mb"]
    assert value == pytest.approx(0.01, rel=0.01) and source.startswith("measured")
    assert a.methods["bone"].values["train_time_s"][0] == pytest.approx(0.16 * 20)  # median step x steps
    assert "measured" in repeatability_note([a])


def test_a_cost_difference_is_claimed_only_beyond_repeatability_and_margin():
    (a,) = compare.analyze_suite(_runs())
    assert a.comparisons[("bone", "peak_mb")].verdict == verdicts.BETTER  # 20% less, repeats 1% apart
    assert a.comparisons[("bat", "peak_mb")].verdict != verdicts.BETTER  # 0.7%: inside the 3% margin


def test_single_readings_fall_back_to_the_re_run_repeatability_labelled():
    (a,) = compare.analyze_suite(_runs(with_repeats=False))
    value, source = a.repeatability["peak_mb"]
    assert value == verdicts.SINGLE_READING_REPEATABILITY["peak_mb"] and source.startswith("single reading")
    assert "single reading" in repeatability_note([a])
