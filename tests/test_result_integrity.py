"""Result files are verified on read (JSON, schema, checksum); a damaged one is never lost unseen.

    pytest tests/test_result_integrity.py -q

Issue 25: a truncated result passed `check`, `report` counted only the whole ones, `status` called the
run "pending" and a re-run overwrote the damaged file without a word; a stray `[1,2]` JSON file gave
an AttributeError traceback in `status` and `report`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from report_fixtures import FOLDER, all_results

from disha_bench.analysis import report
from disha_bench.contracts.results import CHECKSUM_KEY, DamagedResult, read_result, verify_result, write_result
from disha_bench.running import status


@pytest.fixture
def folder(tmp_path) -> Path:
    """The report fixtures, written as a run writes them (with their checksum)."""
    out = tmp_path / "results"
    for r in all_results():
        write_result(out / f"{r.run.run_id}.json", r)
    return out


def _one(folder: Path) -> Path:
    return sorted(folder.glob("*-bone-s1-*.json"))[0]


def test_a_written_result_carries_its_checksum_and_reads_back_whole(folder):
    path = _one(folder)
    assert json.loads(path.read_text())[CHECKSUM_KEY].startswith("sha256:")
    assert verify_result(path).run.run_id == path.stem
    assert verify_result(folder / "absent.json") is None


@pytest.mark.parametrize("damage, reason", [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: text.replace('"accuracy": 0.', '"accuracy": 0.9', 1), "checksum mismatch"),
    (lambda text: "[1, 2]", "not a disha-bench result"),
    (lambda text: json.dumps({"run": {"run_id": "x"}}), "does not match the result schema"),
])
def test_damaged_files_are_reported_with_the_reason(folder, damage, reason):
    path = _one(folder)
    path.write_text(damage(path.read_text()))
    with pytest.raises(DamagedResult, match=reason):
        verify_result(path)
    assert read_result(path) is None


def test_results_written_before_checksums_still_read(folder):
    path = _one(folder)
    data = json.loads(path.read_text())
    del data[CHECKSUM_KEY]
    path.write_text(json.dumps(data))
    assert verify_result(path).run.run_id == path.stem


def test_status_names_a_damaged_and_a_foreign_file(folder):
    victim = _one(folder)
    victim.write_bytes(victim.read_bytes()[:300])
    (folder / "notes.json").write_text("[1, 2]")
    states = {s.run_id: s for s in status.collect(folder)}
    assert states[victim.stem].state == status.DAMAGED and "not valid JSON" in states[victim.stem].detail
    assert states["notes"].state == status.DAMAGED and "not a disha-bench result" in states["notes"].detail
    assert "2 damaged" in status.render(list(states.values()))


def test_report_header_counts_and_names_damaged_files(folder, tmp_path):
    victim = _one(folder)
    victim.write_bytes(victim.read_bytes()[:300])
    (folder / "notes.json").write_text("[1, 2]")
    text = report.write_report(folder, tmp_path / "r.md", "x", draw=False).read_text()
    first, rest = text.split("\n", 1)
    whole = len(list(FOLDER.glob("*.json"))) - 1
    assert f"complete runs of {whole}, 2 damaged result files" in first
    assert "2 damaged result files, not used" in rest and victim.name in rest and "notes.json" in rest


def test_cli_status_and_report_on_a_stray_json_are_not_tracebacks(folder, tmp_path, capsys):
    from disha_bench.cli import main

    (folder / "notes.json").write_text("[1, 2]")
    assert main(["status", str(folder)]) == 0
    assert "notes" in capsys.readouterr().out
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(folder / "notes.json", lone)
    assert main(["report", str(lone)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "notes.json: not a disha-bench result" in err


def test_a_rerun_sets_the_damaged_result_aside_and_says_so(tmp_path, monkeypatch, capsys):
    from disha_bench.running.runner import run_suite

    monkeypatch.chdir(tmp_path)
    smoke, out = str(Path(__file__).resolve().parents[1] / "suites" / "smoke.yaml"), tmp_path / "smoke"
    only, overrides = ["synthetic-sentiment/unadapted"], ["output.report=false"]
    assert run_suite(smoke, out=str(out), only=only, overrides=overrides) == 0
    (path,) = out.glob("*.json")
    damaged = path.read_bytes()[:400]
    path.write_bytes(damaged)
    capsys.readouterr()
    assert run_suite(smoke, out=str(out), only=only, overrides=overrides) == 0
    printed = capsys.readouterr().out
    (kept,) = (out / ".damaged").glob(f"*/{path.name}")
    assert kept.read_bytes() == damaged
    assert f"{path.stem}: its result file was damaged (not valid JSON" in printed and str(kept) in printed
    assert verify_result(path).run.status == "complete"
