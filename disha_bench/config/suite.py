"""The suite file: a typed schema, loading with one-line errors, `--set` overrides, expansion into runs.

    disha-bench validate suites/smoke.yaml

A suite expands into runs = task x method x seed. Each run's id is derived from its resolved
configuration, so editing one method re-runs only that method's runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from disha_bench.config.sweep import SweepConfig, check_sweeps
from disha_bench.config.targets import DEFAULT_EMA
from disha_bench.core.errors import UserError, did_you_mean
from disha_bench.core.schema import StrictModel, describe_error, key_path, load_yaml, validate_model
from disha_bench.evaluation.lm_eval_backend import LmEvalTaskConfig

_Strict = StrictModel


class ModelConfig(_Strict):
    name: str
    """A packaged short name (`disha-bench list models`), a hub id (`meta-llama/Llama-2-7b-hf`) or a local directory."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype the base weights are loaded in; training precision is `training.precision`."""
    revision: Optional[str] = None
    """Hub revision (branch, tag or commit) for hub ids."""


class TaskConfig(StrictModel):
    # Extra keys are the task's own options, checked against the task's `Options` in `validate_suite`.
    model_config = ConfigDict(extra="allow")

    name: str
    """Registered task name (`disha-bench list tasks`)."""
    train_limit: Optional[int] = Field(None, gt=0)
    """Use at most this many training examples (a seeded random subset); null for all."""
    eval_limit: Optional[int] = Field(None, gt=0)
    """Evaluate on at most this many examples (a seeded random subset); null for all."""
    sample_seed: Optional[StrictInt] = None
    """Seed of the training subset, the held-out set and the evaluation sample. null (default): the
    run seed, so every seed draws its own examples (all methods of one seed see the same ones); a
    number fixes them for every seed."""
    source: Literal["auto", "hub", "local"] = "auto"
    """Where the data comes from: `local` files (data_files or the data directory), the `hub`, or
    `auto` (local when found, else the hub)."""
    data_files: Optional[dict[str, str]] = None
    """Explicit local files by split (`train`, `eval`), in the dataset's original format."""
    training: Optional[dict[str, Any]] = Field(None, exclude=True)
    """This task's own training settings, over the suite's `training` (any of its keys, e.g.
    `{max_steps: 600}`): one suite can give each task the budget its data needs while the methods
    stay compared on one budget per task. A key given here replaces the suite's value whole
    (`deepspeed` included); a method's own `lr` still wins over a task's. null: the suite's
    `training`. Recorded in each run's resolved `training`, not under `task` (so run ids of suites
    without it are unchanged)."""


class MethodConfig(StrictModel):
    # Extra keys are the method's own parameters (r, alpha, target_modules, match_params, ...),
    # checked by disha_bench.methods.validate_params.
    model_config = ConfigDict(extra="allow")

    name: str
    """Registered method name (`disha-bench list methods`)."""
    label: Optional[str] = None
    """Name of this entry in results and leaderboards; defaults to `name`. Needed when one method
    appears twice with different parameters."""
    lr: Optional[float] = Field(None, gt=0)
    """Learning rate of this method's runs instead of `training.lr` (full fine-tuning usually needs a
    lower one than the adapters); recorded in each run's resolved `training`."""
    sweep: Optional[SweepConfig] = None
    """Run this method at each of these learning rates (`{lr: [...]}`), instead of the suite's `sweep`."""


class TrainingConfig(_Strict):
    max_steps: int = Field(100, gt=0)
    """Optimizer steps: the training budget."""
    lr: float = Field(2e-4, gt=0)
    """Peak learning rate."""
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    """Decay after warm-up, to zero at max_steps (constant: no decay)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps from zero to lr."""
    batch_size: int = Field(4, gt=0)
    """Micro-batch per rank; the global batch is batch_size x grad_accum x ranks (or `global_batch`)."""
    grad_accum: int = Field(1, gt=0)
    """Gradient-accumulation micro-batches per optimizer step (derived from the ranks when `global_batch` is set)."""
    global_batch: Optional[int] = Field(None, gt=0)
    """Sequences per optimizer step, the same on any number of ranks: grad_accum becomes
    global_batch / (batch_size x ranks), and a rank count that does not divide it is refused before
    any model loads; null: batch_size x grad_accum x ranks, which changes with the ranks."""
    max_epochs: Optional[float] = Field(None, gt=0)
    """The most passes over the training set: a run whose max_steps x global batch needs more is
    refused when its data is loaded, before the model (and by `plan` when train_limit sets the size);
    null: as many as max_steps needs (each run's log states how many)."""
    max_length: int = Field(512, gt=0)
    """Training sequences are truncated to this many tokens."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Training precision (DeepSpeed mixed precision for bf16/fp16). fp16 needs CUDA."""
    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO stage."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    grad_clip: Optional[float] = Field(1.0, gt=0)
    """Clip the global gradient norm to this value; null for no clipping."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory (changes the memory a comparison measures)."""
    loss_weighting: Literal["micro_batch", "token"] = "micro_batch"
    """How an optimizer step averages the loss: `micro_batch` (the mean of each micro-batch's token
    mean) or `token` (one mean over every supervised token of the step on all ranks, as HF Trainer
    and the DiSHA authors; long answers weigh more)."""
    divergence_factor: float = Field(4.0, gt=1)
    """A run stops as diverged when its loss is NaN/inf or above this multiple of its first loss."""
    max_time: Optional[float] = Field(None, gt=0)
    """Wall-clock budget of one run's training loop in seconds; the run stops cleanly when it is spent
    (status `stopped_by_budget`; evaluation and the result still happen). null: no time budget."""
    deepspeed: dict[str, Any] = Field(default_factory=dict)
    """Free-form DeepSpeed config merged (recursively) over the generated one."""


def lm_eval_for(configs: list[LmEvalTaskConfig], task: str, suite_tasks: Iterable[str]) -> list[LmEvalTaskConfig]:
    """The lm-eval tasks that belong to runs of suite task `task` (see `for_task`)."""
    names = set(suite_tasks)
    return [c for c in configs if (c.for_task or (c.task if c.task in names else task)) == task]


class EvaluationConfig(_Strict):
    enabled: bool = True
    """Evaluate the task metric after training."""
    batch_size: int = Field(16, gt=0)
    """Examples per forward / generate call."""
    max_new_tokens: int = Field(256, gt=0)
    """Generation budget per example."""
    num_fewshot: int = Field(0, ge=0)
    """Worked examples before each question (generation tasks)."""
    heldout_examples: int = Field(64, gt=0)
    """Examples in the held-out loss set: the same for every method and seed, never trained on."""
    heldout_every: Optional[int] = Field(None, gt=0)
    """After the dense start (`heldout_dense_steps`), measure the held-out loss every this many
    optimizer steps (plus step 0 and the last step); null: max_steps // 10, so the curve has at least
    10 points after step 0."""
    heldout_dense_steps: Optional[int] = Field(None, ge=0)
    """Measure the held-out loss after every one of the first this many optimizer steps, where early
    convergence targets are crossed (then every `heldout_every`); null: one `heldout_every` interval;
    0: no dense start (the evenly spaced curve of schema v2)."""
    lm_eval: list[LmEvalTaskConfig] = Field(default_factory=list)
    """lm-evaluation-harness tasks run on the trained in-memory model after the task's own metric."""
    engine: Literal["hf", "vllm"] = "hf"
    """Who generates for generation tasks: `hf` (transformers, greedy, rows leave the batch as they
    finish) or `vllm` (on CUDA, the model with its adapters merged; `pip install 'disha-bench[vllm]'`;
    not under ZeRO-3). Classification and lm-eval tasks always use the in-memory model."""
    vllm_gpu_memory: float = Field(0.4, gt=0, le=1)
    """With `engine: vllm`, the share of each GPU vLLM may take beside the trained model."""
    vllm_python: Optional[str] = None
    """With `engine: vllm`, the Python interpreter of vLLM's own environment (vLLM pins its own torch
    build), e.g. `/opt/vllm/bin/python`; null: the training interpreter, which must then have vllm."""


class ConvergenceConfig(_Strict):
    targets: list[Union[float, str]] = Field(default_factory=list)
    """Target losses: absolute values (0.5) or relative ones ("final:lora" = the final loss of lora's
    runs on the same task). Steps and tokens to reach each one are recorded."""
    ema: float = Field(DEFAULT_EMA, ge=0, lt=1)
    """Smoothing factor of the exponential moving average applied to the loss curve."""


class MarginsConfig(_Strict):
    """Smallest effect of interest of each kind of quantity (disha_bench.analysis.verdicts): a
    difference smaller than its margin is never "better" or "worse", and "matches" needs the whole
    adjusted interval inside ±margin."""

    heldout_loss: float = Field(0.01, gt=0)
    """Held-out (and training) loss, absolute."""
    proportion: float = Field(0.01, gt=0, lt=1)
    """Accuracy, exact match, pass@k: absolute (0.01 = 1 percentage point); never below one example."""
    metric: float = Field(0.01, gt=0)
    """Other task metrics (MCC, correlations, losses), absolute."""
    memory: float = Field(0.03, gt=0, lt=1)
    """Peak memory, relative (0.03 = 3%); never below its measured repeatability."""
    speed: float = Field(0.03, gt=0, lt=1)
    """Tokens/s, relative; never below its measured repeatability."""
    time: float = Field(0.03, gt=0, lt=1)
    """Training time and time to target, relative; never below the measured repeatability."""
    steps: float = Field(0.03, gt=0, lt=1)
    """Steps and tokens to a held-out target, relative."""


class AnalysisConfig(_Strict):
    margins: MarginsConfig = Field(default_factory=MarginsConfig)
    """Smallest effect of interest per quantity (see MarginsConfig)."""
    reference: Optional[str] = None
    """Label of the method every other method is compared with (paired by seed); null: the suite's
    first method."""
    unadapted: bool = True
    """Add one reference run per task, label `unadapted`: the base model evaluated as it is (held-out
    loss at step 0, task metric), nothing trained, run once (with the first seed)."""


class CostConfig(_Strict):
    repeats: int = Field(0, ge=0)
    """Cost phase: after training, each method's peak memory and throughput are measured again in
    this many short repeats per task and seed (3 is a good start), each in a fresh process, methods
    interleaved (A B C A B C) in an order drawn from the seed (`disha_bench/running/cost.py`). 0
    (default, so that ad-hoc and test suites stay quick; every committed benchmark suite sets it):
    off, and reports use each run's single reading."""
    steps: int = Field(6, ge=2)
    """Optimizer steps per repeat; the first is left out of the medians (allocator and JIT warm-up)."""
    threads: Optional[int] = Field(None, gt=0)
    """CPU threads of each repeat (OMP_NUM_THREADS); null: as the training runs. On a shared CPU,
    1 keeps OpenMP threads from waiting on each other, so a step's time says what the method costs
    rather than what the neighbours do."""


class OutputConfig(_Strict):
    save_adapter: bool = False
    """Save each run's adapter (PEFT format; the full model for `full`) beside its result file."""
    report: bool = True
    """Write the markdown leaderboard at the end of `disha-bench run`."""
    leaderboard: bool = True
    """A full run into the default results folder writes its report to `reports/<suite>.md` (a
    committed leaderboard); false: beside the results, in the untracked `results/` folder, so that
    the run leaves a checkout clean (the smoke suite: `disha-bench report` refreshes reports/smoke.md)."""
    checkpoint_every: Optional[int] = Field(None, gt=0)
    """Save a mid-run checkpoint every this many optimizer steps (and on SIGTERM / SIGUSR1), so a
    re-run resumes an unfinished run; null: only on those signals."""
    keep_checkpoints: bool = False
    """Keep a run's checkpoints after its result is written (removed by default)."""
    loggers: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    """Metric loggers fed with every training step besides the result file (none by default):
    `tensorboard` (event files under `<results>/.runs/<run id>/tensorboard`; extra `[tensorboard]`),
    `wandb` (project from WANDB_PROJECT; extra `[wandb]`)."""


class Suite(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Suite name: the results folder and report are named after it."""
    description: str = ""
    """Free text shown in the report header."""
    model: ModelConfig
    """The base model every run fine-tunes."""
    tasks: list[TaskConfig] = Field(min_length=1)
    """Tasks to train and evaluate on."""
    methods: list[MethodConfig] = Field(min_length=1)
    """Methods to compare, each a name plus its parameters."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Budget and optimisation settings shared by every run."""
    seeds: list[StrictInt] = Field(default_factory=lambda: [0], min_length=1)
    """One run per seed for each task x method."""
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    """Evaluation settings."""
    convergence: ConvergenceConfig = Field(default_factory=ConvergenceConfig)
    """Convergence targets and smoothing."""
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    """How runs become comparisons: the reference method."""
    output: OutputConfig = Field(default_factory=OutputConfig)
    """What to write besides the result files."""
    cost: CostConfig = Field(default_factory=CostConfig)
    """Repeated, interleaved cost measurements after training (not part of any run id)."""
    sweep: Optional[SweepConfig] = None
    """Run every method at each of these learning rates (`{lr: [...]}`, `training.lr` among them;
    disha_bench/config/sweep.py); the report adds each method at its best lr."""


# ---------------------------------------------------------------------------------------------
# Loading


def load_suite(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Suite, dict[str, Any]]:
    """Read, override and validate a suite file; returns the suite and its raw (overridden) mapping."""
    path = Path(path)
    file = str(path)
    if not path.exists():
        raise UserError("file not found", file=file)
    if path.is_dir():
        raise UserError("is a directory; expected a suite YAML file", file=file)
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise UserError(f"{where}not valid YAML ({getattr(err, 'problem', None) or err})", file=file) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read ({err})", file=file) from None
    if raw is None:
        raise UserError("the file is empty; expected a mapping with name, model, tasks and methods", file=file)
    if not isinstance(raw, dict):
        raise UserError(f"top level is a {type(raw).__name__}; expected a mapping", file=file)
    for item in overrides:
        apply_override(raw, item, file)
    return validate_suite(raw, file), raw


def apply_override(raw: dict, item: str, file: str) -> None:
    """Apply one `--set a.b.c=value` (value parsed as YAML; list items by index: methods.0.r=8)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. training.lr=1e-4", file=file)
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]), file, create=True)
    last = parts[-1]
    parsed = load_yaml(value) if value.strip() else None
    if isinstance(node, list):
        _child(node, last, key, file, create=False)
        node[int(last)] = parsed
    else:
        node[last] = parsed


def _child(node: Any, part: str, where: str, file: str, create: bool) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise UserError(f"--set: no list item {part!r} (the list has {len(node)})", file=file, key=where)
        return node[int(part)]
    if not isinstance(node, dict):
        raise UserError("--set: not a mapping, cannot set a key under it", file=file, key=where)
    if part not in node or node[part] is None:
        if not create:
            raise UserError("--set: no such key", file=file, key=where)
        node[part] = {}
    return node[part]


def validate_suite(raw: dict, file: str) -> Suite:
    """Schema validation, then names and parameters against the registries (no model is loaded)."""
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise UserError(describe_error(first), file=file, key=key_path(first["loc"])) from None
    _check_names(suite, file)
    if suite.training.precision == "fp16":
        import torch

        if not torch.cuda.is_available():
            raise UserError("fp16 needs CUDA and none is available; use bf16 or fp32", file=file, key="training.precision")
    _check_training(suite.training, file, "training")
    for index, task_cfg in enumerate(suite.tasks):
        if task_cfg.training is not None:
            _check_training(task_training(suite, task_cfg, file, f"tasks[{index}].training"), file, f"tasks[{index}].training")
    from disha_bench.config.shapes import check_layer_widths

    check_layer_widths(suite, file)
    check_sweeps(suite, file)
    task_names = [t.name for t in suite.tasks]
    for index, entry in enumerate(suite.evaluation.lm_eval):
        if entry.for_task is not None and entry.for_task not in task_names:
            raise UserError(f"no task '{entry.for_task}' in this suite; {did_you_mean(entry.for_task, task_names)}",
                            file=file, key=f"evaluation.lm_eval[{index}].for_task")
    if suite.evaluation.engine == "vllm" and suite.training.zero_stage == 3:
        raise UserError("vLLM generates from the merged weights, and ZeRO-3 leaves each rank only a shard of them; "
                        "use training.zero_stage 0-2, or engine: hf", file=file, key="evaluation.engine")
    return suite


def task_training(suite: Suite, task: TaskConfig, file: str | None = None, key: str | None = None) -> TrainingConfig:
    """The training settings of `task`'s runs: the suite's, with the task's own `training` keys over them."""
    if not task.training:
        return suite.training
    # exclude_unset keeps "which keys the suite set" (global_batch vs grad_accum is checked on it)
    merged = {**suite.training.model_dump(exclude_unset=True), **task.training}
    return validate_model(TrainingConfig, merged, file=file, key=key, what=f"task '{task.name}' training", noun="setting")


def _check_training(training: TrainingConfig, file: str, key: str) -> None:
    """What `validate` checks of one resolved `training` (the suite's, or a task's over it)."""
    from disha_bench.config.batching import check_global_batch

    if training.warmup_steps > training.max_steps:
        raise UserError(f"warm-up of {training.warmup_steps} steps is longer than training "
                        f"(max_steps {training.max_steps}): the learning rate would never reach lr",
                        file=file, key=f"{key}.warmup_steps")
    check_global_batch(training, file, key)


def _reject_unknown(given: Iterable[str], own: type[BaseModel], entry: type[BaseModel], owner: str, file: str,
                    key: str) -> None:
    """A key of a task or method entry must be the entry's (name, label, ...) or the task's option /
    the method's parameter; "did you mean" looks at both."""
    for name in given:
        if name not in own.model_fields:
            choices = list(own.model_fields) + list(entry.model_fields)
            raise UserError(f"unknown key '{name}' for {owner}; {did_you_mean(name, choices)}", file=file, key=f"{key}.{name}")


def _check_names(suite: Suite, file: str) -> None:
    from disha_bench import methods, models, tasks

    models.check_name(suite.model.name, file=file, key="model.name")
    for i, task_cfg in enumerate(suite.tasks):
        key = f"tasks[{i}]"
        task = tasks.REGISTRY.get(task_cfg.name, file=file, key=f"{key}.name")
        extras = task_cfg.model_extra or {}
        _reject_unknown(extras, task.Options, TaskConfig, f"task '{task.name}'", file, key)
        validate_model(task.Options, extras, file=file, key=key, what=f"task '{task.name}'", noun="option")
    labels = [m.label or m.name for m in suite.methods]
    for i, method_cfg in enumerate(suite.methods):
        key = f"methods[{i}]"
        method_cls = methods.get(method_cfg.name, file=file, key=f"{key}.name")
        params = dict(method_cfg.model_extra or {})
        # PEFT's spellings (lora_alpha, rank) are left to methods.parse, which names ours
        _reject_unknown([p for p in params if p not in methods.ALIASES], method_cls, MethodConfig,
                        f"method '{method_cls.name}'", file, key)
        methods.parse(method_cfg.name, params, file=file, key=key)
        target = params.get("match_params")
        if target is not None and target not in labels:
            raise UserError(f"no method labelled '{target}' in this suite; {did_you_mean(str(target), labels)}", file=file, key=f"{key}.match_params")
    if suite.analysis.reference is not None and suite.analysis.reference not in labels:
        raise UserError(f"no method labelled '{suite.analysis.reference}' in this suite; "
                        f"{did_you_mean(suite.analysis.reference, labels)}", file=file, key="analysis.reference")
    from disha_bench.config.targets import check_targets

    check_targets(suite.convergence.targets, labels, file=file)
    duplicates = {label for label in labels if labels.count(label) > 1}
    if duplicates:
        raise UserError(f"method label '{sorted(duplicates)[0]}' appears twice; give one entry a distinct `label`", file=file, key="methods")
    tasks_seen = [t.name for t in suite.tasks]
    if len(set(tasks_seen)) != len(tasks_seen):
        raise UserError("a task appears twice", file=file, key="tasks")
    if len(set(suite.seeds)) != len(suite.seeds):
        raise UserError("seeds repeat", file=file, key="seeds")


# ---------------------------------------------------------------------------------------------
# Expansion into runs


def sampled(task: TaskConfig, seed: int) -> TaskConfig:
    """The task of one run: its `sample_seed` resolved to the run seed unless the suite fixed it."""
    return task if task.sample_seed is not None else task.model_copy(update={"sample_seed": seed})



