"""Preflight: before the first run starts, check that everything the runs need is on this machine.

    disha-bench run suites/nlu-cpu.yaml        # runs `check` first; exit 2 with the fix if not

`validate` checks the suite file alone (it works anywhere, offline, also for GPU suites); `check`
checks this machine against it: each task's data (local files, or the hub - offline: its cache),
the model (a packaged one installed, a directory, or a hub id reachable or cached), all of these
reported together, and, for a
suite with a task that runs model-written code (HumanEval), that the code sandbox works here
(namespaces, rlimits, the unprivileged user), and for `evaluation.engine: vllm` the vllm package
and a CUDA GPU. The first problem is a `UserError` (exit 2) whose one
line names the file, the key and the fix, and no run has started: without this, a missing data
directory made every run of a suite fail one by one. `disha-bench plan` calls the same function.
With `--hostfile` only the launching machine is checked: the other nodes need the same checkout,
data and caches (README, "Ranks, GPUs and several machines"). Hub data is probed by loading it
(`datasets` maps a cached copy; online, the first load downloads it, as the run would).
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

from disha_bench import models, tasks
from disha_bench.config.suite import Suite
from disha_bench.core import datasets as data
from disha_bench.core.errors import UserError
from disha_bench.evaluation.generation import MIN_TRANSFORMERS, transformers_supported

SANDBOX_PROBE = "import json, math\nassert json.loads('[1, 2]') == [1, 2] and math.isqrt(16) == 4\n"
"""A program the sandbox must run to its end: the standard library imports as the unprivileged user."""


def check(suite: Suite, *, file: str, data_dir: Optional[str], task_names: Optional[Iterable[str]] = None) -> None:
    """Raise UserError for the first thing the suite's runs need and this machine lacks.

    data_dir: the resolved data directory (`data.resolve_data_dir`); task_names: only these tasks
    (the ones selected runs use); default all of the suite's.
    """
    wanted = set(task_names) if task_names is not None else None
    selected = [(i, cfg) for i, cfg in enumerate(suite.tasks) if wanted is None or cfg.name in wanted]
    go_offline_if_unreachable()
    check_libraries()
    from disha_bench.training.distributed import process_group_timeout_min

    process_group_timeout_min()  # a bad value fails here, not in every rank of every run
    # The model and every task's data are checked before saying anything: all that is missing, at once.
    problems: list[UserError] = []
    for check_one in [lambda: check_model(suite.model.name, suite.model.revision, file=file)] + [
            lambda i=i, cfg=cfg: check_task_data(cfg.model_dump(), data_dir, file=file, key=f"tasks[{i}]")
            for i, cfg in selected]:
        try:
            check_one()
        except UserError as err:
            problems.append(err)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise UserError(f"{len(problems)} things are missing: " + "; ".join(
            str(err).removeprefix(f"{file}: ") for err in problems), file=file)
    check_loggers(suite.output.loggers, file=file)
    check_engine(suite.evaluation.engine, file=file, python=suite.evaluation.vllm_python)
    check_code_tasks(suite, file=file, task_names=wanted)


HUB_PROBE_TIMEOUT_S = 3.0


def go_offline_if_unreachable() -> None:
    """Without HF_HUB_OFFLINE, an unreachable hub cost 28-36 s of retries before each refusal (and
    each run would retry again): one short connection attempt decides instead. Unreachable: this
    process and its runs work from the caches (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE), and say so."""
    import socket
    import sys
    from urllib.parse import urlparse

    if _hub_offline():
        return
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
        return
    except OSError as err:
        reason = err.strerror or type(err).__name__
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"
    # Libraries imported already read their setting at import time.
    for module, attribute in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                              ("datasets.config", "HF_DATASETS_OFFLINE")):
        if module in sys.modules and hasattr(sys.modules[module], attribute):
            setattr(sys.modules[module], attribute, True)
    print(f"the hub ({endpoint.hostname}) is unreachable ({reason}): working offline from the caches "
          "(set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 to skip this probe)", flush=True)


def check_libraries() -> None:
    """The installed libraries are ones the harness is correct with (see MIN_TRANSFORMERS)."""
    import transformers

    if not transformers_supported():
        raise UserError(f"transformers {transformers.__version__} is older than {MIN_TRANSFORMERS}, the oldest this "
                        f"harness decodes correctly with (the model argument `cache`); pip install 'transformers>={MIN_TRANSFORMERS},<6'")


def check_code_tasks(suite: Suite, *, file: str, task_names: Optional[Iterable[str]] = None) -> None:
    """The sandbox works here when a (selected) task scores model-written code; `plan` checks this alone."""
    for i, task_cfg in enumerate(suite.tasks):
        if task_names is not None and task_cfg.name not in task_names:
            continue
        if tasks.REGISTRY.get(task_cfg.name).runs_code:
            unsafe = bool((task_cfg.model_extra or {}).get("unsafe_no_isolation", False))
            check_sandbox(unsafe_no_isolation=unsafe, file=file, key=f"tasks[{i}]")
            return  # one machine, one sandbox: a single probe answers for every code task


def check_task_data(task_config: dict, data_dir: Optional[str], *, file: str, key: str) -> None:
    """Run the task's own `load` in probe mode: every split it reads must be available."""
    task = tasks.get(task_config["name"])
    config = {**task.options, **task_config}
    try:
        with data.probing():
            task.load(config, data_dir)
    except UserError as err:
        raise UserError(_message(err), file=file, key=_key(key, err)) from None


def check_model(name: str, revision: Optional[str] = None, *, file: str, key: str = "model.name") -> None:
    """A packaged model must be installed, a directory must exist, a hub id must be reachable (or,
    with the hub offline, in its cache)."""
    models.check_name(name, file=file, key=key)
    if name in models.PACKAGED or os.path.isdir(os.path.expanduser(name)):
        return
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    if _hub_offline():
        if not isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
            raise UserError(
                f"model '{name}' is not in the hub cache and the hub is offline; download it "
                f"once where the hub is reachable (hf download {name}) or give a local directory",
                file=file, key=key,
            )
        return
    try:
        hf_hub_download(name, "config.json", revision=revision)
    except Exception as err:  # gated, missing, no network: huggingface_hub raises many types
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"model '{name}' cannot be fetched from the hub ({type(err).__name__}: {reason}); "
                        "check the id, set HF_TOKEN for a gated model, or give a local directory",
                        file=file, key=key) from None


LOGGER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_loggers(names: Iterable[str], *, file: str) -> None:
    """Each metric logger the suite asks for needs its package (an extra of disha-bench)."""
    import importlib.util

    for i, name in enumerate(names):
        if importlib.util.find_spec(LOGGER_PACKAGES[name]) is None:
            raise UserError(f"logger '{name}' needs the {LOGGER_PACKAGES[name]} package: "
                            f"pip install 'disha-bench[{name}]'", file=file, key=f"output.loggers[{i}]")


def check_engine(engine: str, *, file: str, python: Optional[str] = None) -> None:
    """`engine: vllm` needs the vllm package (an extra; here, or in the `vllm_python` interpreter's
    environment) and a CUDA GPU; `hf` runs anywhere."""
    if engine != "vllm":
        return
    import importlib.util
    import subprocess

    import torch

    if python is not None:
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            raise UserError(f"{python!r} is not an executable file; expected the Python interpreter of vLLM's "
                            "environment", file=file, key="evaluation.vllm_python")
        probe = subprocess.run([python, "-c", "import vllm"], capture_output=True, text=True, timeout=300)
        if probe.returncode != 0:
            raise UserError(f"{python} cannot import vllm; install it there (pip install vllm)", file=file,
                            key="evaluation.vllm_python")
    elif importlib.util.find_spec("vllm") is None:
        raise UserError("engine 'vllm' needs the vllm package: pip install 'disha-bench[vllm]' (on a GPU "
                        "machine), or use engine: hf", file=file, key="evaluation.engine")
    if not torch.cuda.is_available():
        raise UserError("engine 'vllm' generates on CUDA GPUs and this machine has none; use engine: hf",
                        file=file, key="evaluation.engine")


def check_sandbox(*, unsafe_no_isolation: bool = False, file: Optional[str] = None, key: Optional[str] = None) -> None:
    """Run a tiny program in `disha_bench.evaluation.sandbox` the way HumanEval scoring will; it must pass."""
    from disha_bench.evaluation.sandbox import SandboxUnavailable, run_untrusted

    try:
        result = run_untrusted(SANDBOX_PROBE, timeout_s=60.0, unsafe_no_isolation=unsafe_no_isolation)
    except SandboxUnavailable as err:
        raise UserError(f"the code sandbox does not work on this machine: {err}; or set "
                        "`unsafe_no_isolation: true` on the task (trusted code only)", file=file, key=key) from None
    if result.status != "passed":
        detail = result.reason + (f" ({result.stdout_tail.strip().splitlines()[-1]})" if result.stdout_tail.strip() else "")
        raise UserError(f"the code sandbox cannot run a trivial program on this machine: {result.status}: {detail}; "
                        "check that the Python installation is readable by other users (the sandbox runs code "
                        "as an unprivileged user) and that rlimits can be set", file=file, key=key)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _message(err: UserError) -> str:
    """The error's text without its own `file: key:` prefix (the suite's file and key replace it,
    except a data file's own path, which stays in the message)."""
    text = str(err)
    if err.key and not err.file:
        return text.removeprefix(f"{err.key}: ")
    return text


def _key(task_key: str, err: UserError) -> str:
    return f"{task_key}.{err.key}" if err.key and not err.file else task_key
