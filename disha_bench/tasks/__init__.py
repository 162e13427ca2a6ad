"""Task registry: `get(name)` returns a ready task object; every module of this package that
defines a task registers it (`@register`, from `tasks.base`), and all are imported here.

    disha-bench list tasks

Beside the tasks live what only they need: `metrics_glue.py` (GLUE's official metrics). The
machinery they share with other layers lives below: the datasets layer (`core.datasets`), the
generation pool, vLLM, lm-eval and the code sandbox (`evaluation/`).
"""

from __future__ import annotations

import importlib
import pkgutil

from disha_bench.core.schema import field_lines
from disha_bench.tasks.base import REGISTRY, Task

_HELPERS = {"base", "metrics_glue"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _HELPERS:
        importlib.import_module(f"{__name__}.{_module.name}")  # each task module registers itself


def get(name: str, *, file: str | None = None, key: str | None = None) -> Task:
    return REGISTRY.get(name, file=file, key=key)()


def describe() -> str:
    """Every task, its head, primary metric and description, and its own options (from `Options`)."""
    lines = []
    for name, cls in REGISTRY.items():
        lines.append(f"{name}: {cls.description} [{cls.head}; primary metric {cls.primary_metric}]")
        lines += field_lines(cls.Options)
    return "\n".join(lines)
