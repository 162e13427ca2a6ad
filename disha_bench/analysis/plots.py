"""The report's PNG plots (Agg canvas, no pyplot global state).

    disha-bench report results/smoke --out /tmp/r/smoke.md      # PNGs beside the markdown

- `<stem>-<task>-heldout.png`: held-out loss against optimizer step and against training seconds,
  each seed a thin line, the mean over seeds bold, the targets dashed.
- `<stem>-<task>-pareto.png`: the primary metric (or the held-out loss at the budget when every
  method's metric is the same, e.g. all at chance) against peak memory and against training time
  to the first target, mean ± interval per method, the Pareto front dashed. A cost on which the
  methods differ by less than noise (`within_noise`) is drawn as a tie: an axis wide enough not to
  rank them, no front, and a note saying so.
- `<stem>-forest.png`: each method's paired difference from the reference (primary metric and
  held-out loss) on every task, with its 95% interval; filled markers hold after Holm.
"""

from __future__ import annotations

from pathlib import Path

from disha_bench.analysis import convergence, stats
from disha_bench.analysis.compare import TaskAnalysis


def _figure(cols: int = 1, width: float = 7.5, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, cols, i + 1) for i in range(cols)]


def _colors(labels: list[str]) -> dict[str, str]:
    from matplotlib import rcParams

    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}


def heldout(a: TaskAnalysis, path: Path) -> bool:
    """Held-out loss vs step and vs training time; False when no run has a curve."""
    fig, (by_step, by_time) = _figure(2, width=11)
    colors = _colors(list(a.methods))
    drawn = False
    for label, figures in a.methods.items():
        curves = [convergence.heldout_points(r) for r in figures.runs]
        curves = [c for c in curves if len(c) >= 2]
        for c in curves:
            by_step.plot([p.step for p in c], [p.loss for p in c], color=colors[label], linewidth=0.6, alpha=0.45)
            by_time.plot([p.train_time_s for p in c], [p.loss for p in c], color=colors[label], linewidth=0.6, alpha=0.45)
        if curves:
            n = min(len(c) for c in curves)
            mean = [sum(c[i].loss for c in curves) / len(curves) for i in range(n)]
            times = [sum(c[i].train_time_s for c in curves) / len(curves) for i in range(n)]
            by_step.plot([p.step for p in curves[0][:n]], mean, color=colors[label], linewidth=2.2, label=f"{label} (n={len(curves)})")
            by_time.plot(times, mean, color=colors[label], linewidth=2.2)
            drawn = True
    if not drawn:
        return False
    for _, target in a.targets:
        if target is not None:
            for ax in (by_step, by_time):
                ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
    by_step.set_xlabel("optimizer step")
    by_time.set_xlabel("training seconds (held-out evaluation excluded)")
    by_step.set_ylabel("held-out loss")
    by_step.set_title(f"{a.task}: held-out loss, seeds thin, mean bold", fontsize=10)
    by_step.legend(fontsize=8, loc="upper right")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _point(a: TaskAnalysis, label: str, key: str) -> tuple[float, list[list[float]]] | None:
    """(mean, [[below], [above]]): asymmetric error bars, since intervals are clipped to the domain."""
    e = a.endpoint(key)
    values = a.methods[label].values.get(key, {})
    if None in values.values():
        return None  # a seed missed the target: a mean over the others would flatter the method
    agg = stats.aggregate(values.values(), domain=e.domain if e else stats.UNBOUNDED)
    if agg["mean"] is None:
        return None
    if agg["ci_low"] is None:
        return agg["mean"], [[0.0], [0.0]]
    return agg["mean"], [[agg["mean"] - agg["ci_low"]], [agg["ci_high"] - agg["mean"]]]


COST_NOISE_REL = 0.02
"""Cost means less than this share of their mean apart (or all inside the widest interval) are not
ranked: on CPU every method's peak memory lay within 1 MB of 759 MB, and an axis stretched over that
megabyte made one method look lighter."""


def within_noise(points: list[tuple[float, list[list[float]]]], unit: str = "") -> str | None:
    """A note when the methods' costs ((mean, error bars) as `_point` gives) differ by noise only."""
    if len(points) < 2:
        return None
    means = [m for m, _ in points]
    spread, center = max(means) - min(means), sum(means) / len(means)
    widest = max(max(bars[0][0], bars[1][0]) for _, bars in points)
    if spread > max(COST_NOISE_REL * abs(center), widest):
        return None
    share = f" ({spread / abs(center):.1%})" if center else ""
    return f"all methods within {spread:.3g}{unit}{share} of each other: within noise, not ranked"


def pareto(a: TaskAnalysis, path: Path) -> bool:
    """Quality against peak memory and against time to target; False when nothing to draw."""
    fig, drawn = pareto_figure(a)
    if drawn:
        fig.tight_layout()
        fig.savefig(path)
    return drawn


def pareto_figure(a: TaskAnalysis):
    """(figure, whether anything was drawn) of `pareto`."""
    quality = f"metric:{a.primary}" if a.primary else "heldout_final"
    means = [m[0] for m in (_point(a, l, quality) for l in a.methods) if m]
    chance = a.reference_rows.get("majority class", {}).get(quality)
    if len(set(means)) <= 1 or (chance is not None and all(m <= chance + 0.01 for m in means)):
        quality = "heldout_final"  # every method at chance (or equal): the held-out loss still separates them
    e = a.known_endpoint(quality)
    fig, axes = _figure(2, width=11)
    colors = _colors(list(a.methods))
    drawn = False
    for ax, cost in zip(axes, ("peak_mb", "time_to_target:0")):
        points, costs = [], []
        for label in a.methods:
            x, y = _point(a, label, cost), _point(a, label, quality)
            if x and y:
                ax.errorbar([x[0]], [y[0]], xerr=x[1], yerr=y[1], fmt="o", capsize=3, color=colors[label])
                ax.annotate(label, (x[0], y[0]), textcoords="offset points", xytext=(5, 5), fontsize=8)
                points.append((x[0], y[0]))
                costs.append(x)
        tie = within_noise(costs, " MB" if cost == "peak_mb" else " s")
        if points and tie:
            drawn = True
            center = sum(x for x, _ in points) / len(points)
            widest = max(max(bars[0][0], bars[1][0]) for _, bars in costs)
            half = max(5 * COST_NOISE_REL * abs(center), 1.2 * (widest + max(x for x, _ in points) - center), 1e-9)
            ax.set_xlim(center - half, center + half)
            ax.text(0.5, 0.03, tie, transform=ax.transAxes, ha="center", fontsize=8, color="dimgrey")
        elif points:
            drawn = True
            front: list[tuple[float, float]] = []
            best: float | None = None
            for point_x, point_y in sorted(points):
                if best is None or (point_y > best if e.better == "high" else point_y < best):
                    front.append((point_x, point_y))
                    best = point_y
            ax.plot(*zip(*front), color="grey", linestyle="--", linewidth=0.8, drawstyle="steps-post")
        ax.set_xlabel("peak memory, MB" if cost == "peak_mb" else "training seconds to the first target")
        ax.set_ylabel(e.title)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{a.task}: quality vs cost (mean ± 95% interval; dashed: Pareto front)", fontsize=10)
    return fig, drawn


def forest(analyses: list[TaskAnalysis], path: Path) -> bool:
    """Paired differences from the reference, every task and method; False when there is none."""
    # One panel per unit, so that percentage points and losses never share an axis.
    panels: dict[str, list] = {"primary metric − reference, pp": [], "primary metric − reference": [],
                               "held-out loss − reference": []}
    for a in analyses:
        for key in ([f"metric:{a.primary}"] if a.primary else []) + ["heldout_final"]:
            e = a.endpoint(key)
            title = ("held-out loss − reference" if key == "heldout_final" else
                     "primary metric − reference" + (", pp" if e and e.unit == "%" else ""))
            for label in a.methods:
                c = a.comparisons.get((label, key))
                if c is not None and c.estimate is not None:
                    panels[title].append((f"{a.task} {label}" + ("" if key == "heldout_final" or "pp" in title else f" ({a.primary})"), c, e))
    panels = {t: rows for t, rows in panels.items() if rows}
    if not panels:
        return False
    height = max(3.0, 0.32 * max(len(p) for p in panels.values()) + 1.5)
    fig, axes = _figure(len(panels), width=5.5 * len(panels), height=height)
    for ax, (title, rows) in zip(axes, panels.items()):
        for i, (name, c, e) in enumerate(rows):
            scale = 100 if e.unit == "%" else 1
            # The interval a verdict reads off: adjusted in a family, the plain 95% one elsewhere.
            low, high = (c.adj_low, c.adj_high) if c.verdict is not None else (c.ci_low, c.ci_high)
            lo = c.estimate if low is None else low
            hi = c.estimate if high is None else high
            ax.plot([lo * scale, hi * scale], [i, i], color="black", linewidth=1)
            decided = c.verdict in ("better", "worse")
            ax.plot([c.estimate * scale], [i], "o", color="black", fillstyle="full" if decided else "none")
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
        ax.axvline(0, color="grey", linestyle="--", linewidth=0.8)
        ax.invert_yaxis()
        ax.set_title(title + " (filled: better/worse beyond the margin)", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path)
    return True
