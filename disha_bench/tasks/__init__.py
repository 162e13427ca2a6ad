"""Task registry: `get(name)` returns a ready task object; modules below register themselves.

    disha-bench list tasks
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
    lines = []
    for name, cls in REGISTRY.items():
        opts = ", ".join(f"{k}={v!r}" for k, v in cls.options.items())
        lines.append(f"{name:22s} {cls.head:24s} {cls.primary_metric:20s} {cls.description}")
        if opts:
            lines.append(f"{'':22s} options: {opts}")
    return "\n".join(lines)


# Importing the modules fills the registry.
from disha_bench.tasks import code, glue, gsm8k, synthetic  # noqa: E402,F401
