"""Training progress for the runner: a bar on a terminal, plain lines in logs, optional metric loggers.

    python -c "from disha_bench.progress import Progress; p = Progress(3, 'demo'); [p.update(i, loss=1/i) for i in (1, 2, 3)]; p.close()"

On an interactive terminal (and not under CI) a progress bar is drawn: tqdm when installed, else a
one-line bar of our own. Elsewhere (files, CI logs) a plain line is printed every `every` steps,
because carriage-return bars turn into megabytes of noise in a log file.

Metric loggers (TensorBoard, Weights & Biases) are off by default; `make_loggers(["tensorboard"],
run_dir)` asks for them explicitly and fails with a UserError naming the missing package.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

from disha_bench.errors import UserError, did_you_mean


def interactive(stream: TextIO) -> bool:
    """A terminal a person watches: a TTY, and not a CI job (CI sets CI=true)."""
    return hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("CI")


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items() if v is not None)


class Progress:
    """`update(step, **metrics)` after each optimizer step (step counts from 1), `close()` at the end."""

    def __init__(self, total: int, desc: str = "", every: int | None = None, stream: TextIO | None = None,
                 enabled: bool = True):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream or sys.stderr
        self.every = every or max(1, total // 10)
        self.start = time.monotonic()
        self.tty = enabled and interactive(self.stream)
        self._bar = None
        if self.tty:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, file=self.stream, dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, step: int, **metrics: Any) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix_str(_fmt(metrics), refresh=False)
            self._bar.refresh()
        elif self.tty:
            width = 30
            filled = int(width * step / max(1, self.total))
            self.stream.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} {_fmt(metrics)}\033[K")
            self.stream.flush()
        elif step == 1 or step % self.every == 0 or step == self.total:
            elapsed = time.monotonic() - self.start
            self.stream.write(f"{self.desc} step {step}/{self.total} {_fmt(metrics)} ({elapsed:.0f}s)\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.tty:
            self.stream.write("\n")
            self.stream.flush()


class Logger(Protocol):
    """Where step metrics go besides the result file."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger:
    """Event files under `<run_dir>/tensorboard` (view with `tensorboard --logdir results/<suite>`)."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("logger 'tensorboard' needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A W&B run named after the run directory; project from WANDB_PROJECT (default disha-bench)."""

    def __init__(self, run_dir: Path):
        try:
            import wandb
        except ImportError:
            raise UserError("logger 'wandb' needs the wandb package: pip install wandb") from None
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "disha-bench"), name=Path(run_dir).name,
                              dir=str(run_dir), reinit=True)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


LOGGERS = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}


def make_loggers(names: list[str], run_dir: str | Path) -> list[Logger]:
    """Instantiate the named loggers (none by default); UserError for unknown names or missing packages."""
    loggers = []
    for name in names:
        if name not in LOGGERS:
            raise UserError(f"unknown logger {name!r}; {did_you_mean(name, LOGGERS)}")
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        loggers.append(LOGGERS[name](Path(run_dir)))
    return loggers
