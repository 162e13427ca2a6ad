"""Progress events: the one line a training process prints per step or phase, and its parser
(the runner's progress bars, `status`).
"""

from __future__ import annotations

import json
from typing import Any, Optional

EVENT_PREFIX = "[disha-event] "


def emit(event: str, run_id: str, **fields: Any) -> None:
    """Print one event line for the runner (call on rank 0 only: every rank's output is piped)."""
    print(EVENT_PREFIX + json.dumps({"event": event, "run_id": run_id, **fields}, default=float), flush=True)


def emit_step(run_id: str, step_log: Any, max_steps: int) -> None:
    """One optimizer step: `step_log` is the run's `results.StepLog` (step, loss, lr, grad_norm,
    tokens, step_time_s)."""
    fields = {k: getattr(step_log, k, None) for k in ("step", "loss", "lr", "grad_norm", "tokens", "step_time_s")}
    emit("step", run_id, max_steps=max_steps, **fields)


def emit_phase(run_id: str, name: str) -> None:
    """The run entered a stage without steps (e.g. "evaluating"): shown beside its bar."""
    emit("phase", run_id, name=name)


def parse_event(line: str) -> Optional[dict[str, Any]]:
    """The event of a worker output line, or None for any other line (or a garbled event)."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX):])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None
