"""Learning-rate sweeps (issue 22, item 4): one-line errors at `validate`, expansion into runs and run ids."""

from __future__ import annotations

import copy

import pytest
import yaml

from disha_bench.cli import main
from disha_bench.config.expansion import expand_runs
from disha_bench.config.suite import load_suite
from disha_bench.config.sweep import lr_text

SWEPT = {
    "name": "t",
    "model": {"name": "tiny-llama"},
    "tasks": [{"name": "synthetic-sentiment", "train_limit": 16}],
    "methods": [{"name": "lora", "match_params": "bone"}, {"name": "bone", "r": 16}],
    "training": {"max_steps": 2, "batch_size": 2, "lr": 2e-4},
    "sweep": {"lr": [1e-4, 2e-4, 3e-4]},
    "seeds": [0, 1],
}

BAD_SWEEPS = [
    # (id, --set overrides, fragments the one-line error must contain)
    ("empty", ["sweep.lr=[]"], ["sweep.lr", "at least 1"]),
    ("not-a-list", ["sweep.lr=fast"], ["sweep.lr", "expected a list"]),
    ("not-a-number", ["sweep.lr=[2e-4, fast]"], ["sweep.lr[1]", "expected a number"]),
    ("negative", ["sweep.lr=[-1e-4, 2e-4]"], ["sweep.lr[0]", "> 0"]),
    ("zero", ["sweep.lr=[2e-4, 0]"], ["sweep.lr[1]", "> 0"]),
    ("duplicate", ["sweep.lr=[1e-4, 2e-4, 1e-4]"], ["sweep.lr[2]", "appears twice"]),
    ("shared-lr-missing", ["sweep.lr=[1e-4, 3e-4]"], ["sweep.lr", "training.lr", "not among the swept values"]),
    ("method-shared-lr-missing", ["methods.1.sweep={lr: [1e-3]}"], ["methods[1].sweep.lr", "training.lr"]),
    ("not-sweepable", ["sweep.momentum=[0.9]"], ["sweep.momentum", "only lr can be swept for now"]),
    ("method-lr-and-sweep", ["methods.0.lr=1e-3"], ["methods[0].lr", "exclude each other"]),
]


@pytest.mark.parametrize("overrides,fragments", [c[1:] for c in BAD_SWEEPS], ids=[c[0] for c in BAD_SWEEPS])
def test_a_bad_sweep_is_one_line_exit_2(tmp_path, capsys, overrides, fragments):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SWEPT))
    argv = ["validate", str(suite)] + [arg for item in overrides for arg in ("--set", item)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and err.startswith(f"error: {suite}: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def _runs(tmp_path, suite: dict, overrides: list[str] = ()):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite))
    return expand_runs(load_suite(path, list(overrides))[0])


def test_every_method_runs_at_each_lr_of_its_sweep_for_every_seed(tmp_path, capsys):
    runs = [r for r in _runs(tmp_path, SWEPT, ["methods.1.sweep={lr: [2e-4, 1e-3]}"]) if not r.is_unadapted]
    got = sorted((r.seed, r.method.label, r.training.lr) for r in runs)
    expected = [(s, label, lr) for s in (0, 1) for label, lr in
                (("lora@lr=1e-4", 1e-4), ("lora", 2e-4), ("lora@lr=3e-4", 3e-4), ("bone", 2e-4), ("bone@lr=1e-3", 1e-3))]
    assert got == sorted(expected)
    lora = next(r for r in runs if r.method.label == "lora@lr=3e-4")
    assert lora.suite_label == "lora" and lora.run_id.startswith("synthetic-sentiment-lora@lr=3e-4-s")
    assert lora.analysis.sweep == {"label": "lora", "lr": 3e-4, "lrs": [1e-4, 2e-4, 3e-4], "shared_lr": 2e-4}
    bone = next(r for r in runs if r.method.label == "bone@lr=1e-3")
    assert bone.analysis.sweep["lrs"] == [2e-4, 1e-3]  # the method's own sweep replaces the suite's
    info = lora.run_info("complete")
    assert info.analysis["sweep"]["lr"] == 3e-4 and info.config["training"]["lr"] == 3e-4
    assert main(["validate", str(tmp_path / "s.yaml"), "--set", "methods.1.sweep={lr: [2e-4, 1e-3]}"]) == 0
    assert "5 method x lr pairs of 2 methods x 2 seeds = 10 runs" in capsys.readouterr().out


def test_the_shared_lr_run_keeps_the_id_it_had_without_the_sweep(tmp_path):
    plain = copy.deepcopy(SWEPT)
    del plain["sweep"]
    before = {r.run_id for r in _runs(tmp_path, plain)}
    swept = _runs(tmp_path, SWEPT)
    assert before == {r.run_id for r in swept if "@lr=" not in r.run_id}
    assert len(swept) == len(before) + 2 * 2 * 2  # two more lrs x two methods x two seeds
    assert "sweep" not in next(r for r in _runs(tmp_path, plain) if not r.is_unadapted).run_info("complete").analysis


@pytest.mark.parametrize("lr,text", [(3e-4, "3e-4"), (1e-3, "1e-3"), (2.5e-5, "2.5e-5"), (0.01, "1e-2"), (1.0, "1e0")])
def test_lr_labels_are_short_and_stable(lr, text):
    assert lr_text(lr) == text
