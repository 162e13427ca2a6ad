"""Peak memory on CPU: VmHWM reset per phase, the memory in use before the phase subtracted.

    python -m pytest -q tests/test_memory.py

The phases run in a fresh interpreter: in a long test session, memory that earlier tests freed
stays resident in the allocator's arenas, and new activations reuse it without raising the
process's resident set, which would hide them from any RSS-based peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")

PHASES = textwrap.dedent("""
    import json
    import torch
    from disha_bench.training.memory import PeakMemory

    MB = 2**20
    torch.manual_seed(0)
    width, layers = 512, 4
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    ballast = torch.ones(512 * MB // 4)  # 512 MB in use before every phase: part of the baseline
    peaks, baselines = {}, []
    # Ascending, and large enough that activations (not thread-pool or allocator overhead) decide
    # the order: memory glibc keeps from a phase cannot hide the next one.
    for batch in (1024, 4096, 16384):
        memory = PeakMemory(torch.device("cpu"))
        memory.start()
        model(torch.randn(batch, width)).square().mean().backward()
        peaks[batch] = memory.peak_mb()
        baselines.append(memory.baseline_mb)
        model.zero_grad(set_to_none=True)
    assert ballast.sum().item() == 512 * MB // 4
    print(json.dumps({"peaks": peaks, "baselines": baselines}))
""")


def test_cpu_peak_grows_with_batch_size_and_excludes_the_baseline():
    done = subprocess.run([sys.executable, "-c", PHASES], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    peaks = {int(batch): mb for batch, mb in measured["peaks"].items()}
    activation_mb = 16384 * 512 * 4 / 2**20  # one activation at the largest batch: 32 MB
    assert all(baseline > 512 for baseline in measured["baselines"])  # the ballast is in the baseline ...
    assert peaks[1024] < peaks[4096] < peaks[16384]
    assert peaks[16384] >= 3 * activation_mb  # the layers' saved activations really are counted
    assert peaks[16384] < 512  # ... and not in the peak
