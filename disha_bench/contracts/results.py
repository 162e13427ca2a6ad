"""The result file: one JSON document per run, its schema, and safe reading and writing.

Every run of a suite writes `results/<suite>/<run-id>.json` exactly once, atomically (a temporary
file in the same folder, fsync, then rename), so a reader never sees half a file and a finished
result survives a crash or SIGKILL of whatever runs next.

The schema below is the contract with `report`, `check` and any external tool: every key is
documented right under its field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from disha_bench.core.io import _json_default, write_json_atomic

SCHEMA_VERSION = 4
# v3 (all additions optional, so v2 files still load with them absent): per-example held-out losses and
# example ids, the held-out schedule, per-example evaluation scores, and the cost phase's repeats.
# v4: `evaluation["metric_declarations"]`, the declaration of every metric the evaluation reports
# (older results get their task's declarations from the task registry when analysed).

# The run-status model, shared by the recipe, the runner, report, check and status:
# - complete:            trained for the whole budget and evaluated.
# - stopped_by_budget:   training stopped cleanly at `training.max_time`; evaluated; final.
# - diverged:            the loss became NaN/inf or exploded; training stopped; not evaluated; final.
# - evaluation_failed:   training finished (curves, memory, throughput, counts and the saved adapter
#                        are kept) but evaluation raised; a re-run evaluates the saved adapter again
#                        without retraining.
# - failed:              the run broke before or during training; a re-run starts it again.
COMPLETE, BUDGET_STOPPED, DIVERGED = "complete", "stopped_by_budget", "diverged"
EVAL_FAILED, FAILED = "evaluation_failed", "failed"
STATUSES = (COMPLETE, BUDGET_STOPPED, DIVERGED, EVAL_FAILED, FAILED)
FINAL_STATUSES = (COMPLETE, BUDGET_STOPPED, DIVERGED)
"""Skipped on a re-run of the suite."""
TRAINED_STATUSES = (COMPLETE, BUDGET_STOPPED, EVAL_FAILED)
"""Training record usable for curves, convergence, memory and throughput."""
EVALUATED_STATUSES = (COMPLETE, BUDGET_STOPPED)
"""Evaluation metrics present and usable."""


@dataclass
class RunInfo:
    run_id: str
    """Stable id: `<task>-<method label>-s<seed>-<hash of the resolved run configuration>`."""
    suite: str
    """Suite name (the suite file's `name`)."""
    task: str
    """Task name as registered (e.g. `sst2`, `gsm8k`)."""
    method: str
    """Method label in the suite (defaults to the method's registry name)."""
    seed: int
    """Seed of this run: model init of new layers, data order, dropout."""
    status: str
    """One of STATUSES: `complete`, `stopped_by_budget`, `diverged`, `evaluation_failed`, `failed`."""
    error: str | None = None
    """One-line reason when the run failed, diverged or its evaluation failed, else null."""
    config: dict[str, Any] = field(default_factory=dict)
    """The fully resolved run configuration (model, task, method with its resolved params, training,
    evaluation, seed) from which `run_id` is derived."""
    started_at: str = ""
    """ISO-8601 UTC time when training started."""
    finished_at: str = ""
    """ISO-8601 UTC time when the result was written."""
    wall_time_s: float = 0.0
    """Seconds from process start to result, model loading and evaluation included."""
    world_size: int = 1
    """Number of ranks the run trained on."""
    analysis: dict[str, Any] = field(default_factory=dict)
    """Suite-level analysis settings in force when the run was made (`reference` method label,
    convergence targets); not part of the run id, so changing them re-runs nothing."""
    resumed_from_step: int | None = None
    """Optimizer step of the mid-run checkpoint this run resumed from; null when it ran uninterrupted."""
    node: str = ""
    """Host name of rank 0: throughput and memory compare only within one machine type."""


@dataclass
class HeldOutPoint:
    step: int
    """Optimizer steps done when the held-out loss was measured; 0 = the unadapted model."""
    loss: float
    """Mean held-out loss over the held-out set (token-weighted over supervised tokens)."""
    train_time_s: float
    """Seconds of training up to this step, held-out evaluation excluded (what a user pays)."""
    tokens: int
    """Training tokens processed up to this step (all ranks)."""
    per_example: list[float] | None = None
    """v3: each held-out example's loss at this step, in the order of `HeldOut.example_ids`
    (token-weighted within an example for generation tasks); null in v2 results."""


@dataclass
class HeldOut:
    """The held-out convergence curve: the same examples for every method and seed, never trained on."""

    n_examples: int
    """Examples in the held-out set."""
    source: str
    """Where they come from, e.g. `validation split`, `training pool outside the training subset`,
    `canonical solutions`."""
    every: int
    """Measured every this many optimizer steps (plus step 0 and the last step); from v3 the spacing
    after the dense start named by `schedule`."""
    points: list[HeldOutPoint] = field(default_factory=list)
    """The curve, ordered by step, starting at step 0 (the steps are whatever the schedule gave)."""
    eval_time_s: float = 0.0
    """Total seconds spent on held-out evaluation (excluded from training time and throughput)."""
    example_ids: list[str] | None = None
    """v3: the held-out examples' stable ids, in the order of every point's `per_example`."""
    schedule: str | None = None
    """v3: the measuring schedule in words, e.g. `every step to 10, then every 3, and the last step`;
    null in v2 results (then `every` alone describes it)."""


@dataclass
class StepLog:
    step: int
    """Optimizer step, starting at 1."""
    loss: float
    """Training loss of the step, averaged over gradient-accumulation micro-batches and ranks."""
    lr: float
    """Learning rate used for this step (first param group)."""
    grad_norm: float | None
    """Global gradient norm before clipping, as DeepSpeed computed it; null when not available."""
    tokens: int
    """Non-padding input tokens processed in this step, summed over ranks and micro-batches."""
    step_time_s: float
    """Wall time of the step on rank 0 (forward, backward, optimizer), synchronised on CUDA."""


@dataclass
class Training:
    trainable_params: int
    """Parameters with requires_grad after the method was applied."""
    total_params: int
    """All parameters of the adapted model."""
    method_params: dict[str, Any] = field(default_factory=dict)
    """The method's resolved parameters (ranks chosen by parameter matching included)."""
    matching: dict[str, Any] | None = None
    """When the rank was chosen by `match_params`: {param, value, count, target, target_count}."""
    steps: list[StepLog] = field(default_factory=list)
    """One entry per optimizer step, in order."""
    stopped_at_step: int | None = None
    """Step at which training stopped early (divergence), else null."""
    deepspeed_config: dict[str, Any] = field(default_factory=dict)
    """The DeepSpeed config the engine was built with."""
    dropped_examples: int = 0
    """Training examples left out because their answer alone does not fit in `max_length` (prompts
    are truncated from the left; an answer is never cut)."""


@dataclass
class Memory:
    device: str
    """`cuda` or `cpu`: which kind of figure follows."""
    peak_mb: float | None = None
    """Absolute peak of the run on rank 0, weights, optimizer state and activations included
    (CPU: process VmHWM; CUDA: max allocated since the run started), from the start of the run to the
    end of training (held-out curve included; what evaluation adds is `eval_peak_mb`)."""
    per_rank_peak_mb: list[float] = field(default_factory=list)
    """peak_mb of every rank, by rank; reports show the maximum."""
    peak_reserved_mb: float | None = None
    """CUDA only: absolute peak reserved by the caching allocator."""
    before_model_mb: float | None = None
    """Usage before the model was loaded (process start-up, imports)."""
    loaded_mb: float | None = None
    """Usage right after the model and adapter were loaded, before the engine was built."""
    increment_mb: float | None = None
    """peak_mb - loaded_mb: what training adds on top of the loaded model (ZeRO buffers, optimizer
    state, activations)."""
    train_peak_mb: float | None = None
    """Peak memory during training on rank 0, start-up baseline subtracted (CUDA: max allocated;
    CPU: VmHWM high-water mark of the process)."""
    train_peak_reserved_mb: float | None = None
    """CUDA only: peak reserved by the caching allocator during training."""
    eval_peak_mb: float | None = None
    """What evaluation adds: its peak minus the usage when evaluation started (an increment, not an
    absolute peak; CUDA: max allocated, CPU: VmHWM, reset at the start where the kernel allows)."""
    baseline_mb: float | None = None
    """The start-up baseline that was subtracted (after model load, before training)."""
    per_rank_train_peak_mb: list[float] = field(default_factory=list)
    """train_peak_mb of every rank, by rank."""


@dataclass
class Throughput:
    tokens_per_s: float | None = None
    """Median over steady-state steps of tokens / step time, all ranks together."""
    tokens_per_s_per_rank: float | None = None
    """tokens_per_s divided by the number of ranks."""
    step_time_s: float | None = None
    """Median step time over steady-state steps."""
    warmup_steps_excluded: int = 0
    """Leading steps left out of the medians (allocator and JIT warm-up)."""
    train_time_s: float = 0.0
    """Wall time of the whole training loop."""
    eval_time_s: float = 0.0
    """Wall time of evaluation."""


@dataclass
class CostRepeat:
    """One short repeat of the cost phase: a fresh process that trains a few steps and measures."""

    position: int
    """Order of this repeat in the interleaved schedule of its task and seed (0 = first)."""
    steps: int
    """Optimizer steps the repeat trained."""
    peak_mb: float | None = None
    """Absolute peak memory of the repeat's process on rank 0 (like `Memory.peak_mb`)."""
    increment_mb: float | None = None
    """peak_mb minus the usage with the model and adapter loaded (like `Memory.increment_mb`)."""
    tokens_per_s: float | None = None
    """Median tokens/s over the repeat's steps after the first (all ranks)."""
    step_time_s: float | None = None
    """Median step time over the repeat's steps after the first."""
    min_step_time_s: float | None = None
    """Fastest of those steps: the one the machine disturbed least (noise only adds time)."""
    cpu_time_s: float | None = None
    """CPU runs: median CPU time of the process per step after the first (all its threads). Unlike
    wall time it does not grow while other processes hold the cores; what `check` compares on CPU."""


@dataclass
class Cost:
    """v3: cost measured like a benchmark, several short interleaved repeats per method
    (`disha_bench/running/cost.py`); stored in `<results>/cost/<run-id>.json` and attached on load."""

    protocol: str
    """One line: repeats, steps per repeat, warm-up steps left out, order."""
    repeats: list[CostRepeat] = field(default_factory=list)
    """The repeats of this run's task, method and seed, in the order they ran."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Cost":
        return cls(protocol=data["protocol"], repeats=[CostRepeat(**r) for r in data.get("repeats", [])])


@dataclass
class Meta:
    versions: dict[str, str] = field(default_factory=dict)
    """Versions of python, torch, transformers, peft, deepspeed, disha-bench."""
    git_commit: str | None = None
    """Commit of the disha-bench checkout, when it is one."""
    git_dirty: bool | None = None
    """Whether that checkout had uncommitted changes."""
    hardware: dict[str, Any] = field(default_factory=dict)
    """CPU model and core count; GPU names and memory when CUDA is used."""
    command: str = ""
    """The command line that started the suite."""


@dataclass
class RunResult:
    run: RunInfo
    """Identity, configuration and outcome of the run."""
    training: Training | None = None
    """Training log and counts; null when the run failed before training."""
    evaluation: dict[str, Any] = field(default_factory=dict)
    """Task metrics by name (e.g. `accuracy`, `mcc`, `exact_match_strict`) plus `primary_metric`
    (the name of the headline metric), `n_examples` and, from v4, `metric_declarations`: {metric name:
    its declaration (`contracts.metrics.Metric.to_dict`: direction, range, whether a count)}."""
    convergence: dict[str, Any] = field(default_factory=dict)
    """Convergence summary computed from training.steps (see disha_bench.analysis.convergence)."""
    memory: Memory | None = None
    """Peak memory figures."""
    throughput: Throughput | None = None
    """Tokens per second and step times."""
    heldout: HeldOut | None = None
    """The held-out loss curve from step 0; null when the run failed before training."""
    meta: Meta = field(default_factory=Meta)
    """Provenance: library versions, git state, hardware, command."""
    cost: Cost | None = None
    """v3: the cost phase's repeated measurements, attached by `load_results` from
    `<results>/cost/<run-id>.json`; null when the suite measured none (and in v2 results): analysis
    then falls back to the run's single reading in `memory` and `throughput`."""
    schema_version: int = SCHEMA_VERSION
    """Version of this schema; bumped on incompatible changes."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunResult":
        training = data.get("training")
        if training is not None:
            training = Training(**{**training, "steps": [StepLog(**s) for s in training.get("steps", [])]})
        return cls(
            run=RunInfo(**data["run"]),
            training=training,
            evaluation=data.get("evaluation", {}),
            convergence=data.get("convergence", {}),
            memory=Memory(**data["memory"]) if data.get("memory") else None,
            throughput=Throughput(**data["throughput"]) if data.get("throughput") else None,
            heldout=_heldout(data.get("heldout")),
            meta=Meta(**data.get("meta", {})),
            cost=Cost.from_dict(data["cost"]) if data.get("cost") else None,
            schema_version=data.get("schema_version", SCHEMA_VERSION),
        )


def _heldout(data: dict[str, Any] | None) -> HeldOut | None:
    if not data:
        return None
    return HeldOut(**{**data, "points": [HeldOutPoint(**p) for p in data.get("points", [])]})


CHECKSUM_KEY = "checksum"
"""Top-level key of a written result: `sha256:<hex>` of the rest of the document (see `_checksum`).
Results written before it existed have none and are checked against the schema only."""


def write_result(path: Path, result: RunResult) -> None:
    # Through JSON and back, so that the checksum covers exactly what a reader will parse.
    data = json.loads(json.dumps(result.to_dict(), default=_json_default))
    write_json_atomic(path, {**data, CHECKSUM_KEY: _checksum(data)})


def _checksum(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != CHECKSUM_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class DamagedResult(Exception):
    """A result file that exists but cannot be trusted: truncated, edited, or not a result at all."""


def verify_result(path: Path) -> RunResult | None:
    """The result at `path` after checking it (JSON, schema, checksum); None when there is no file.
    Raises DamagedResult, with the reason in words, when the file is there but not a whole result."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedResult(f"cannot be read ({err.__class__.__name__}: {err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DamagedResult(f"not valid JSON (line {err.lineno}: {err.msg}; truncated?)") from None
    if not isinstance(data, dict) or not isinstance(data.get("run"), dict):
        raise DamagedResult("not a disha-bench result (no \"run\" object)")
    stored = data.get(CHECKSUM_KEY)
    if stored is not None and stored != _checksum(data):
        raise DamagedResult("checksum mismatch: the file was changed after it was written")
    try:
        result = RunResult.from_dict(data)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise DamagedResult(f"does not match the result schema ({err.__class__.__name__}: {err})") from None
    run = result.run
    if run.status not in STATUSES or not isinstance(run.run_id, str) or not isinstance(run.seed, int):
        raise DamagedResult(f"does not match the result schema (run status {run.status!r}, seed {run.seed!r})")
    return result


def read_result(path: Path) -> RunResult | None:
    """The result at `path`, or None when it is missing or damaged (`verify_result` says why)."""
    try:
        return verify_result(path)
    except DamagedResult:
        return None


def scan_results(results_dir: Path) -> tuple[list[RunResult], dict[Path, str]]:
    """(every whole result file directly in `results_dir`, sorted by run id; {damaged file: why})."""
    results, damaged = [], {}
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            result = verify_result(path)
        except DamagedResult as err:
            damaged[path] = str(err)
            continue
        if result is not None:
            result.cost = result.cost or read_cost(cost_path(Path(results_dir), result.run.run_id))
            results.append(result)
    return sorted(results, key=lambda r: r.run.run_id), damaged


def load_results(results_dir: Path) -> list[RunResult]:
    """Every whole result file directly in `results_dir`, sorted by run id (damaged ones left out),
    each with its cost repeats attached when `results_dir/cost/<run-id>.json` holds them."""
    return scan_results(results_dir)[0]


COST_DIR = "cost"
"""Sub-folder of a results folder holding the cost phase's files, one per run id."""

SUITE_FILE = "suite.yaml"
"""The suite file of the latest `disha-bench run` into a results folder, kept beside its results: the
report prints its description, and a reader of committed results finds the suite that made them."""


def cost_path(results_dir: Path, run_id: str) -> Path:
    """Where the cost phase stores the repeats of one run (never inside the run's own result file,
    which is written once)."""
    return Path(results_dir) / COST_DIR / f"{run_id}.json"


def read_cost(path: Path) -> Cost | None:
    """The cost file at `path`, or None when it is missing or unreadable."""
    try:
        return Cost.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
