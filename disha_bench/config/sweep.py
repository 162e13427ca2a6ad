"""Learning-rate sweeps: `sweep: {lr: [...]}` on a method or the suite, checked and expanded.

    sweep: {lr: [1.0e-4, 3.0e-4, 1.0e-3]}         # suite level: every method at each lr
    methods:
      - {name: bat, r: 32, sweep: {lr: [3.0e-4, 1.0e-3]}}   # a method's own sweep replaces the suite's

Every swept method runs at each of its lrs for every seed. The suite's `training.lr` (the shared lr)
must be one of them: the comparison at the shared lr is the paper's, the one at each method's best lr
(disha_bench.analysis.sweep) answers whether a method is only better at that lr. The run at the
shared lr keeps the method's plain label, so its run id is the one it had before the sweep; the others
are labelled `<label>@lr=<lr>` (`lora@lr=1e-3`). Which sweep a run belongs to is recorded in its
`run.analysis.sweep` (not part of the run id).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from disha_bench.core.errors import UserError
from disha_bench.core.schema import StrictModel

if TYPE_CHECKING:
    from disha_bench.config.suite import MethodConfig, Suite

SWEEPABLE = ("lr",)
"""Settings a sweep may vary (only the learning rate for now)."""


class SweepConfig(StrictModel):
    model_config = ConfigDict(extra="allow")  # other keys are refused below with the sweepable ones named

    lr: list[float] = Field(min_length=1)
    """Learning rates to run each method at: positive, no repeats, the suite's `training.lr` among them."""


class SweepMembership(BaseModel):
    """The sweep one run belongs to, recorded in its `run.analysis.sweep`."""

    model_config = ConfigDict(extra="forbid")

    label: str
    """The method's label in the suite (without the `@lr=` suffix)."""
    lr: float
    """This run's learning rate."""
    lrs: list[float]
    """Every learning rate of this method's sweep."""
    shared_lr: float
    """The suite's `training.lr`: the lr of the shared-lr comparison."""


def lr_text(lr: float) -> str:
    """A learning rate as a short, stable label: 3e-4, 1e-3, 2.5e-5."""
    mantissa, exponent = f"{lr:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def swept_label(label: str, lr: float, shared_lr: float) -> str:
    """The label of a method's run at `lr`: plain at the shared lr, `<label>@lr=<lr>` otherwise."""
    return label if math.isclose(lr, shared_lr, rel_tol=1e-9) else f"{label}@lr={lr_text(lr)}"


def sweep_of(suite: "Suite", method: "MethodConfig") -> Optional[SweepConfig]:
    """The sweep that applies to `method`: its own, else the suite's, else none."""
    return method.sweep or suite.sweep


def check_sweeps(suite: "Suite", file: str) -> None:
    """Each sweep: positive lrs, no repeats, the shared lr among them, no method-level `lr` beside it."""
    shared = suite.training.lr
    entries: list[tuple[str, Optional[SweepConfig]]] = [("sweep", suite.sweep)]
    entries += [(f"methods[{i}].sweep", m.sweep) for i, m in enumerate(suite.methods)]
    for key, sweep in entries:
        if sweep is None:
            continue
        for name in sorted(sweep.model_extra or {}):
            raise UserError(f"only {', '.join(SWEEPABLE)} can be swept for now; expected `{key}: {{lr: [...]}}`",
                            file=file, key=f"{key}.{name}")
        for j, lr in enumerate(sweep.lr):
            if not lr > 0:
                raise UserError(f"expected a learning rate > 0, got {lr:g}", file=file, key=f"{key}.lr[{j}]")
            if any(math.isclose(lr, other, rel_tol=1e-9) for other in sweep.lr[:j]):
                raise UserError(f"{lr:g} appears twice; expected distinct learning rates", file=file, key=f"{key}.lr[{j}]")
        if not any(math.isclose(lr, shared, rel_tol=1e-9) for lr in sweep.lr):
            raise UserError(f"the shared lr training.lr = {shared:g} is not among the swept values "
                            f"{[float(f'{lr:g}') for lr in sweep.lr]}; expected it in the list (the shared-lr "
                            f"comparison runs at it)", file=file, key=f"{key}.lr")
    for i, method in enumerate(suite.methods):
        if method.lr is not None and sweep_of(suite, method) is not None:
            where = f"methods[{i}].sweep" if method.sweep else "sweep"
            raise UserError(f"a method's own lr and a sweep ({where}) exclude each other; expected one of them: "
                            f"put its learning rates in methods[{i}].sweep.lr", file=file, key=f"methods[{i}].lr")


def swept_entries(suite: "Suite", method: "MethodConfig") -> list[tuple[str, Optional[float], Optional[dict[str, Any]]]]:
    """(label, lr or None for the method's default, membership or None) of each of a method's run groups."""
    label = method.label or method.name
    sweep = sweep_of(suite, method)
    if sweep is None:
        return [(label, method.lr, None)]
    shared = suite.training.lr
    return [(swept_label(label, lr, shared), lr,
             SweepMembership(label=label, lr=lr, lrs=list(sweep.lr), shared_lr=shared).model_dump())
            for lr in sweep.lr]
