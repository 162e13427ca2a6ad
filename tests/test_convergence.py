"""Convergence metrics and seed statistics against hand-computed and scipy values.

    pytest tests/test_convergence.py -q
"""

import math

import pytest
from scipy import stats as scipy_stats

from disha_bench.analysis import convergence, stats
from disha_bench.config import targets as target_specs
from disha_bench.contracts.results import StepLog
from disha_bench.core.errors import UserError

# A known curve: losses 4, 3, 2, 1, 1, 1, 1, 1; 10 tokens a step; grad norms 1..8.
LOSSES = [4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]
STEPS = [{"step": i + 1, "loss": v, "tokens": 10, "grad_norm": float(i + 1)} for i, v in enumerate(LOSSES)]


def test_ema_is_bias_corrected_and_matches_hand_values():
    # beta 0.5: m1 = 2 -> 2/0.5 = 4; m2 = 1 + 1 = 2 -> 2/0.75; m3 = 1 + 1 = 2 -> 2/0.875
    assert convergence.smooth([4.0, 2.0, 2.0], 0.5) == pytest.approx([4.0, 2 / 0.75, 2 / 0.875])
    assert convergence.smooth(LOSSES, 0.0) == LOSSES
    # A constant curve stays constant (no drag towards zero at the start).
    assert convergence.smooth([3.0] * 5, 0.9) == pytest.approx([3.0] * 5)
    with pytest.raises(ValueError):
        convergence.smooth([1.0], 1.0)


def test_summarize_known_curve_unsmoothed():
    s = convergence.summarize(STEPS, [1.5, 0.5, "final:lora"], ema=0.0)
    assert [t["step"] for t in s["targets"]] == [4, None, None]
    assert s["targets"][0]["tokens"] == 40
    assert s["targets"][2]["spec"] == "final:lora" and s["target_specs"] == [1.5, 0.5, "final:lora"]
    assert s["curve_area"] == pytest.approx(sum(LOSSES) / 8 / 4.0)  # 0.4375
    assert s["loss_at_budget"] == {"25%": 3.0, "50%": 1.0, "100%": 1.0}
    assert s["grad_norm_first"] == 1.0
    assert s["grad_norm_start_mean"] == pytest.approx(3.0)  # mean of 1..5
    assert s["first_loss"] == 4.0 and s["final_loss"] == 1.0 and s["min_loss"] == 1.0
    assert s["definitions"]["ema"] == {"beta": 0.0, "bias_corrected": True, "time_constant_steps": 1.0}


def test_summarize_smoothed_target_and_budget():
    s = convergence.summarize([StepLog(**row, lr=1e-3, step_time_s=0.1) for row in STEPS], [1.5], ema=0.5, budget=16)
    curve = convergence.smooth(LOSSES, 0.5)
    assert s["smoothed_loss"] == pytest.approx(curve)
    # First smoothed value <= 1.5 (the EMA lags the raw curve, which gets there at step 4).
    assert s["targets"][0]["step"] == next(i + 1 for i, v in enumerate(curve) if v <= 1.5) == 5
    # Budget 16 but only 8 steps logged: 25% = step 4, 50% = step 8, 100% = not reached.
    assert s["loss_at_budget"] == {"25%": pytest.approx(curve[3]), "50%": pytest.approx(curve[7]), "100%": None}
    assert s["curve_area"] == pytest.approx(sum(curve) / 8 / 4.0)


def test_summarize_empty_and_nan():
    assert convergence.summarize([], [1.0], 0.9)["targets"][0]["step"] is None
    s = convergence.summarize([{"step": 1, "loss": 2.0, "tokens": 1}, {"step": 2, "loss": float("nan"), "tokens": 1}], [], 0.9)
    assert s["final_loss"] is None and s["curve_area"] is None and s["grad_norm_start_mean"] is None


def test_is_diverged():
    assert convergence.is_diverged(float("nan"), 1.0, 4.0)
    assert convergence.is_diverged(float("inf"), 1.0, 4.0)
    assert convergence.is_diverged(4.01, 1.0, 4.0)
    assert not convergence.is_diverged(3.9, 1.0, 4.0)


def _result(method, losses, status="complete", every=10, seconds_per_step=0.5):
    """A result dict with a held-out curve measured at steps 0, every, 2 every, ..."""
    points = [{"step": i * every, "loss": v, "train_time_s": i * every * seconds_per_step, "tokens": i * every * 100}
              for i, v in enumerate(losses)]
    return {"run": {"method": method, "status": status}, "heldout": {"points": points}}


def test_resolve_heldout_targets():
    results = [_result("lora", [2.0, 1.5, 1.0]), _result("lora", [2.0, 1.2, 0.6]), _result("bone", [2.0, 0.2]),
               _result("bone", [9.0, 9.0], status="failed"),
               _result("bat", [2.0, 1.9, 1.8], status="evaluation_failed")]  # trained: its curve counts
    specs = [0.5, "final:lora", "min:bone", "final:*", "final:nobody", "frac:0.5:lora", "frac:1:lora", "final:bat"]
    got = convergence.resolve_targets(specs, results)
    # frac: halfway from the mean step-0 loss (2.0) to lora's mean final loss (0.8).
    assert got == [0.5, pytest.approx(0.8), 0.2, pytest.approx(1.8), None, pytest.approx(1.4), pytest.approx(0.8),
                   pytest.approx(1.8)]


def test_crossing_is_the_interval_between_measured_points():
    # Issue 21 changed this on purpose: a crossing is the interval between the last point above and the
    # first point below (not a point interpolated as if exact); the wall-clock figure stays interpolated.
    points = _result("x", [2.0, 1.6, 1.0, 0.9])["heldout"]["points"]  # steps 0, 10, 20, 30
    hit = convergence.crossing(points, 1.3)
    # 1.6 at step 10 -> 1.0 at step 20: somewhere in steps 11..20, tokens 1100..2000; 7.5 s interpolated.
    assert hit == {"target": 1.3, "status": "reached", "step": 20.0, "step_low": 11.0, "tokens": 2000.0,
                   "tokens_low": pytest.approx(1100.0), "time_s": pytest.approx(7.5)}
    assert convergence.crossing(points, 1.0)["step"] == 20.0  # exactly on a point
    # A single dip below the target, followed by a rise, does not count: the curve must stay below.
    noisy = _result("x", [2.0, 1.2, 1.5, 1.1, 1.0])["heldout"]["points"]
    assert (convergence.crossing(noisy, 1.3)["step_low"], convergence.crossing(noisy, 1.3)["step"]) == (21.0, 30.0)
    # Below only at the last point: that point (nothing measured after it says otherwise).
    assert convergence.crossing(noisy, 1.05)["step"] == 40.0
    assert convergence.crossing(points, 0.5)["status"] == "not_reached"
    # At or above the unadapted model's loss a target says nothing about training: invalid, never reached.
    assert convergence.crossing(points, 2.0)["status"] == "invalid"
    assert convergence.crossing(points, 2.5)["status"] == "invalid"
    assert convergence.crossing(points, None)["status"] == "unresolved"
    assert convergence.crossing([], 1.0)["status"] == "unresolved"


def test_censored_summary_never_averages_a_miss_in():
    reached = ["reached", "reached", "not_reached"]
    s = convergence.censored_summary([10.0, 30.0, None], reached, budget=40)
    assert (s["reached"], s["n"], s["median"], s["censored"]) == (2, 3, 30.0, False)
    s = convergence.censored_summary([10.0, None, None], ["reached", "not_reached", "not_reached"], budget=40)
    assert (s["reached"], s["n"], s["median"], s["censored"]) == (1, 3, None, True)  # printed ">40"
    s = convergence.censored_summary([None, 5.0, None], ["invalid", "reached", "not_reached"], budget=40)
    assert (s["reached"], s["n"], s["invalid"], s["censored"]) == (1, 2, 1, True)


def test_target_specs_validated():
    with pytest.raises(UserError, match="expected a loss"):
        target_specs.parse_target("last:lora")
    with pytest.raises(UserError, match=r"fraction must be a number in \(0, 1\]"):
        target_specs.parse_target("frac:1.5:lora", file="s.yaml", key="convergence.targets[0]")
    with pytest.raises(UserError, match="fraction"):
        target_specs.parse_target("frac:half:lora")
    with pytest.raises(UserError, match="expected a loss"):
        target_specs.parse_target("frac:0.5")
    with pytest.raises(UserError, match="did you mean 'lora'"):
        target_specs.check_targets([0.5, "final:lorra"], ["lora", "bone"])
    with pytest.raises(UserError, match="did you mean 'lora'"):
        target_specs.check_targets(["frac:0.5:lorra"], ["lora", "bone"])
    target_specs.check_targets([0.5, "0.3", "final:*", "min:bone", "frac:0.5:lora", "frac:1:*"], ["lora", "bone"])
    assert target_specs.parse_target("frac:0.25:bone") == target_specs.Target("frac", "bone", 0.25)


def test_aggregate_matches_scipy():
    values = [1.0, 2.0, 4.0]
    agg = stats.aggregate(values)
    low, high = scipy_stats.t.interval(0.95, 2, loc=7 / 3, scale=scipy_stats.sem(values))
    assert agg["mean"] == pytest.approx(7 / 3)
    assert agg["std"] == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert (agg["ci_low"], agg["ci_high"]) == pytest.approx((low, high))
    assert agg["n"] == 3


def test_aggregate_small_and_dirty_inputs():
    assert stats.aggregate([2.5]) == {"mean": 2.5, "std": None, "n": 1, "ci_low": None, "ci_high": None}
    assert stats.aggregate([])["mean"] is None
    assert stats.aggregate([None, float("nan"), 1.0, 3.0])["n"] == 2
