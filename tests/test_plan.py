"""`disha-bench plan`: the offline cost table of the GPU suite and a measured plan of the smoke suite.

    HF_HUB_OFFLINE=1 python -m pytest tests/test_plan.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from disha_bench.analysis import verdicts  # noqa: E402
from disha_bench.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_offline_plan_of_the_paper_suite(capsys, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1 slots=4\nnode2 slots=4\n")
    # the per-GPU memory model traces 7B-wide layers (a minute or more): tests/test_memory_model.py covers it
    assert main(["plan", str(REPO / "suites" / "nlg.yaml"), "--hostfile", str(hostfile), "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "32 runs on 8 rank(s), global batch 2 x 4 x 8 = 64, max_length 512" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"(gsm8k|humaneval)-", line)]
    unadapted = [row for row in rows if "-unadapted-" in row[0]]
    assert len(rows) == 32 and len(unadapted) == 2 and all(int(row[1]) == 0 for row in unadapted)
    for run_id, steps, epochs, bound, *_ in (row for row in rows if row not in unadapted):
        assert int(steps) == 1562 and epochs == "1.00" and int(bound.replace(",", "")) == 1562 * 64 * 512
    *table, power = out.splitlines()
    assert table[-1].split()[1:3] == ["46860", f"{30 * 1562 * 64 * 512:,}"]
    # 3 seeds, 4 methods against LoRA (8 primary comparisons): what they can detect, from the stated prior.
    assert power.startswith("Minimum detectable effect with 3 seeds (80% power, Holm's first level over 8 primary")
    assert f"held-out loss {verdicts.minimum_detectable(0.025, 3, 8):.3g}," in power


def test_measured_plan_of_the_smoke_suite(capsys):
    assert main(["plan", str(REPO / "suites" / "smoke.yaml"), "--measure", "--measure-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^measured \S+: [0-9.]+ s per step", out, flags=re.M)) == 6  # 2 tasks x 3 methods, once
    rows = [line.split() for line in out.splitlines() if line.startswith("synthetic-") and "-unadapted-" not in line]
    assert len(rows) == 6
    for _, steps, _, bound, real, when in rows:
        assert 0 < int(real.replace(",", "")) <= int(bound.replace(",", ""))  # real tokens within the bound
        assert re.fullmatch(r"\d+m\d\ds", when)
    assert "measured on cpu; training only" in out
