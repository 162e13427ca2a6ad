"""The report's generated text: findings from decided comparisons, and the paper's four claims.

    python -c "from disha_bench.analysis import compare, findings, measures; print(findings.claims(compare.analyze_suite(measures.load_checked('results/smoke'))))"

One standard for every line (disha_bench.analysis.verdicts): a comparison is "better"/"worse" when
its family-adjusted interval excludes no difference and its estimate lies beyond the quantity's
margin (a cost's: beyond its repeatability too), "matches" when that interval lies inside ±margin,
else "not resolved". Findings list the comparisons with the reference that are better or worse, from
the primary family (held-out loss at budget, steps to target) and the cost family (peak memory,
tokens/s, training time). Each claim of the DiSHA paper gets one line per task: holds / does not hold
/ mixed / not resolved, with the adjusted interval that decides it: a comparison with the reference
uses its family's adjustment; two other methods (Bat and Bone) form a family of the claim's own
comparisons on that task.
"""

from __future__ import annotations

import math

from disha_bench.analysis import report_format as fmt
from disha_bench.analysis import stats, verdicts
from disha_bench.analysis.compare import TaskAnalysis, compare_pair, decide_family, require_stable_costs


def protocol(results: list) -> str:
    """The training protocol as the results record it: one shared learning rate (as the paper) or not."""
    rates: dict[str, set[float]] = {}
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


def adjusted(c: stats.Paired) -> tuple[float | None, float | None]:
    """The interval a verdict reads off: the family-adjusted one."""
    return c.adj_low, c.adj_high


def describe(a: TaskAnalysis, label: str, key: str, c: stats.Paired) -> str:
    """One sentence for a comparison with the reference (with its adjusted interval)."""
    ref = a.reference
    low, high = adjusted(c)
    if key.startswith("steps_to_target"):
        return f"{label} reaches the held-out target in {fmt.ratio(c.estimate, low, high)} of {ref}'s steps on {a.task}"
    e = a.known_endpoint(key)
    if e.ratio:
        return f"{label}'s {e.title} is {fmt.ratio(c.estimate, low, high)} of {ref}'s on {a.task}"
    if c.estimate is None:
        raise ValueError(f"{a.task}: {label} against {ref} on {key} was not tested; nothing to describe")
    side = "higher" if c.estimate > 0 else "lower"
    # Written as a positive amount: "0.29 [0.14, 0.44] lower", the interval turned round with it.
    if low is not None and high is not None:
        near, far = sorted((abs(low), abs(high)))
        amount = fmt.difference(abs(c.estimate), near, far, e.unit)
    else:
        amount = fmt.difference(abs(c.estimate), None, None, e.unit)
    return f"{label}'s {e.title} is {amount.lstrip('+').replace('[+', '[').replace(', +', ', ')} {side} than {ref}'s on {a.task}"


def margin_text(e, margin: float | None) -> str:
    if margin is None:
        return fmt.DASH
    if e.ratio:
        return f"{margin:.1%}"
    return f"{margin * 100:.3g} pp" if e.unit == "%" else f"{margin:g}"


def findings(analyses: list[TaskAnalysis]) -> list[str]:
    lines = []
    for a in analyses:
        for (label, key), c in a.comparisons.items():
            if c.verdict in (verdicts.BETTER, verdicts.WORSE):
                family = "primary" if key in a.family else "cost"
                lines.append(f"- {describe(a, label, key, c)} (n={c.n} seeds, {family} family, Holm-adjusted p = "
                             f"{c.p_holm:.2g}, margin {margin_text(a.endpoint(key), c.margin)}).")
    if not lines:
        lines.append("- No comparison with the reference is better or worse beyond its margin after Holm's correction.")
    return lines


def _label(a: TaskAnalysis, name: str) -> str | None:
    """The label of the method registered as `name` (the label itself when it is the name)."""
    if name in a.methods:
        return name
    for label, figures in a.methods.items():
        if any(((r.run.config or {}).get("method") or {}).get("name") == name for r in figures.runs):
            return label
    return None


def _pairs(a: TaskAnalysis, base: str, other: str, keys: list[str]) -> list[stats.Paired]:
    """`other` against `base` on `keys`, decided: the reference's families when `base` is the
    reference, else Holm over these comparisons alone."""
    if base == a.reference:
        return [a.comparisons.get((other, k)) or stats.Paired([], [], None, None, None, None, False) for k in keys]
    family = []
    for k in keys:
        e = a.endpoint(k)
        if e is not None:
            family.append((e, a.methods[base], a.methods[other], compare_pair(e, a.methods[base], a.methods[other])))
    decide_family(a, family)
    require_stable_costs(a, base, {(other, e.key): c for e, _, _, c in family})
    found = {e.key: c for e, _, _, c in family}
    return [found.get(k) or stats.Paired([], [], None, None, None, None, False) for k in keys]


def _shown(a: TaskAnalysis, key: str, c: stats.Paired) -> str:
    """`estimate [adjusted interval], adjusted p` of a comparison."""
    e = a.endpoint(key)
    low, high = adjusted(c)
    if e is None or c.estimate is None:
        return fmt.DASH + (" (censored: a seed missed the target)" if c.extra.get("censored") else "")
    text = fmt.ratio(c.estimate, low, high) if c.ratio else fmt.difference(c.estimate, low, high, e.unit)
    p = f", adj. p {c.p_holm:.2g}" if c.p_holm is not None else ""
    unstable = "; one run re-read within its repeatability flips it" if c.extra.get("unstable") else ""
    return f"{text}{p}, margin {margin_text(e, c.margin)}{unstable}"


def _lower(c: stats.Paired) -> str:
    """holds / does not hold / not resolved for "lower than" (a cost, steps): better beyond the margin."""
    return {verdicts.BETTER: "holds", verdicts.WORSE: "does not hold", verdicts.MATCHES: "does not hold"}.get(
        c.verdict or "", "not resolved")


def _combine(parts: list[str]) -> str:
    """Both parts must hold; "mixed" when one holds and the other does not."""
    if all(p == "holds" for p in parts):
        return "holds"
    if "holds" in parts and "does not hold" in parts:
        return "mixed"
    return "does not hold" if "does not hold" in parts and "holds" not in parts else "not resolved"


def _claim_faster(a: TaskAnalysis, bone: str, lora: str) -> str:
    (c,) = _pairs(a, lora, bone, ["steps_to_target:0"])
    return f"{_lower(c)} on {a.task} (steps to target {bone}/{lora} {_shown(a, 'steps_to_target:0', c)})"


def _claim_quality(a: TaskAnalysis, bat: str, bone: str) -> str:
    key = f"metric:{a.primary}" if a.primary else "heldout_final"
    e = a.known_endpoint(key)
    (c,) = _pairs(a, bone, bat, [key])
    verdict = {verdicts.BETTER: "holds", verdicts.MATCHES: "holds", verdicts.WORSE: "does not hold"}.get(
        c.verdict or "", "not resolved")
    sampled = f", with the sampling error of {c.extra['n_examples']} evaluation examples" if "n_examples" in c.extra else ""
    detectable = verdicts.minimum_detectable_from_draws(c.extra.get("bootstrap") or [], 1)
    if detectable is not None:
        shown = fmt.scale(detectable, e.unit)
        sampled += f"; detectable at {verdicts.POWER:.0%} power: ±{shown:.3g}{' pp' if e.unit == '%' else ''}"
    return f"{verdict} on {a.task} ({e.title} {bat} - {bone} {_shown(a, key, c)}{sampled}: {c.verdict or 'not resolved'})"


def _claim_cost(a: TaskAnalysis, cheap: str, dear: str) -> str:
    """Memory and time, each decided on its own and both reported: "mixed" when they disagree."""
    mem, time = _pairs(a, dear, cheap, ["peak_mb", "train_time_s"])
    return (f"{_combine([_lower(mem), _lower(time)])} on {a.task} (peak memory {cheap}/{dear} "
            f"{_shown(a, 'peak_mb', mem)}: {_lower(mem)}; training time {_shown(a, 'train_time_s', time)}: {_lower(time)})")


def claims(analyses: list[TaskAnalysis]) -> list[str]:
    """One line per claim of the paper, with each task's verdict and adjusted interval."""
    texts = {1: "Bone converges faster than parameter-matched LoRA (steps to the held-out target, below 1× beyond the margin)",
             2: "Bat matches or beats Bone in quality (primary metric; 'matches' = adjusted interval inside ±margin)",
             3: "Bone costs less memory and time than LoRA (peak memory and training time, each below 1× beyond its margin)",
             4: "Bat costs more than Bone (Bone's peak memory and training time below Bat's, each reported)"}
    parts: dict[int, list[str]] = {k: [] for k in texts}
    for a in analyses:
        bone, bat, lora = _label(a, "bone"), _label(a, "bat"), _label(a, "lora")
        if bone and lora:
            parts[1].append(_claim_faster(a, bone, lora))
            parts[3].append(_claim_cost(a, bone, lora))
        if bat and bone:
            parts[2].append(_claim_quality(a, bat, bone))
            parts[4].append(_claim_cost(a, bone, bat))
    lines = []
    for k, text in texts.items():
        lines.append(f"{k}. {text}:" + ("" if parts[k] else " not tested (methods absent)."))
        lines += [f"   - {part}" for part in parts[k]]
    return lines


def minimum_detectable_lines(analyses: list[TaskAnalysis]) -> list[str]:
    """Per task, the smallest primary effect these seeds could detect (from the runs' per-seed spread,
    or a seeds x examples comparison's bootstrap)."""
    lines = []
    for a in analyses:
        size = max(1, len(a.family) * (len(a.methods) - 1))
        parts = []
        for key in a.family:
            spreads, from_draws, n = [], [], 0
            for (label, k), c in a.comparisons.items():
                if k != key or c.n < 2:
                    continue
                configs, draws = c.extra.get("configs"), c.extra.get("bootstrap")
                if configs:  # the widest configuration (interval-censored: the weaker)
                    spreads.append(max(sum((x - sum(d) / len(d)) ** 2 for x in d) / (len(d) - 1) for d in configs))
                elif draws and (detectable := verdicts.minimum_detectable_from_draws(draws, size)) is not None:
                    from_draws.append(detectable)
                else:
                    continue
                n = max(n, c.n)
            if spreads:
                mde = verdicts.minimum_detectable((sum(spreads) / len(spreads)) ** 0.5, n, size)
            elif from_draws:
                mde = sum(from_draws) / len(from_draws)
            else:
                continue
            e = a.known_endpoint(key)
            if not mde:  # identical per seed: only the sign test can speak, 2^(1-n) < alpha / size
                shown = f"identical per seed, detectable from {math.ceil(1 + math.log2(size / stats.ALPHA) + 1e-9)} seeds (sign test)"
            else:
                shown = f"{math.exp(-mde):.3g}× (or {math.exp(mde):.3g}×)" if e.ratio else f"{mde:.3g}"
            parts.append(f"{e.title} {shown}")
        if parts:
            lines.append(f"- {a.task}: {'; '.join(parts)} (n={n} seeds, {verdicts.POWER:.0%} power, Holm's first level "
                         f"over {size} primary comparisons, from the runs' spread of the paired differences: per seed, or "
                         f"seeds x examples where the runs kept per-example outputs).")
    return lines
