"""Visible progress of `disha-bench run`: events from the workers, bars or plain lines in the runner.

    disha-bench run suites/smoke.yaml       # a terminal shows two bars; a log file gets plain lines

A worker reports on its output one machine-readable line per event (rank 0 only):

    [disha-event] {"event": "step", "run_id": "...", "step": 5, "max_steps": 20, "loss": 1.23, ...}

(`emit_step` after each optimizer step; `emit_phase` when a run moves on to a long stage without
steps, e.g. "evaluating"). The runner pipes every worker line through
`SuiteProgress.feed`, which draws on a terminal (rich) the suite (runs done of N, ETA) and the
current run (step of max_steps, loss, steps/s, ETA); elsewhere (CI logs, files, `| tee`) it prints
a plain line at the first step, every tenth of the steps and the last, because a redrawn bar
turns into megabytes of noise in a log. The same step events feed the optional metric loggers
(`output.loggers: [tensorboard, wandb]` in a suite; extras `pip install disha-bench[tensorboard]`
/ `[wandb]`), which are off by default.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, TextIO

from disha_bench.contracts.events import parse_event
from disha_bench.core.errors import UserError, did_you_mean

# ---------------------------------------------------------------------------------------------
# Worker side


# ---------------------------------------------------------------------------------------------
# Runner side


def interactive(stream: TextIO) -> bool:
    """A terminal a person watches: a TTY, and not a CI job (CI sets CI=true)."""
    return hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("CI")


def clock(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunState:
    """What the display knows of the run in progress, from its step events."""

    def __init__(self, run_id: str, max_steps: Optional[int] = None):
        self.run_id, self.max_steps = run_id, max_steps
        self.step, self.loss = 0, None
        self.step_times: list[float] = []
        self.phase: Optional[str] = None

    def update(self, event: dict) -> None:
        self.step, self.phase = int(event.get("step") or self.step), None
        self.max_steps = event.get("max_steps") or self.max_steps
        self.loss = event.get("loss", self.loss)
        if event.get("step_time_s"):
            self.step_times.append(float(event["step_time_s"]))

    def steps_per_s(self) -> Optional[float]:
        recent = self.step_times[-20:]
        return len(recent) / sum(recent) if recent and sum(recent) > 0 else None

    def eta_s(self) -> Optional[float]:
        rate = self.steps_per_s()
        return (self.max_steps - self.step) / rate if rate and self.max_steps else None

    def text(self) -> str:
        if self.phase:
            return self.phase
        rate = self.steps_per_s()
        loss = f"loss {self.loss:.4f}" if isinstance(self.loss, (int, float)) else "loss ?"
        speed = f"{rate:.2f} steps/s" if rate else "? steps/s"
        return f"{loss}  {speed}  ETA {clock(self.eta_s())}"


class SuiteProgress:
    """The runner's display: `run_started`, `feed` (each worker line), `run_finished`, `close`.

    total: runs selected; done: those already finished (skipped). stream: where to draw (stdout).
    loggers: metric logger names (`output.loggers`), one set per run under `<results>/.runs/<id>/`.
    """

    def __init__(self, total: int, done: int = 0, *, stream: Optional[TextIO] = None, loggers: Sequence[str] = (),
                 results_dir: Optional[Path] = None, force_terminal: Optional[bool] = None):
        self.total, self.done = total, done
        self.not_complete: Counter[str] = Counter()
        """Runs of this session that ended without completing, by status (failed, diverged, ...)."""
        self.stream = stream or sys.stdout
        self.logger_names, self.results_dir = tuple(loggers), results_dir
        self.run: Optional[RunState] = None
        self.run_durations: list[float] = []
        self.run_started_at = time.monotonic()
        self.loggers: list[Logger] = []
        self.tty = interactive(self.stream) if force_terminal is None else force_terminal
        self._bars = self._start_bars() if self.tty else None
        atexit.register(self.close)  # a Ctrl-C between runs must still give the terminal back
        global _ACTIVE
        _ACTIVE = self

    def _start_bars(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        console = Console(file=self.stream, force_terminal=True)
        bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), console=console, redirect_stdout=self.stream is sys.stdout,
                        redirect_stderr=False, refresh_per_second=4)
        self._suite_bar = bars.add_task("suite", total=self.total, completed=self.done, info=self._suite_info())
        self._run_bar = bars.add_task("run", total=1, completed=0, info="", visible=False)
        bars.start()
        return bars

    def suite_eta_s(self) -> Optional[float]:
        if not self.run_durations:
            return None
        remaining = self.total - self.done
        current = self.run.eta_s() if self.run else None
        mean = sum(self.run_durations) / len(self.run_durations)
        if self.run is not None and current is not None:
            return current + mean * (remaining - 1)
        return mean * remaining

    def _suite_info(self) -> str:
        return f"runs{self._not_complete_text()}  ETA {clock(self.suite_eta_s())}"

    def _not_complete_text(self) -> str:
        """' (1 failed, 1 diverged)': done counts every ended run, this says which did not complete."""
        if not self.not_complete:
            return ""
        return " (" + ", ".join(f"{n} {status}" for status, n in sorted(self.not_complete.items())) + ")"

    def run_started(self, run_id: str) -> None:
        self.run, self.run_started_at = RunState(run_id), time.monotonic()
        if self.results_dir is not None:
            self.loggers = make_loggers(list(self.logger_names), self.results_dir / ".runs" / run_id)
        if self._bars is not None:
            self._bars.update(self._run_bar, description=run_id, total=1, completed=0, info="", visible=True)

    def feed(self, line: str) -> bool:
        """Take one worker output line; True when it was an event (consumed: not to be echoed)."""
        event = parse_event(line)
        if event is None:
            return False
        if event["event"] == "step":
            self._step(event)
        elif event["event"] == "phase" and self.run is not None:
            self.run.phase = str(event.get("name") or "") or None
            if self._bars is not None:
                self._bars.update(self._run_bar, info=self.run.text())
            else:
                self.stream.write(f"   {self.run.phase}\n")
                self.stream.flush()
        return True

    def _step(self, event: dict) -> None:
        if self.run is None or self.run.run_id != event.get("run_id"):
            self.run_started(str(event.get("run_id")))
        run = self.run
        if run is None:
            raise RuntimeError("run_started() sets the run")
        run.update(event)
        for logger in self.loggers:
            logger.log(run.step, {k: event[k] for k in ("loss", "lr", "grad_norm", "tokens", "step_time_s")
                                  if isinstance(event.get(k), (int, float))})
        if self._bars is not None:
            self._bars.update(self._run_bar, total=run.max_steps or run.step, completed=run.step, info=run.text())
            self._bars.update(self._suite_bar, info=self._suite_info())
        elif run.step == 1 or run.step == run.max_steps or run.step % max(1, (run.max_steps or 10) // 10) == 0:
            self.stream.write(f"   step {run.step}/{run.max_steps or '?'}  {run.text()}\n")
            self.stream.flush()

    def run_finished(self, status: str) -> None:
        self.done += 1
        if status not in ("complete", "stopped_by_budget"):
            self.not_complete[status] += 1
        self.run_durations.append(time.monotonic() - self.run_started_at)
        self.run = None
        for logger in self.loggers:
            logger.close()
        self.loggers = []
        if self._bars is not None:
            self._bars.update(self._run_bar, visible=False)
            self._bars.update(self._suite_bar, completed=self.done, info=self._suite_info())
        else:
            self.stream.write(f"   suite: {self.done}/{self.total} runs done{self._not_complete_text()}, "
                              f"ETA {clock(self.suite_eta_s())}\n")
            self.stream.flush()

    def close(self) -> None:
        global _ACTIVE
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        for logger in self.loggers:
            logger.close()
        self.loggers = []
        if _ACTIVE is self:
            _ACTIVE = None


_ACTIVE: Optional[SuiteProgress] = None


def active() -> Optional[SuiteProgress]:
    """The display of the suite being run in this process, if any (the runner's `_launch` feeds it)."""
    return _ACTIVE


# ---------------------------------------------------------------------------------------------
# Metric loggers (extras, off by default)


class Logger(Protocol):
    """Where step metrics go besides the result file."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger:
    """Event files under `<run dir>/tensorboard` (view with `tensorboard --logdir results/<suite>/.runs`)."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("logger 'tensorboard' needs the tensorboard package: pip install 'disha-bench[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A W&B run named after the run; project from WANDB_PROJECT (default disha-bench)."""

    def __init__(self, run_dir: Path):
        try:
            import wandb
        except ImportError:
            raise UserError("logger 'wandb' needs the wandb package: pip install 'disha-bench[wandb]'") from None
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "disha-bench"), name=Path(run_dir).name,
                              dir=str(run_dir), reinit=True)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


LOGGERS: dict[str, Callable[[Path], Logger]] = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}


def make_loggers(names: list[str], run_dir: str | Path) -> list[Logger]:
    """Instantiate the named loggers (none by default); UserError for unknown names or missing packages."""
    loggers: list[Logger] = []
    for name in names:
        if name not in LOGGERS:
            raise UserError(f"unknown logger {name!r}; {did_you_mean(name, LOGGERS)}")
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        loggers.append(LOGGERS[name](Path(run_dir)))
    return loggers
