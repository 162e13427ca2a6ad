"""Task registry: `get(name)` returns a ready task object; modules below register themselves.

    disha-bench list tasks

Beside the tasks themselves live what they need to load and score: `data.py` (the datasets layer),
`feature_cache.py`, `metrics_glue.py`, `humaneval.py` with `sandbox.py` (model-written code run
safely) and `eval_code.py`, and `lm_eval_backend.py`.
"""

from __future__ import annotations

from disha_bench.registry import Registry
from disha_bench.tasks.base import Task

REGISTRY: Registry[type[Task]] = Registry("task")


def register(cls: type[Task]) -> type[Task]:
    REGISTRY.register(cls.name, cls)
    return cls


def get(name: str, *, file: str | None = None, key: str | None = None) -> Task:
    return REGISTRY.get(name, file=file, key=key)()


def describe() -> str:
    """Every task, its head, primary metric and description, and its own options (from `Options`);
    the keys every task takes (TaskConfig) are listed once at the end."""
    from disha_bench.config.schema import field_lines
    from disha_bench.config.suite import TaskConfig

    lines = []
    for name, cls in REGISTRY.items():
        lines.append(f"{name}: {cls.description} [{cls.head}; primary metric {cls.primary_metric}]")
        lines += field_lines(cls.Options)
    lines += ["", "every task also takes:"] + field_lines(TaskConfig)
    return "\n".join(lines)


# Importing the modules fills the registry.
from disha_bench.tasks import code, glue, gsm8k, jsonl, synthetic  # noqa: E402,F401
