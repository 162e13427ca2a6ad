"""What may save or stop the fit loop between steps: checkpoints, stop signals, the time budget.

    python -m pytest -q tests/test_resume.py

The recipe uses it in this order (see recipe.train):

    control = FitControl.for_run(spec, engine, device, curve.curve)
    state, trained = control.start(sampler)     # a fresh FitState, or the last checkpoint's (and curve)
    fit(..., between_steps=control.after(curve))    # True ends training: a signal, or max_time spent
    control.after_fit(state, already_saved=trained) # the end-of-training checkpoint; signals kill again

Checkpoints themselves (layout, atomic save, RNGs) are `disha_bench.training.checkpointer`. `training.max_time`
is counted in training time (seconds inside optimizer steps, summed over resumed segments; held-out
evaluation and checkpoints excluded), so that every method gets the same compute for its budget.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable

from disha_bench import methods
from disha_bench.config.run_spec import RunSpec
from disha_bench.contracts.results import BUDGET_STOPPED, EVALUATED_STATUSES, HeldOut, HeldOutPoint
from disha_bench.training import distributed
from disha_bench.training.checkpointer import Checkpointer, Interrupted, Progress
from disha_bench.training.loop import FitState


class FitControl:
    """Checkpoints (when the run has a checkpoint folder) and the time budget of one run."""

    def __init__(self, engine, device, max_steps: int, max_time: float | None, checkpointer: Checkpointer | None,
                 name: str, heldout: HeldOut | None = None):
        self.engine, self.device, self.max_steps, self.max_time = engine, device, max_steps, max_time
        self.checkpointer, self.name, self.heldout = checkpointer, name, heldout

    @classmethod
    def for_run(cls, spec: RunSpec, engine, device, heldout: HeldOut | None = None) -> "FitControl":
        """`heldout`: the curve being measured, saved with each checkpoint and restored in place."""
        checkpointer = None
        if spec.checkpoint_dir:
            # Methods that rewrite the frozen weights at initialisation (PiSSA, OLoRA) save them too.
            exclude_frozen = not methods.get(spec.method.name).modifies_base_weights
            checkpointer = Checkpointer(Path(spec.checkpoint_dir), spec.checkpoint_every, exclude_frozen, spec.run_id)
        return cls(engine, device, spec.training.max_steps, spec.training.max_time, checkpointer, spec.run_id, heldout)

    @property
    def resumed_from(self) -> int | None:
        return self.checkpointer.resumed_from if self.checkpointer else None

    def start(self, sampler) -> tuple[FitState, bool]:
        """(state to fit from, whether training had already ended): restored from the last complete
        checkpoint when there is one. From here on a stop signal saves a checkpoint and stops."""
        state = FitState(sampler)
        if self.checkpointer is None:
            return state, False
        progress = self.checkpointer.resume(self.engine, sampler)
        self.checkpointer.signals.listen()
        if progress is None:
            return state, False
        state = fit_state_from_json(progress.fit, sampler)
        state.resumed_from_step = progress.step
        if self.heldout is not None and progress.heldout is not None:
            restored = HeldOut(**{**progress.heldout, "points": [HeldOutPoint(**p) for p in progress.heldout["points"]]})
            self.heldout.points, self.heldout.eval_time_s = restored.points, restored.eval_time_s
        distributed.log(f"{self.name}: resumed from the checkpoint of step {progress.step}")
        return state, progress.finished

    def after(self, measure: Callable[[FitState], None]) -> Callable[[FitState], bool]:
        """`between_steps` that first runs `measure` (the held-out curve), so that a checkpoint of
        the step holds its point."""

        def between_steps(state: FitState) -> bool:
            measure(state)
            return self.between_steps(state)

        return between_steps

    def between_steps(self, state: FitState) -> bool:
        """After each optimizer step: save when due or asked; True when training must end here."""
        spent = self.max_time is not None and state.train_time_s >= self.max_time and state.step < self.max_steps
        if self.checkpointer is None:
            spent = distributed.all_reduce_sum([1.0 if spent else 0.0], self.device)[0] > 0
            return self._budget_stop(state) if spent else False
        decision = self.checkpointer.after_step(state.step, self.max_steps, spent, self.device)
        if decision.save:
            self._save(state, "signal" if decision.stop == "signal" else "every")
        if decision.stop == "signal":
            raise Interrupted(state.step)
        return self._budget_stop(state) if decision.stop == "budget" else False

    def _budget_stop(self, state: FitState) -> bool:
        state.status, state.stopped_at_step = BUDGET_STOPPED, state.step
        distributed.log(f"{self.name}: training.max_time ({self.max_time:g} s of training) spent after step {state.step}")
        return True

    def after_fit(self, state: FitState, already_saved: bool) -> None:
        """Training ended (budget or complete): save it when checkpoints are periodic, so that a
        preemption during a long evaluation does not cost the training; then signals kill again."""
        if self.checkpointer is None:
            return
        if self.checkpointer.every and not already_saved and state.status in EVALUATED_STATUSES:
            self._save(state, "trained", finished=True)
        self.checkpointer.finish()

    def _save(self, state: FitState, reason: str, finished: bool = False) -> None:
        if self.checkpointer is None:  # callers save only with checkpoints on
            raise RuntimeError(f"{self.name}: no checkpointer to save with")
        progress = Progress(step=state.step, sampler=state.sampler.state_dict(), fit=fit_state_to_json(state),
                            finished=finished, heldout=dataclasses.asdict(self.heldout) if self.heldout else None)
        path = self.checkpointer.save(self.engine, progress, reason)
        distributed.log(f"{self.name}: checkpoint of step {state.step} saved ({reason}): {path}")


def fit_state_to_json(state: FitState) -> dict[str, Any]:
    """Every FitState field but the sampler (saved on its own), dataclasses as dicts."""
    skipped = ("sampler", "resumed_from_step")  # saved on its own; a fact of the resuming process
    return {f.name: _plain(getattr(state, f.name)) for f in dataclasses.fields(state) if f.name not in skipped}


def fit_state_from_json(data: dict[str, Any], sampler) -> FitState:
    """The inverse of fit_state_to_json: lists of dataclasses (step log, held-out points) rebuilt
    from the field types, so fields added to FitState later travel without changes here."""
    hints = typing.get_type_hints(FitState)
    values = {name: _typed(hints.get(name), value) for name, value in data.items() if name in hints}
    return FitState(sampler=sampler, **values)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _typed(hint: Any, value: Any) -> Any:
    if value is None or hint is None:
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return hint(**value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args and isinstance(value, list):
        return [_typed(args[0], v) for v in value]
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _typed(inner[0], value) if len(inner) == 1 else value
    return value

