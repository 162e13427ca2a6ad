"""The checkpoint folder's layout, shared by the training process that writes checkpoints and the
runner and `status` that read them; and the stop-grace setting both sides agree on.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"


STATE_FILE = "state.json"


GRACE_ENV = "DISHA_BENCH_STOP_GRACE_S"


DEFAULT_GRACE_S = 120.0


def stop_grace_s() -> float:
    """Seconds a stopping runner gives its workers to save a checkpoint before SIGKILL
    ($DISHA_BENCH_STOP_GRACE_S, `disha-bench run --stop-grace`; default 120)."""
    return float(os.environ.get(GRACE_ENV) or DEFAULT_GRACE_S)


def checkpoints_root(results_dir: Path, run_id: str) -> Path:
    """Where the checkpoints of one run live."""
    return Path(results_dir) / ".runs" / run_id / "checkpoints"


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (half-written ones never count)."""
    if not Path(root).is_dir():
        return []
    found = [p for p in Path(root).glob("step-*") if (p / MARKER).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint whose marker reads (its files are checked only by `verify`)."""
    for found in reversed(complete_checkpoints(root)):
        try:
            read_marker(found)
            return found
        except (OSError, ValueError):
            continue
    return None


def read_marker(checkpoint: Path) -> dict[str, Any]:
    """{"step", "reason", "saved_at", "host", "files"} of a complete checkpoint."""
    return json.loads((Path(checkpoint) / MARKER).read_text())


def discard(results_dir: Path, run_ids: list[str]) -> None:
    """Remove the checkpoints of these runs (after their result is written, or for --fresh)."""
    for run_id in run_ids:
        shutil.rmtree(checkpoints_root(results_dir, run_id), ignore_errors=True)
