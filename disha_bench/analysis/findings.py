"""The report's generated text: findings from significant comparisons, and the paper's four claims.

    python -c "from disha_bench.analysis import compare, findings, measures; print(findings.claims(compare.analyze_suite(measures.load_checked('results/smoke'))))"

Findings list only the comparisons of the declared family (each method against the reference) that
hold after Holm's correction. Each claim of the DiSHA paper gets one line per task: holds / does not
hold / not resolved, with the interval that decides it (paired by seed, 95%, not in the Holm family
unless it is a comparison with the reference). "Matches" holds only when the whole interval of the
difference lies inside the stated equivalence margin; a non-significant difference is never "equal".
"""

from __future__ import annotations

from disha_bench.analysis import report_format as fmt
from disha_bench.analysis import stats
from disha_bench.analysis.compare import TaskAnalysis, compare_pair

MARGIN_PROPORTION = 0.01
"""Equivalence margin of a proportion metric: 1 percentage point."""
MARGIN_OTHER = 0.01
"""Equivalence margin of other metrics (MCC, correlations) and of the held-out loss: 0.01."""


def protocol(results: list) -> str:
    """The training protocol as the results record it: one shared learning rate (as the paper) or not."""
    rates = {}
    for r in results:
        config = r.run.config or {}
        method = config.get("method") or {}
        rate = (method.get("params") or {}).get("lr") or (config.get("training") or {}).get("lr")
        if rate is not None and method.get("name") != "none":
            rates.setdefault(r.run.method, set()).add(rate)
    shared = {x for v in rates.values() for x in v}
    if len(shared) == 1:
        lr = f"one shared learning rate ({shared.pop():g}), as the paper"
    elif shared:
        lr = "learning rates differ: " + ", ".join(f"{k} {'/'.join(f'{x:g}' for x in sorted(v))}" for k, v in sorted(rates.items()))
    else:
        lr = "learning rates not recorded"
    return f"Protocol: {lr}; the same budget and data for every method; comparisons paired by seed with the reference."


def describe(a: TaskAnalysis, label: str, key: str, c: stats.Paired) -> str:
    """One sentence for a comparison with the reference."""
    e = a.endpoint(key)
    ref = a.reference
    if key.startswith("time_to_target"):
        return f"{label} reaches the held-out target in {fmt.ratio(c.estimate, c.ci_low, c.ci_high)} of {ref}'s training time on {a.task}"
    if key.startswith("steps_to_target"):
        return f"{label} reaches the held-out target in {fmt.ratio(c.estimate, c.ci_low, c.ci_high)} of {ref}'s steps on {a.task}"
    if e.ratio:
        return f"{label}'s {e.title} is {fmt.ratio(c.estimate, c.ci_low, c.ci_high)} of {ref}'s on {a.task}"
    side = "higher" if c.estimate > 0 else "lower"
    # Written as a positive amount: "0.29 [0.14, 0.44] lower", the interval turned round with it.
    amount = fmt.difference(abs(c.estimate), *sorted((abs(c.ci_low), abs(c.ci_high))), e.unit) if c.ci_low is not None \
        else fmt.difference(abs(c.estimate), None, None, e.unit)
    return f"{label}'s {e.title} is {amount.lstrip('+').replace('[+', '[').replace(', +', ', ')} {side} than {ref}'s on {a.task}"


def findings(analyses: list[TaskAnalysis]) -> list[str]:
    lines = []
    for a in analyses:
        for (label, key), c in a.comparisons.items():
            if c.significant:
                lines.append(f"- {describe(a, label, key, c)} (n={c.n} seeds, Holm-adjusted p = {c.p_holm:.2g}).")
    if not lines:
        lines.append("- No paired difference from the reference holds after Holm's correction over the primary endpoints.")
    return lines


def _label(a: TaskAnalysis, name: str) -> str | None:
    """The label of the method registered as `name` (the label itself when it is the name)."""
    if name in a.methods:
        return name
    for label, figures in a.methods.items():
        if any(((r.run.config or {}).get("method") or {}).get("name") == name for r in figures.runs):
            return label
    return None


def _pair(a: TaskAnalysis, base: str, other: str, key: str, ratio: bool) -> stats.Paired:
    if base == a.reference and (other, key) in a.comparisons:
        return a.comparisons[(other, key)]
    e = a.endpoint(key)
    if e is None:
        return stats.Paired([], [], None, None, None, None, ratio)
    return compare_pair(e, a.methods[base], a.methods[other])


def _below_one(c: stats.Paired) -> str:
    """holds / does not hold / not resolved for "ratio < 1".

    A comparison of the declared family (against the reference) decides by its Holm-corrected test, so
    a claim never holds where the tables show no marker; any other pair by its 95% interval.
    """
    if c.p_holm is not None:
        if not c.significant:
            return "not resolved"
        return "holds" if c.estimate < 1 else "does not hold"
    if c.ci_high is None:
        return "not resolved"
    return "holds" if c.ci_high < 1 else "does not hold" if c.ci_low > 1 else "not resolved"


def _claim_faster(a: TaskAnalysis, bone: str, lora: str) -> str:
    c = _pair(a, lora, bone, "time_to_target:0", True)
    return f"{_below_one(c)} on {a.task} (training time to target {bone}/{lora} {fmt.ratio(c.estimate, c.ci_low, c.ci_high)})"


def _claim_quality(a: TaskAnalysis, bat: str, bone: str) -> str:
    key = f"metric:{a.primary}" if a.primary else "heldout_final"
    e = a.endpoint(key)
    c = _pair(a, bone, bat, key, False)
    if c.ci_low is None:
        return f"not resolved on {a.task} (fewer than 2 paired seeds)"
    higher = e.better == "high"
    margin = MARGIN_PROPORTION if e.unit == "%" else MARGIN_OTHER
    worst = c.ci_low if higher else -c.ci_high  # the least favourable end for Bat, as "Bat - Bone" better
    best = c.ci_high if higher else -c.ci_low
    verdict = "holds" if worst >= -margin else "does not hold" if best < 0 else "not resolved"
    sampled = f", with the sampling error of {c.extra['n_examples']} evaluation examples" if "n_examples" in c.extra else ""
    return (f"{verdict} on {a.task} ({e.title} {bat} - {bone} {fmt.difference(c.estimate, c.ci_low, c.ci_high, e.unit)}"
            f"{sampled}, margin ±{f'{margin * 100:g} pp' if e.unit == '%' else f'{margin:g}'})")


def _claim_cost(a: TaskAnalysis, cheap: str, dear: str, expect_cheaper: bool) -> str:
    mem, time = _pair(a, dear, cheap, "peak_mb", True), _pair(a, dear, cheap, "train_time_s", True)
    verdicts = {_below_one(mem), _below_one(time)}
    if expect_cheaper:  # claim 3: both memory and time lower
        verdict = "holds" if verdicts == {"holds"} else "does not hold" if "does not hold" in verdicts else "not resolved"
    else:  # claim 4, "Bat costs more than Bone": cheap=Bone is cheaper in memory or time
        verdict = "holds" if "holds" in verdicts else "does not hold" if verdicts == {"does not hold"} else "not resolved"
    return (f"{verdict} on {a.task} (peak memory {cheap}/{dear} {fmt.ratio(mem.estimate, mem.ci_low, mem.ci_high)}: "
            f"{_below_one(mem)}; training time {fmt.ratio(time.estimate, time.ci_low, time.ci_high)}: {_below_one(time)})")


def claims(analyses: list[TaskAnalysis]) -> list[str]:
    """One line per claim of the paper, with each task's verdict and interval."""
    texts = {1: "Bone converges faster than parameter-matched LoRA (training time to the held-out target)",
             2: "Bat matches or beats Bone in quality (primary metric; 'matches' = within the margin)",
             3: "Bone costs less memory and time than LoRA (peak memory and training time, both below 1×)",
             4: "Bat costs more than Bone (Bone's peak memory or training time below Bat's)"}
    parts: dict[int, list[str]] = {k: [] for k in texts}
    for a in analyses:
        bone, bat, lora = _label(a, "bone"), _label(a, "bat"), _label(a, "lora")
        if bone and lora:
            parts[1].append(_claim_faster(a, bone, lora))
            parts[3].append(_claim_cost(a, bone, lora, True))
        if bat and bone:
            parts[2].append(_claim_quality(a, bat, bone))
            parts[4].append(_claim_cost(a, bone, bat, False))
    lines = []
    for k, text in texts.items():
        lines.append(f"{k}. {text}:" + ("" if parts[k] else " not tested (methods absent)."))
        lines += [f"   - {part}" for part in parts[k]]
    return lines
