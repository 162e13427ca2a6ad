"""Memory of a run: absolute figures (weights, optimizer state, activations included) and the
peak of one phase (training, evaluation) with the usage at its start subtracted.

    python -m pytest -q tests/test_memory.py

CUDA: `torch.cuda.memory_allocated` / `max_memory_allocated` / `max_memory_reserved`, the high-water
marks reset per phase with `reset_peak_memory_stats`.
CPU: the process's resident set `VmRSS` and its high-water mark `VmHWM` from /proc/self/status,
reset to the current RSS per phase by writing 5 to /proc/self/clear_refs (DeepSpeed's own CPU
figures are sampled RSS, not peaks). A phase reset would lose the run's absolute peak, so the
high-water mark is read first and kept (`absolute_peak_mb`).
"""

from __future__ import annotations

from pathlib import Path

import torch

_MB = 1024 * 1024


def _status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Usage: `m = PeakMemory(device); m.start(); ...phase...; m.peak_mb(); m.absolute_peak_mb()`."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.baseline_mb = 0.0
        self._earlier_peak_mb = 0.0
        self._earlier_reserved_mb = 0.0

    def usage_mb(self) -> float:
        """Memory in use now (CUDA: allocated; CPU: resident set)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.memory_allocated(self.device) / _MB
        return _status_kb("VmRSS") / 1024

    def _high_water_mb(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / _MB
        return _status_kb("VmHWM") / 1024

    def start(self) -> None:
        """Begin a phase: keep the absolute peak so far, reset the high-water mark, take the current
        usage as the phase's baseline."""
        self._earlier_peak_mb = self.absolute_peak_mb()
        self._earlier_reserved_mb = self.absolute_peak_reserved_mb() or 0.0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass  # some kernels refuse; the peak then includes earlier phases (baseline still subtracted)
        self.baseline_mb = self.usage_mb()

    def peak_mb(self) -> float:
        """Peak usage since `start`, minus the baseline taken there."""
        return self._high_water_mb() - self.baseline_mb

    def peak_reserved_mb(self) -> float | None:
        if not self.cuda:
            return None
        return torch.cuda.max_memory_reserved(self.device) / _MB - self.baseline_mb

    def absolute_peak_mb(self) -> float:
        """Peak usage of the process so far, nothing subtracted (CUDA: since the process started)."""
        return max(self._earlier_peak_mb, self._high_water_mb())

    def absolute_peak_reserved_mb(self) -> float | None:
        """CUDA: peak reserved by the caching allocator so far, nothing subtracted; CPU: None."""
        if not self.cuda:
            return None
        return max(self._earlier_reserved_mb, torch.cuda.max_memory_reserved(self.device) / _MB)
