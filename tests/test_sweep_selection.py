"""Choosing each method's best lr of a sweep: lowest mean held-out loss, ties to the shared lr, then the smaller."""

from __future__ import annotations

import dataclasses

from report_fixtures import make

from disha_bench.analysis.sweep import choose
from disha_bench.contracts.results import DIVERGED


def _swept(label: str, lr: float, seed: int, loss: float, status: str | None = None, metric: float = 0.5):
    r = make("synth-cls", label, seed)
    points = [dataclasses.replace(p, loss=loss if i else p.loss) for i, p in enumerate(r.heldout.points)]
    shown = label if lr == 2e-4 else f"{label}@lr={lr:g}"
    run = dataclasses.replace(r.run, method=shown, run_id=f"synth-cls-{shown}-s{seed}-0000abcd", status=status or r.run.status,
                              analysis={**r.run.analysis, "sweep": {"label": label, "lr": lr, "lrs": [1e-4, 2e-4, 1e-3],
                                                                    "shared_lr": 2e-4}})
    return dataclasses.replace(r, run=run, heldout=dataclasses.replace(r.heldout, points=points),
                               evaluation={**r.evaluation, "accuracy": metric})


def test_the_best_lr_has_the_lowest_mean_heldout_loss_never_the_evaluation_metric():
    results = [_swept("lora", 1e-4, s, 0.9, metric=0.99) for s in (0, 1)]  # best accuracy, worst held-out loss
    results += [_swept("lora", 2e-4, s, 0.7) for s in (0, 1)]
    results += [_swept("lora", 1e-3, 0, 0.5), _swept("lora", 1e-3, 1, 0.8)]  # mean 0.65: the best
    choice = choose(results)[("synth-cls", "lora")]
    assert choice.best_lr == 1e-3 and choice.shared_lr == 2e-4
    assert choice.losses == {1e-4: 0.9, 2e-4: 0.7, 1e-3: 0.65}


def test_ties_go_to_the_shared_lr_then_the_smaller_and_a_diverged_lr_is_never_chosen():
    tie_shared = [_swept("bone", lr, s, 0.6) for lr in (1e-4, 2e-4, 1e-3) for s in (0, 1)]
    assert choose(tie_shared)[("synth-cls", "bone")].best_lr == 2e-4
    tie_other = [_swept("bat", 2e-4, s, 0.7) for s in (0, 1)] + [_swept("bat", lr, s, 0.6) for lr in (1e-4, 1e-3) for s in (0, 1)]
    assert choose(tie_other)[("synth-cls", "bat")].best_lr == 1e-4
    diverged = [_swept("lora", 2e-4, s, 0.7) for s in (0, 1)] + [_swept("lora", 1e-3, 0, 0.1),
                                                                   _swept("lora", 1e-3, 1, 0.1, status=DIVERGED)]
    choice = choose(diverged)[("synth-cls", "lora")]
    assert choice.best_lr == 2e-4 and choice.losses[1e-3] is None


def test_heldout_examples_inside_the_evaluation_sample_do_not_count():
    def run(lr: float, seed: int, inside: float, outside: float):
        r = _swept("lora", lr, seed, (inside + outside) / 2)
        points = [dataclasses.replace(p, per_example=[inside, inside, outside, outside]) for p in r.heldout.points]
        heldout = dataclasses.replace(r.heldout, points=points, example_ids=["a", "b", "c", "d"])
        evaluation = {**r.evaluation, "per_example": {"ids": ["a", "b", "x"], "accuracy": [1.0, 1.0, 0.0]}}
        return dataclasses.replace(r, heldout=heldout, evaluation=evaluation)

    # 1e-3 looks better on the whole held-out set, but only through examples the evaluation scores
    results = [run(1e-3, s, 0.1, 0.8) for s in (0, 1)] + [run(2e-4, s, 0.9, 0.6) for s in (0, 1)]
    choice = choose(results)[("synth-cls", "lora")]
    assert choice.losses == {2e-4: 0.6, 1e-3: 0.8} and choice.best_lr == 2e-4


def test_the_report_compares_at_the_shared_lr_and_adds_the_sweep_section(tmp_path):
    from report_fixtures import write

    from disha_bench.analysis import report

    results = [make("synth-cls", "unadapted", 0)]
    for label, best in (("lora", 1e-3), ("bone", 2e-4)):
        for lr in (2e-4, 1e-3):
            results += [_swept(label, lr, s, 0.5 if lr == best else 0.8) for s in (0, 1, 2)]
    out = report.write_report(write(tmp_path / "results", results), tmp_path / "synth.md", draw=False)
    text = out.read_text()
    main, _, swept = text.partition("## Learning-rate sweep")
    assert swept and "@lr=" not in main.split("## Details")[0]  # the headline and findings: the shared lr only
    assert "| synth-cls | lora | 1e-3 |" in swept and "| synth-cls | bone | 2e-4 |" in swept
    assert "### Each method at its best lr" in swept and "optimistic" in swept
