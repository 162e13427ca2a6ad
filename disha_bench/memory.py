"""Peak memory of one phase (training, evaluation), with the start-up baseline subtracted.

CUDA: `torch.cuda.max_memory_allocated` / `max_memory_reserved` after `reset_peak_memory_stats`.
CPU: the process high-water mark `VmHWM` from /proc/self/status, reset to the current RSS by
writing 5 to /proc/self/clear_refs (DeepSpeed's own CPU figures are sampled RSS, not peaks).
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
    """Usage: `m = PeakMemory(device); m.start(); ...phase...; m.peak_mb()`."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.baseline_mb = 0.0

    def start(self) -> None:
        """Begin a phase: reset the high-water mark and take the current usage as its baseline."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mb = torch.cuda.memory_allocated(self.device) / _MB
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass  # some kernels refuse; the peak then includes earlier phases (baseline still subtracted)
            self.baseline_mb = _status_kb("VmRSS") / 1024

    def peak_mb(self) -> float:
        """Peak usage since `start`, minus the baseline taken there."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / _MB - self.baseline_mb
        return _status_kb("VmHWM") / 1024 - self.baseline_mb

    def peak_reserved_mb(self) -> float | None:
        if not self.cuda:
            return None
        return torch.cuda.max_memory_reserved(self.device) / _MB - self.baseline_mb
