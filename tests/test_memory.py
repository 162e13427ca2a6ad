"""Peak memory on CPU: VmHWM reset per phase, the memory in use before the phase subtracted."""

from __future__ import annotations

import sys

import pytest
import torch

from disha_bench.running.memory import PeakMemory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")

_MB = 2**20


def test_cpu_peak_grows_with_batch_size_and_excludes_the_baseline():
    torch.manual_seed(0)
    width, layers = 512, 4
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    ballast = torch.ones(512 * _MB // 4)  # 512 MB in use before every phase: part of the baseline
    peaks = {}
    # Ascending, and large enough that activations (not thread-pool or allocator overhead, ~20 MB
    # here, which varies with load) decide the order: memory glibc keeps cannot hide the next phase.
    for batch in (1024, 4096, 16384):
        memory = PeakMemory(torch.device("cpu"))
        memory.start()
        model(torch.randn(batch, width)).square().mean().backward()
        peaks[batch] = memory.peak_mb()
        model.zero_grad(set_to_none=True)
        assert memory.baseline_mb > 512  # the ballast is in the baseline ...
    activation_mb = 16384 * width * 4 / _MB  # one activation at the largest batch: 32 MB
    assert peaks[1024] < peaks[4096] < peaks[16384]
    assert peaks[16384] >= 3 * activation_mb  # the layers' saved activations really are counted
    assert peaks[16384] < 512  # ... and not in the peak
    assert ballast.sum().item() == 512 * _MB // 4
