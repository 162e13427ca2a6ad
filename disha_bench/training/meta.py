"""Provenance of a result: library versions, the git state of this checkout, hardware.

    python -c "from disha_bench.training.meta import collect_meta; print(collect_meta('manual'))"
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from disha_bench import __version__
from disha_bench.contracts.results import Meta

LIBRARIES = ("torch", "transformers", "peft", "deepspeed")


def collect_meta(command: str) -> Meta:
    """Versions, git state of this checkout and hardware, for the result's `meta` section."""
    versions = {"python": platform.python_version(), "disha-bench": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # a missing optional library is recorded as absent
            versions[name] = "absent"
    commit, dirty = git_state(Path(__file__).resolve().parents[2])
    return Meta(versions=versions, git_commit=commit, git_dirty=dirty, hardware=hardware(), command=command)


def git_state(repo: Path) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes) of `repo`, or (None, None) when it is not a checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        if not commit:
            return None, None
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        return commit, bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
