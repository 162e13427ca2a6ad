"""The statistics of disha_bench.analysis.stats on constructed data: hand values, scipy, and error rates.

    pytest tests/test_stats.py -q

The error-rate tests simulate many repeats with a seeded RNG: an A/A comparison (no true difference)
must be claimed in at most about 5% of repeats after Holm over a family of 5 endpoints, and a 3σ shift
over 5 seeds must be claimed in at least 90% of repeats.
"""

import math
import random
import statistics

import pytest
from scipy import stats as scipy_stats

from disha_bench.analysis import stats

SEEDS = range(5)


def test_aggregate_matches_scipy_and_is_clipped_to_its_domain():
    xs = [0.0625, 0.0, 0.0]
    a = stats.aggregate(xs)
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=sum(xs) / 3, scale=scipy_stats.sem(xs))
    assert a["ci_low"] == pytest.approx(lo) and a["ci_high"] == pytest.approx(hi) and lo < 0
    clipped = stats.aggregate(xs, domain=(0.0, 1.0))
    assert clipped["ci_low"] == 0.0 and clipped["ci_high"] == pytest.approx(hi)
    assert stats.aggregate([]) == {"mean": None, "std": None, "n": 0, "ci_low": None, "ci_high": None}
    assert stats.aggregate([2.0, None, float("nan")])["n"] == 1


def test_paired_difference_matches_scipy_ttest_rel():
    ref = {0: 1.0, 1: 2.0, 2: 1.5, 3: 1.7}
    new = {0: 1.3, 1: 2.1, 2: 1.9, 3: 1.8, 9: 5.0}  # seed 9 has no partner: left out
    c = stats.paired(ref, new)
    diffs = [0.3, 0.1, 0.4, 0.1]
    assert c.seeds == [0, 1, 2, 3] and c.per_seed == pytest.approx(diffs)
    assert c.estimate == pytest.approx(0.225)
    assert c.p_value == pytest.approx(scipy_stats.ttest_rel([1.3, 2.1, 1.9, 1.8], [1.0, 2.0, 1.5, 1.7]).pvalue)
    lo, hi = scipy_stats.t.interval(0.95, 3, loc=0.225, scale=scipy_stats.sem(diffs))
    assert (c.ci_low, c.ci_high) == (pytest.approx(lo), pytest.approx(hi))


def test_paired_ratio_is_the_geometric_mean_with_an_exponentiated_interval():
    c = stats.paired({0: 100.0, 1: 200.0, 2: 400.0}, {0: 50.0, 1: 100.0, 2: 220.0}, ratio=True)
    logs = [math.log(0.5), math.log(0.5), math.log(0.55)]
    assert c.ratio and c.per_seed == pytest.approx([0.5, 0.5, 0.55])
    assert c.estimate == pytest.approx(math.exp(sum(logs) / 3))
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=sum(logs) / 3, scale=scipy_stats.sem(logs))
    assert c.ci_low == pytest.approx(math.exp(lo)) and c.ci_high == pytest.approx(math.exp(hi))
    assert 0 < c.ci_low < c.estimate < c.ci_high
    # Non-positive values cannot enter a ratio.
    assert stats.paired({0: 0.0, 1: 1.0}, {0: 1.0, 1: 1.0}, ratio=True).seeds == [1]


def test_paired_edge_cases():
    one = stats.paired({0: 1.0}, {0: 2.0})
    assert one.estimate == 1.0 and one.ci_low is None and one.p_value is None  # one seed: no interval, no test
    assert stats.paired({}, {0: 1.0}).estimate is None
    # The same difference in every seed: no spread to test against, so the exact sign test, never p = 0
    # (issue 21: identical per-seed differences gave p = 0), and a point interval only where it rejects.
    same = stats.paired({0: 1.0, 1: 2.0}, {0: 2.0, 1: 3.0})
    assert same.p_value == 0.5 and (same.ci_low, same.ci_high) == (-math.inf, math.inf)
    six = stats.paired({s: 1.0 for s in range(6)}, {s: 1.001 for s in range(6)})
    assert six.p_value == pytest.approx(2 ** -5) and six.ci_low == six.ci_high == pytest.approx(0.001)
    assert stats.paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}).p_value == 1.0


def test_difference_of_a_bounded_quantity_stays_in_its_domain():
    # Accuracies in [0, 1]: a difference lies in [-1, 1] even when 2 noisy seeds make the t interval huge.
    c = stats.paired({0: 0.0, 1: 1.0}, {0: 1.0, 1: 1.0}, domain=(0.0, 1.0))
    assert -1.0 <= c.ci_low <= c.estimate <= c.ci_high <= 1.0


def test_holm_matches_hand_values():
    assert stats.holm([0.01, 0.04, 0.03, None]) == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), None]
    assert stats.holm([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]  # capped at 1, monotone


def test_holm_step_down_rejects_in_order():
    family = stats.apply_holm([stats.Paired([0], [0.0], 0.0, None, None, p) for p in (0.001, 0.02, 0.2)])
    # 0.001 * 3 = 0.003 < 0.05 rejected; 0.02 * 2 = 0.04 < 0.05 rejected; 0.2 * 1 not.
    assert [c.significant for c in family] == [True, True, False]
    assert [c.p_holm for c in family] == [pytest.approx(0.003), pytest.approx(0.04), pytest.approx(0.2)]


def test_untestable_comparisons_still_count_in_the_declared_family():
    family = stats.apply_holm([stats.Paired([0], [0.0], 0.0, None, None, p) for p in (0.02, None)])
    assert family[0].p_holm == pytest.approx(0.04) and family[0].significant  # m = 2, not 1
    assert family[1].p_holm is None and not family[1].significant
    alone = stats.apply_holm([stats.Paired([0], [0.0], 0.0, None, None, p) for p in (0.03, None, None)])
    assert alone[0].p_holm == pytest.approx(0.09) and not alone[0].significant


def test_wilson_interval():
    lo, hi = stats.wilson(0, 48)
    assert lo == 0.0 and hi == pytest.approx(0.074, abs=0.001)
    lo, hi = stats.wilson(48, 48)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.074, abs=0.001)
    lo, hi = stats.wilson(3, 48)
    assert 0 < lo < 3 / 48 < hi < 1
    # Against the closed form with z = 1.96.
    z, p, n = scipy_stats.norm.ppf(0.975), 0.25, 40
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert stats.wilson(10, 40) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert stats.wilson(0, 0) == (None, None)


def test_newcombe_interval_of_two_proportions():
    z = scipy_stats.norm.ppf(0.975)
    # Both at 0 of 24: each Wilson upper end is z^2 / (n + z^2), so the difference spans +- that.
    assert stats.newcombe(0.0, 0.0, 24) == (pytest.approx(-z * z / (24 + z * z)), pytest.approx(z * z / (24 + z * z)))
    low, high = stats.newcombe(0.5, 0.75, 40)
    assert low < 0.25 < high and -1 <= low and high <= 1
    assert stats.newcombe(0.0, 1.0, 10)[1] == 1.0  # never outside [-1, 1]


def test_a_proportion_difference_carries_the_evaluation_sets_sampling_error():
    """Two methods at 0/8 in every seed differ by exactly 0 across seeds: no evidence that they match."""
    zeros = {0: 0.0, 1: 0.0, 2: 0.0}
    c = stats.with_sampling_error(stats.paired(zeros, zeros), zeros, 8)
    assert c.estimate == 0 and c.ci_low < -0.3 and c.ci_high > 0.3 and c.p_value == 1.0
    # One more problem solved in every seed of 16: seeds alone give only the sign test's 0.25; the set
    # says more (issue 21 changed the seeds' p from 0 to the sign test's).
    seeds_only = stats.paired(zeros, {0: 1 / 16, 1: 1 / 16, 2: 1 / 16})
    assert seeds_only.p_value == 0.25
    c = stats.with_sampling_error(seeds_only, zeros, 16)
    assert c.p_value > 0.2 and c.ci_low < 0 < c.ci_high and c.per_seed == seeds_only.per_seed
    # A large evaluation set: the seeds' own spread decides.
    reference = {0: 0.80, 1: 0.90, 2: 0.85}
    noisy = stats.paired(reference, {0: 0.70, 1: 0.95, 2: 0.80})
    wide = stats.with_sampling_error(noisy, reference, 10_000)
    assert (wide.ci_low, wide.ci_high, wide.p_value) == (noisy.ci_low, noisy.ci_high, noisy.p_value)


def test_median_with_censored_values():
    assert stats.median_censored([3.0, 1.0, 2.0]) == (2.0, False)
    assert stats.median_censored([3.0, None, 1.0]) == (3.0, False)  # 2 of 3 reached: the median is real
    assert stats.median_censored([3.0, None, None]) == (None, True)  # fewer than half: ">budget"
    assert stats.median_censored([1.0, 2.0, None, 4.0]) == (3.0, False)
    assert stats.median_censored([1.0, 2.0, None, None]) == (None, True)
    assert stats.median_censored([]) == (None, False)


def _family_claims(rng: random.Random, shifts: list[float], rho: float = 0.0) -> list[bool]:
    """One repeat: 5 seeds, one endpoint per shift; per-seed values share a seed effect (correlation rho).

    Each method's value has sd 1 across seeds; the shift is in units of the per-seed difference's sd,
    sqrt(2 (1 - rho)), so that "3σ" means three standard deviations of what the paired test sees.
    """
    family = []
    sd_diff = math.sqrt(2 * (1 - rho))
    for shift in shifts:
        ref, new = {}, {}
        for seed in SEEDS:
            common = rng.gauss(0, math.sqrt(rho))
            ref[seed] = common + rng.gauss(0, math.sqrt(1 - rho))
            new[seed] = common + rng.gauss(0, math.sqrt(1 - rho)) + shift * sd_diff
        family.append(stats.paired(ref, new))
    return [c.significant for c in stats.apply_holm(family)]


def test_aa_comparisons_are_claimed_in_at_most_5_percent_of_repeats():
    rng = random.Random(12)
    repeats = 2000
    any_claim = sum(any(_family_claims(rng, [0.0] * 5, rho=0.5)) for _ in range(repeats))
    assert any_claim / repeats <= 0.06, any_claim / repeats  # familywise error of Holm at alpha 0.05


def test_three_sigma_shift_is_claimed_in_at_least_90_percent_of_repeats():
    rng = random.Random(14)
    repeats = 1000
    # A method 3σ away on every one of the 5 endpoints of its family.
    everywhere = [_family_claims(rng, [3.0] * 5) for _ in range(repeats)]
    assert sum(c[0] for c in everywhere) / repeats >= 0.90
    # One shifted endpoint among 4 without a difference: Holm tests it at 0.05 / 5. The exact power of
    # a t test with 4 degrees of freedom at noncentrality 3 sqrt(5) is 0.895; the null endpoints stay quiet.
    alone = [_family_claims(rng, [3.0, 0.0, 0.0, 0.0, 0.0]) for _ in range(repeats)]
    assert sum(c[0] for c in alone) / repeats >= 0.86
    assert sum(any(c[1:]) for c in alone) / repeats <= 0.05


def test_no_interval_leaves_its_domain():
    rng = random.Random(3)
    for _ in range(300):
        n = rng.randint(2, 5)
        accs = [min(1.0, max(0.0, rng.choice([0.0, 1.0, rng.random()]))) for _ in range(n)]
        a = stats.aggregate(accs, domain=(0.0, 1.0))
        assert 0.0 <= a["ci_low"] <= a["ci_high"] <= 1.0
        other = {s: rng.random() for s in range(n)}
        c = stats.paired(dict(enumerate(accs)), other, domain=(0.0, 1.0))
        assert -1.0 <= c.ci_low <= c.ci_high <= 1.0
        r = stats.paired({s: rng.uniform(0.1, 10) for s in range(n)}, {s: rng.uniform(0.1, 10) for s in range(n)}, ratio=True)
        assert 0 < r.ci_low <= r.estimate <= r.ci_high
        k = rng.randint(0, 48)
        lo, hi = stats.wilson(k, 48)
        assert 0.0 <= lo <= k / 48 <= hi <= 1.0


def test_adjusted_interval_excludes_zero_exactly_when_holm_rejects():
    rng = random.Random(5)
    for _ in range(200):
        family = []
        for _ in range(rng.randint(1, 4)):
            ref = {s: rng.gauss(0, 1) for s in range(rng.randint(2, 6))}
            family.append(stats.paired(ref, {s: v + rng.gauss(rng.choice([0, 1, 3]), 1) for s, v in ref.items()},
                                       ratio=False))
        for c in stats.apply_holm(family):
            excludes = c.adj_low > 0 or c.adj_high < 0
            assert excludes == c.significant, c
            assert c.adj_low <= c.ci_low <= c.ci_high <= c.adj_high  # adjusted: never narrower


def test_adjusted_interval_of_the_smallest_p_is_bonferronis():
    a = stats.paired({0: 1.0, 1: 2.0, 2: 1.5}, {0: 1.6, 1: 2.5, 2: 2.2})
    b = stats.paired({0: 1.0, 1: 2.0, 2: 1.5}, {0: 0.0, 1: 3.0, 2: 1.0})
    stats.apply_holm([a, b])
    diffs = [0.6, 0.5, 0.7]
    half = scipy_stats.t.ppf(1 - 0.05 / 4, 2) * statistics.stdev(diffs) / math.sqrt(3)
    assert (a.adj_low, a.adj_high) == pytest.approx((0.6 - half, 0.6 + half))


def test_interval_censored_ratio_takes_the_weaker_extreme():
    # The reference crosses between steps 4-6 or 7-9, the method between 1 and 3: faster at either extreme.
    ref = {s: (4.0, 6.0) if s % 2 == 0 else (7.0, 9.0) for s in range(5)}
    fast = stats.paired_censored(ref, {s: (1.0, 3.0) for s in range(5)})
    unfavourable = [math.log(3 / ref[s][0]) for s in range(5)]
    assert fast.p_value == pytest.approx(scipy_stats.ttest_1samp(unfavourable, 0).pvalue)
    assert fast.ci_high < 1 and fast.p_value < 0.05
    # Overlapping intervals: the data allow no difference, so nothing is claimed.
    same = stats.paired_censored({s: (4.0, 6.0) for s in range(3)}, {0: (3.0, 6.0), 1: (4.0, 7.0), 2: (4.0, 6.0)})
    assert same.ci_low < 1 < same.ci_high and same.p_value == 1.0
