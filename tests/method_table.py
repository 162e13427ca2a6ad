"""The one table every method runs through: adding a method is one row here (and its own module in
`disha_bench/methods/`). `tests/test_methods.py` runs each row's battery on a tiny Llama and a tiny
BERT; `tests/test_all_methods.py` runs each row through `disha-bench run` under ZeRO-2 and ZeRO-3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Shapes:
    """Sums over a model's adapted linear modules, for counting trainable parameters by hand."""

    sum_in_out: int
    """sum of in_features + out_features"""
    sum_out: int
    """sum of out_features"""
    modules: int
    """number of adapted modules"""


@dataclass(frozen=True)
class Row:
    method: str
    """Registered method name."""
    params: dict = field(default_factory=dict)
    """Its parameters in the battery (r divides every tiny model's widths)."""
    lr: float = 1e-2
    """Learning rate of the battery's few AdamW steps."""
    count: Optional[Callable[[Shapes, dict], int]] = None
    """Trainable parameters by hand, independent of the package's per-module formulas, without the
    classification head; None: every parameter of the model (full fine-tuning)."""


def _lora(s: Shapes, p: dict) -> int:
    return p["r"] * s.sum_in_out


ROWS: dict[str, Row] = {
    "lora": Row("lora", {"r": 4}, count=_lora),
    "rslora": Row("rslora", {"r": 4, "alpha": 8}, count=_lora),
    "dora": Row("dora", {"r": 4}, count=lambda s, p: p["r"] * s.sum_in_out + s.sum_out),
    "pissa": Row("pissa", {"r": 4}, count=_lora),
    "olora": Row("olora", {"r": 4}, count=_lora),
    "loraplus": Row("loraplus", {"r": 4, "loraplus_lr_ratio": 4.0}, lr=5e-3, count=_lora),
    "bone": Row("bone", {"r": 8}, count=lambda s, p: p["r"] * s.sum_out),
    "bone-mini": Row("bone-mini", {"r": 8, "mini_r": 4}, count=lambda s, p: s.modules * p["r"] * p["mini_r"]),
    "bat": Row("bat", {"r": 8}, count=lambda s, p: p["r"] * s.sum_out),  # (out/r) blocks of r x r
    "bat-peft": Row("bat", {"r": 8, "kernel": "peft"}, count=lambda s, p: p["r"] * s.sum_out),
    "vera": Row("vera", {"r": 16}, count=lambda s, p: s.modules * p["r"] + s.sum_out),
    "full": Row("full", {}, lr=1e-3),
}
