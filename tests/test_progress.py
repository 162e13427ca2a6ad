"""Progress of `disha-bench run`: worker event lines, plain lines off a terminal, bars on one.

    python -m pytest tests/test_progress.py
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from disha_bench.contracts import events
from disha_bench.contracts.results import COMPLETE, StepLog
from disha_bench.running import progress


def _worker_lines(run_id: str, steps: int) -> list[str]:
    """What a worker prints: real event lines from `emit_step`, in a process of their own."""
    code = (
        "from disha_bench.contracts import events\nfrom disha_bench.contracts.results import StepLog\n"
        f"for s in range(1, {steps} + 1):\n"
        f"    events.emit_step({run_id!r}, StepLog(s, 2.0 / s, 1e-4, 0.5, 64, 0.25), {steps})\n"
        f"events.emit_phase({run_id!r}, 'evaluating')\n"
        "print('[disha] a message')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.splitlines(keepends=True)


def test_event_lines_round_trip():
    stream = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, stream
    try:
        events.emit_step("r1", StepLog(3, 1.5, 1e-4, None, 10, 0.5), 20)
    finally:
        sys.stdout = sys_stdout
    event = events.parse_event(stream.getvalue())
    assert event == {"event": "step", "run_id": "r1", "max_steps": 20, "step": 3, "loss": 1.5, "lr": 1e-4,
                     "grad_norm": None, "tokens": 10, "step_time_s": 0.5}
    assert events.parse_event("[disha] not an event\n") is None
    assert events.parse_event(events.EVENT_PREFIX + "{not json\n") is None


def test_plain_lines_when_not_on_a_terminal():
    """A log file gets a line at step 1, every tenth of the steps and the last, and one per run."""
    stream = io.StringIO()
    display = progress.SuiteProgress(3, done=1, stream=stream)
    assert not display.tty and progress.active() is display
    display.run_started("run-a")
    consumed = [display.feed(line) for line in _worker_lines("run-a", 20)]
    assert consumed == [True] * 21 + [False]  # the [disha] message is left to the runner to echo
    display.run_finished(COMPLETE)
    display.close()
    lines = stream.getvalue().splitlines()
    steps = [line for line in lines if line.strip().startswith("step ")]
    assert [line.split()[1] for line in steps] == ["1/20", "2/20", "4/20", "6/20", "8/20", "10/20", "12/20",
                                                    "14/20", "16/20", "18/20", "20/20"]
    assert "loss 0.1000" in steps[-1] and "4.00 steps/s" in steps[-1] and "ETA 0:00:00" in steps[-1]
    assert "ETA 0:00:05" in steps[0]  # 19 steps left at 4 steps/s: 4.75 s
    assert lines[-2].strip() == "evaluating"
    assert lines[-1].strip().startswith("suite: 2/3 runs done, ETA ")
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert progress.active() is None


def test_bars_on_a_terminal():
    stream = io.StringIO()
    display = progress.SuiteProgress(2, stream=stream, force_terminal=True)
    display.run_started("run-b")
    for line in _worker_lines("run-b", 8)[:4]:
        display.feed(line)
    display._bars.refresh()
    drawn = stream.getvalue()
    display.run_finished(COMPLETE)
    display.close()
    assert "run-b" in drawn and "4/8" in drawn and "steps/s" in drawn and "ETA" in drawn
    assert "0/2" in drawn  # the suite bar: runs done of N


class _Recorder:
    """A metric logger that keeps what it is given (the real ones need the optional extras)."""

    runs: list = []

    def __init__(self, run_dir):
        self.run_dir, self.steps, self.closed = run_dir, [], False
        _Recorder.runs.append(self)

    def log(self, step, metrics):
        self.steps.append((step, metrics))

    def close(self):
        self.closed = True


def test_step_events_feed_the_metric_loggers(tmp_path, monkeypatch):
    monkeypatch.setitem(progress.LOGGERS, "recorder", _Recorder)
    display = progress.SuiteProgress(1, stream=io.StringIO(), loggers=("recorder",), results_dir=tmp_path)
    display.run_started("run-c")
    for line in _worker_lines("run-c", 3):
        display.feed(line)
    display.run_finished(COMPLETE)
    display.close()
    (logger,) = _Recorder.runs[-1:]
    assert logger.run_dir == tmp_path / ".runs" / "run-c" and logger.closed
    assert [step for step, _ in logger.steps] == [1, 2, 3]
    assert logger.steps[-1][1] == {"loss": 2.0 / 3, "lr": 1e-4, "grad_norm": 0.5, "tokens": 64, "step_time_s": 0.25}


def test_a_missing_logger_package_is_a_preflight_error(monkeypatch):
    from disha_bench.core.errors import UserError
    from disha_bench.running import preflight

    monkeypatch.setitem(preflight.LOGGER_PACKAGES, "wandb", "disha_bench_no_such_package")
    with pytest.raises(UserError) as err:
        preflight.check_loggers(["wandb"], file="s.yaml")
    assert str(err.value) == ("s.yaml: output.loggers[0]: logger 'wandb' needs the disha_bench_no_such_package "
                              "package: pip install 'disha-bench[wandb]'")
