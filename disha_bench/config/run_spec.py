"""The run spec: everything one run needs, written by the runner, read by the worker.

    disha-bench run suites/smoke.yaml      # writes results/smoke/.runs/<run-id>.spec.json per run
    python -m disha_bench.training results/smoke/.runs/<run-id>.spec.json

`suite.expand_runs` builds one RunSpec per run from the typed suite; the runner adds where to write
(`RunSpec.for_launch`) and saves it as JSON; the worker validates it back into the same model. The
resolved configuration (`config()`) is what the run id hashes and what the result records.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from disha_bench.config.suite import ConvergenceConfig, EvaluationConfig, ModelConfig, TaskConfig, TrainingConfig
from disha_bench.contracts.results import RunInfo

UNADAPTED = "none"
"""Method name of the reference run: the base model evaluated as it is, nothing trained."""
UNADAPTED_LABEL = "unadapted"
"""Its label in results and reports."""


class MethodEntry(BaseModel):
    """One method of the suite as written: what parameter matching needs to size another method."""

    model_config = ConfigDict(extra="forbid")

    name: str
    """Registered method name (`disha-bench list methods`), or `none` for the unadapted reference."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Its parameters as written in the suite (a `match_params` still unresolved)."""


class RunMethod(MethodEntry):
    """The method of this run."""

    label: str
    """Its label in the suite (results and leaderboards use it)."""


class RunAnalysis(BaseModel):
    """Suite-level analysis settings recorded with the run (not part of its id)."""

    model_config = ConfigDict(extra="forbid")

    reference: Optional[str] = None
    """Label of the method every other is compared with."""
    targets: list[Any] = Field(default_factory=list)
    """The suite's convergence targets."""
    margins: dict[str, float] = Field(default_factory=dict)
    """The suite's smallest effects of interest (`analysis.margins`), read by the report."""
    sweep: Optional[dict[str, Any]] = None
    """The learning-rate sweep this run belongs to (config.sweep.SweepMembership: label, lr, lrs,
    shared_lr); null: the method is not swept."""


class RunSpec(BaseModel):
    """One run: the resolved configuration, the suite context it needs, and where to write."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = ""
    """`<task>-<method label>-s<seed>-<hash of config()>`; set by `with_id`."""
    suite: str
    """Suite name."""
    model: ModelConfig
    """The base model."""
    task: TaskConfig
    """The task with its options resolved (task defaults, then the suite's values)."""
    method: RunMethod
    """The method with its validated parameters."""
    training: TrainingConfig
    """Training settings, the method's own `lr` already applied."""
    evaluation: EvaluationConfig
    """Evaluation settings."""
    seed: int
    """Seed of this run."""
    world_size: int = 1
    """Ranks the run trains on."""
    methods: dict[str, MethodEntry] = Field(default_factory=dict)
    """Every method of the suite by label: `match_params` sizes this run's method against them."""
    convergence: ConvergenceConfig = Field(default_factory=ConvergenceConfig)
    """Targets and smoothing of the training-curve summary."""
    analysis: RunAnalysis = Field(default_factory=RunAnalysis)
    """Reference label and targets, recorded in RunInfo.analysis."""
    result_path: str = ""
    """Where rank 0 writes the result file (set by the runner)."""
    adapter_dir: Optional[str] = None
    """Where the trained adapter is saved before evaluation (set by the runner)."""
    keep_adapter: bool = False
    """Keep the adapter after a successful evaluation (`output.save_adapter`)."""
    reevaluate_from: Optional[str] = None
    """Result file of an earlier run of this spec whose evaluation failed: evaluate its saved
    adapter (`adapter_dir`) into it, without training again (set by the runner)."""
    data_dir: Optional[str] = None
    """The data directory (--data-dir or DISHA_BENCH_DATA)."""
    checkpoint_dir: Optional[str] = None
    """Folder of this run's mid-run checkpoints (set by the runner); null: no checkpoints, stop
    signals kill the run at once."""
    checkpoint_every: Optional[int] = None
    """Save a checkpoint every this many optimizer steps (`output.checkpoint_every`); null: only
    when a stop signal arrives."""
    command: str = ""
    """The command line that started the suite."""
    cost_repeat_path: Optional[str] = None
    """Set by the cost phase (running/cost.py): instead of the run, train `cost_steps` steps in this
    fresh process, measure peak memory and throughput, and write them to this file (no result)."""
    cost_steps: Optional[int] = None
    """Optimizer steps of that cost repeat."""

    def config(self) -> dict[str, Any]:
        """The resolved run configuration: hashed into the run id, recorded as RunInfo.config."""
        evaluation = _without_unset(self.evaluation.model_dump(), ADDED_SETTINGS["evaluation"])
        evaluation["lm_eval"] = [_without_unset(entry, ADDED_SETTINGS["lm_eval"]) for entry in evaluation["lm_eval"]]
        return {
            "model": self.model.model_dump(), "task": self.task.model_dump(),
            "method": {"name": self.method.name, "label": self.method.label, "params": self.method.params},
            "training": _without_unset(self.training.model_dump(), ADDED_SETTINGS["training"]), "evaluation": evaluation,
            "seed": self.seed, "world_size": self.world_size,
        }

    def with_id(self) -> "RunSpec":
        digest = hashlib.sha1(json.dumps(self.config(), sort_keys=True, default=str).encode()).hexdigest()[:8]
        return self.model_copy(update={"run_id": f"{self.task.name}-{self.method.label}-s{self.seed}-{digest}"})

    def has_saved_adapter(self) -> bool:
        """Whether `adapter_dir` holds a saved adapter (or, for `full`, a saved model)."""
        if not self.adapter_dir:
            return False
        directory = Path(self.adapter_dir)
        return (directory / "adapter_config.json").is_file() or (directory / "config.json").is_file()

    @property
    def suite_label(self) -> str:
        """The method's label in the suite (`match_params` and targets name it): the run's label
        without a learning-rate sweep's `@lr=` suffix."""
        return self.analysis.sweep["label"] if self.analysis.sweep else self.method.label

    @property
    def is_unadapted(self) -> bool:
        """The reference run: nothing is trained, the base model is evaluated once."""
        return self.method.name == UNADAPTED

    @staticmethod
    def stamp_finished(info: RunInfo, started: float) -> None:
        """Set `finished_at` and `wall_time_s` to now: the run's last act (evaluation included)."""
        now = time.time()
        info.finished_at = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")
        info.wall_time_s = now - started

    def run_info(self, status: str, error: str | None = None, started: float | None = None,
                 world_size: int | None = None) -> RunInfo:
        """The result's identity block; the worker and the runner (when a worker died) both use it."""
        now = time.time()
        started = now if started is None else started
        return RunInfo(
            run_id=self.run_id, suite=self.suite, task=self.task.name, method=self.method.label, seed=self.seed,
            status=status, error=error, config=self.config(),
            started_at=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            finished_at=datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
            wall_time_s=now - started, world_size=world_size or self.world_size,
            analysis=self.analysis.model_dump(exclude={"sweep"} if self.analysis.sweep is None else None), node=socket.gethostname(),
        )


ADDED_SETTINGS = {"training": ("global_batch", "max_epochs", "loss_weighting"), "evaluation": ("vllm_python",), "lm_eval": ("for_task",)}
"""Settings added after results were first written: left out of a run's configuration (and so of its
run id) while unset, so a suite that does not use them keeps the run ids, and the results, it had."""


ADDED_DEFAULTS = {"loss_weighting": "micro_batch"}
"""An added setting at this value is as if unset: the behaviour before it existed."""


def _without_unset(values: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in values.items()
            if not (key in names and value == ADDED_DEFAULTS.get(key))}

