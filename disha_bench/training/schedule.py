"""The learning-rate schedule: linear warm-up, then constant, linear or cosine decay to zero.

    python -c "from disha_bench.config.suite import TrainingConfig; from disha_bench.training.schedule import lr_lambda; \
f = lr_lambda(TrainingConfig(max_steps=10)); print([round(f(s), 3) for s in range(10)])"
"""

from __future__ import annotations

import math
from typing import Callable

from disha_bench.config.suite import TrainingConfig


def lr_lambda(training: TrainingConfig) -> Callable[[int], float]:
    """Factor of the peak lr at each step (for torch's LambdaLR): zero at max_steps."""
    warmup, total, schedule = training.warmup_steps, training.max_steps, training.schedule

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
