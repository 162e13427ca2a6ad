"""The markdown leaderboard from a synthetic results folder (3 methods x 3 seeds, one failed, one diverged).

    pytest tests/test_report.py -q
"""

import argparse
import math
from pathlib import Path

import pytest

from disha_bench import report
from disha_bench.errors import UserError
from disha_bench.results import Memory, Meta, RunInfo, RunResult, StepLog, Throughput, Training, write_json_atomic

TASK = "synth-task"
STEPS = 40
# Time constants of exp(-t/tau): bone converges fastest, lora slowest.
TAU = {"bone": 3.0, "bat": 4.0, "lora": 15.0}


def make_result(method, seed, status="complete", tau=None, shift=0.0, task=TASK, steps=STEPS, error=None):
    tau = tau or TAU[method]
    losses = [0.5 + 2.0 * math.exp(-(t - 1) / tau) + 0.01 * ((seed * 7 + t) % 5) / 5 + shift for t in range(1, steps + 1)]
    if status == "diverged":
        losses = losses[:10] + [float("nan")]
    logs = [StepLog(step=i + 1, loss=v, lr=1e-3, grad_norm=25.0 if method != "lora" else 4.0, tokens=100,
                    step_time_s=0.1) for i, v in enumerate(losses)]
    complete = status == "complete"
    return RunResult(
        run=RunInfo(run_id=f"{task}-{method}-s{seed}-abcd1234", suite="synth", task=task, method=method, seed=seed,
                    status=status, error=error, config={"training": {"max_steps": steps}}, wall_time_s=60.0 + seed),
        training=None if status == "failed" else Training(
            trainable_params=10_000_000 if method != "lora" else 11_000_000, total_params=134_000_000, steps=logs,
            stopped_at_step=len(logs) if status == "diverged" else None),
        evaluation={"accuracy": {"bone": 0.8, "bat": 0.78, "lora": 0.7}[method] + 0.01 * seed, "f1": 0.5,
                    "primary_metric": "accuracy", "n_examples": 128} if complete else {},
        memory=Memory(device="cpu", train_peak_mb={"bone": 4700.0, "bat": 6300.0, "lora": 5500.0}[method] + seed),
        throughput=Throughput(tokens_per_s={"bone": 250.0, "bat": 200.0, "lora": 190.0}[method] + seed),
        meta=Meta(versions={"python": "3.11", "torch": "2.13.0"}, git_commit="0123abc", git_dirty=True,
                  hardware={"cpu": "test cpu", "cores": 2}, command="disha-bench run suites/synth.yaml"),
    )


def write_results(folder: Path, results) -> Path:
    for r in results:
        write_json_atomic(folder / f"{r.run.run_id}.json", r.to_dict())
    return folder


@pytest.fixture
def results_dir(tmp_path):
    results = [make_result(m, s) for m in ("bone", "bat", "lora") for s in (0, 1, 2)
               if (m, s) not in (("bat", 2), ("lora", 1))]
    results.append(make_result("bat", 2, status="failed", error="out of memory | at step 3"))
    results.append(make_result("lora", 1, status="diverged", error="loss is NaN at step 11"))
    return write_results(tmp_path / "results", results)


def _row(markdown: str, method: str) -> list[str]:
    line = next(l for l in markdown.splitlines() if l.startswith(f"| {method} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_contents_and_plots(results_dir, tmp_path):
    out = report.write_report(results_dir, tmp_path / "reports" / "synth.md", "disha-bench report results",
                              targets=[1.0], ema=0.5)
    md = out.read_text()
    header_line = next(l for l in md.splitlines() if l.startswith("| method "))
    header = [c.strip() for c in header_line.strip("|").split("|")]
    for title in ("trainable params", "accuracy (primary)", "steps to loss ≤ 1", "final loss", "curve area",
                  "peak train MB", "tokens/s", "wall time s"):
        assert title in header, title
    # Best per column in bold, direction-aware: bone is fastest, most accurate, smallest memory.
    bone, lora = _row(md, "bone"), _row(md, "lora")
    for title in ("steps to loss ≤ 1", "accuracy (primary)", "peak train MB", "tokens/s", "curve area"):
        i = header.index(title)
        assert bone[i].startswith("**"), (title, bone[i])
        assert not lora[i].startswith("**"), (title, lora[i])
    assert "n=3" in bone[header.index("accuracy (primary)")] and "[" in bone[header.index("accuracy (primary)")]
    assert lora[header.index("runs ok")] == "2/3"
    assert not lora[header.index("trainable params")].startswith("**")  # informational, not ranked
    # Failed and diverged runs are listed with their status and (escaped) error.
    assert "synth-task-bat-s2-abcd1234" in md and "out of memory \\| at step 3" in md
    assert "| diverged " in md and "loss is NaN at step 11" in md
    # A claim only where the intervals separate.
    assert "**bone** reaches loss 1 in fewer steps than **lora**" in md
    assert "not resolved" in md  # bone vs bat: identical step counts across seeds -> no claim
    # Header with provenance.
    for text in ("# disha-bench report: synth", "0123abc (dirty)", "`disha-bench report results`",
                 "disha-bench run suites/synth.yaml", "torch 2.13.0", "test cpu", "EMA β=0.5"):
        assert text in md, text
    # Plots beside the markdown, linked relatively.
    for name in ("synth-synth-task-loss.png", "synth-synth-task-memory.png"):
        assert f"]({name})" in md
        assert (out.parent / name).stat().st_size > 1000


def test_report_defaults_and_cli(results_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    report.register(parser.add_subparsers())
    args = parser.parse_args(["report", str(results_dir)])
    assert args.func(args) == 0
    md = (tmp_path / "reports" / "synth.md").read_text()  # default: reports/<suite>.md
    assert "final:*" in md and "steps to loss ≤" in md  # default target: the worst method's final loss
    assert "wrote reports/synth.md" in capsys.readouterr().out


def test_single_seed_has_no_interval_and_no_claim(tmp_path):
    folder = write_results(tmp_path / "r", [make_result("bone", 0), make_result("lora", 0)])
    md = report.write_report(folder, tmp_path / "one.md", "x", targets=[1.0]).read_text()
    assert "(n=1)" in md and "fewer steps than" not in md and "not resolved" in md


def test_task_where_every_run_failed(tmp_path):
    runs = [make_result("bone", 0), make_result("lora", 0, status="failed", task="broken", error="boom")]
    md = report.write_report(write_results(tmp_path / "r", runs), tmp_path / "f.md", "x", targets=[1.0]).read_text()
    assert "## broken" in md and "| failed " in md and "No memory-vs-metric plot" in md
    assert (tmp_path / "f-broken-loss.png").stat().st_size > 0


def test_empty_or_unreadable_results_dir(tmp_path):
    with pytest.raises(UserError, match="not found"):
        report.write_report(tmp_path / "missing", tmp_path / "x.md")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no result files"):
        report.write_report(tmp_path / "empty", tmp_path / "x.md")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.json").write_text("{not json")
    with pytest.raises(UserError, match="none of the 1 .json files"):
        report.write_report(tmp_path / "junk", tmp_path / "x.md")


def test_bad_target_is_a_user_error(results_dir, tmp_path):
    with pytest.raises(UserError, match="expected a loss"):
        report.write_report(results_dir, tmp_path / "x.md", targets=["last:lora"])
