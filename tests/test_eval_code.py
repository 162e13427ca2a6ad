"""HumanEval scoring: pass@k, input validation, the results file, the eval-code command, and the
real problems (canonical solutions pass, empty bodies fail)."""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import time
from pathlib import Path

import pytest

from disha_bench.cli import eval_code
from disha_bench.core.errors import UserError
from disha_bench.evaluation.code_execution import evaluate_samples, load_problems, pass_at_k, read_samples
from disha_bench.tasks.base import cut_at_stop
from disha_bench.tasks.humaneval import STOPS

FULL = os.environ.get("DISHA_FULL_TESTS") == "1"
TOYS = [
    {"task_id": "Toy/0", "prompt": "def add(a, b):\n", "entry_point": "add",
     "canonical_solution": "    return a + b\n",
     "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"},
    {"task_id": "Toy/1", "prompt": "def neg(x):\n", "entry_point": "neg",
     "canonical_solution": "    return -x\n",
     "test": "def check(candidate):\n    assert candidate(4) == -4\n"},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def toy_problems(tmp_path) -> Path:
    return write_jsonl(tmp_path / "problems.jsonl", TOYS)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    eval_code.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


# ------------------------------------------------------------------------------------ pass@k


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (200, 17, 10),
                                   (200, 0, 100), (200, 150, 100), (5, 5, 5)])
def test_pass_at_k_matches_the_combinatorial_definition(n, c, k):
    expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_1_is_the_pass_rate_and_bad_arguments_raise():
    assert pass_at_k(20, 7, 1) == pytest.approx(7 / 20)
    for bad in [(5, 6, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_completion_is_cut_at_the_first_code_stop():
    text = "    return x\n\ndef helper():\n    pass\n"
    assert cut_at_stop(text, STOPS) == "    return x\n"
    assert cut_at_stop("    y = 1\n# comment\nprint(3)", STOPS) == "    y = 1"
    assert cut_at_stop("    return 1\nif __name__ == '__main__':\n", STOPS) == "    return 1"
    assert cut_at_stop("    return 1", STOPS) == "    return 1"
    assert cut_at_stop("a STOP b STOP", ("STOP",)) == "a "


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("line,message", [
    ('{"task_id": "Toy/0", "completion": ', "line 2: not valid JSON"),
    ('{"task_id": "Toy/0"}', "line 2: field 'completion' is missing; expected a string"),
    ('{"completion": "x"}', "line 2: field 'task_id' is missing"),
    ('{"task_id": "Toy/0", "completion": 3}', "line 2: field 'completion' is a int; expected a string"),
    ('["Toy/0"]', "line 2: expected a JSON object"),
    ('{"task_id": "Toy/9", "completion": "x"}', "line 2: unknown task_id 'Toy/9' (did you mean"),
])
def test_bad_sample_lines_name_file_and_line(tmp_path, toy_problems, line, message, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", [{"task_id": "Toy/0", "completion": "x"}, line])
    with pytest.raises(UserError) as err:
        evaluate_samples(samples, toy_problems)
    assert str(err.value).startswith(f"{samples}: {message}"), err.value
    assert not Path(f"{samples}_results.jsonl").exists()
    with pytest.raises(UserError):
        cli(["eval-code", str(samples), "--problems", str(toy_problems)])


def test_bad_problem_files(tmp_path):
    with pytest.raises(UserError, match="nope.jsonl: data file not found"):
        load_problems(tmp_path / "nope.jsonl")
    corrupt = tmp_path / "p.jsonl.gz"
    corrupt.write_bytes(gzip.compress(json.dumps(TOYS[0]).encode() + b"\n")[:-12])
    with pytest.raises(UserError, match="p.jsonl.gz: corrupt gzip file"):
        load_problems(corrupt)
    bad = write_jsonl(tmp_path / "p.jsonl", [TOYS[0], {"task_id": "X", "prompt": ""}])
    with pytest.raises(UserError, match=r"p.jsonl: line 2: field 'test' is missing"):
        load_problems(bad)
    gz = tmp_path / "ok.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(t) + "\n" for t in TOYS).encode()))
    assert list(load_problems(gz)) == ["Toy/0", "Toy/1"]


@pytest.mark.parametrize("argv,message", [
    (["--k", "1,x"], "--k"), (["--k", "0"], "--k"), (["--timeout", "0"], "--timeout"),
    (["--workers", "0"], "--workers")])
def test_bad_options(tmp_path, toy_problems, argv, message):
    samples = write_jsonl(tmp_path / "s.jsonl", [{"task_id": "Toy/0", "completion": "x"}])
    with pytest.raises(UserError, match=message):
        cli(["eval-code", str(samples), "--problems", str(toy_problems), *argv])


def test_lead_cli_turns_bad_input_into_exit_2(tmp_path, toy_problems, capsys):
    from disha_bench import cli as cli_mod
    samples = write_jsonl(tmp_path / "s.jsonl", ["not json"])
    assert cli_mod.main(["eval-code", str(samples), "--problems", str(toy_problems)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "line 1: not valid JSON" in err and "\n" not in err


# ---------------------------------------------------------------------------- evaluation


def test_evaluate_writes_results_in_order_and_scores(tmp_path, toy_problems, capsys):
    rows = [
        {"task_id": "Toy/1", "completion": "    return -x\n", "extra": [1, 2]},
        {"task_id": "Toy/0", "completion": "    return a + b\n"},
        {"task_id": "Toy/0", "completion": "    return a - b\n"},
        {"task_id": "Toy/1", "completion": "    while True:\n        pass\n"},
        {"task_id": "Toy/0", "completion": "    return a + b\nimport os\nos._exit(0)\n"},
        {"task_id": "Toy/1", "completion": "    return -x\nwhile True:\n    print('x' * 9999)\n"},
    ]
    samples = write_jsonl(tmp_path / "samples.jsonl", rows)
    assert cli(["eval-code", str(samples), "--problems", str(toy_problems), "--timeout", "8",
                "--workers", "2", "--k", "1,2,3,10"]) == 0
    scores = json.loads(capsys.readouterr().out)
    # Toy/0: 1 of 3 pass, Toy/1: 1 of 3 pass
    assert scores == pytest.approx({"pass@1": 1 / 3, "pass@2": 1 - (2 / 3) * (1 / 2), "pass@3": 1.0})
    out = [json.loads(line) for line in Path(f"{samples}_results.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k not in ("passed", "result")} for r in out] == rows
    assert [r["passed"] for r in out] == [True, True, False, False, False, False]
    assert out[2]["result"] == "failed: AssertionError"
    assert out[3]["result"] == "timed out"
    assert "status 0 before" in out[4]["result"]
    assert "output exceeded" in out[5]["result"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["problems.jsonl", "samples.jsonl",
                                                          "samples.jsonl_results.jsonl"]


def test_sandbox_errors_are_retried_then_reported(tmp_path, toy_problems, monkeypatch, capsys):
    from disha_bench.evaluation import code_execution as humaneval
    from disha_bench.evaluation.sandbox import SandboxResult

    calls = []
    monkeypatch.setattr(humaneval, "check_sample",
                        lambda *a, **k: calls.append(1) or SandboxResult("error", "boom"))
    samples = write_jsonl(tmp_path / "s.jsonl", [{"task_id": "Toy/0", "completion": "x"}])
    assert cli(["eval-code", str(samples), "--problems", str(toy_problems)]) == 1
    assert len(calls) == 2  # one retry
    assert "1 of 1 samples could not be judged" in capsys.readouterr().err
    row = json.loads(Path(f"{samples}_results.jsonl").read_text())
    assert (row["passed"], row["result"]) == (False, "error: boom")


def _humaneval_run(tmp_path, task_ids, completion_of):
    problems = load_problems()
    rows = [{"task_id": t, "completion": completion_of(problems[t])} for t in task_ids]
    samples = write_jsonl(tmp_path / "samples.jsonl", rows)
    start = time.monotonic()
    scores = evaluate_samples(samples, workers=2, ks=(1,))
    elapsed = time.monotonic() - start
    out = [json.loads(line) for line in Path(f"{samples}_results.jsonl").read_text().splitlines()]
    return scores, out, elapsed


def _task_ids() -> list[str]:
    ids = list(load_problems())
    assert len(ids) == 164
    return ids if FULL else ids[::10]  # 17 problems spread over the set; all 164 with FULL


def test_humaneval_canonical_solutions_all_pass(tmp_path):
    ids = _task_ids()
    scores, out, elapsed = _humaneval_run(tmp_path, ids, lambda p: p["canonical_solution"])
    print(f"canonical: {sum(r['passed'] for r in out)}/{len(ids)} in {elapsed:.1f} s")
    assert [r["result"] for r in out if not r["passed"]] == []
    assert scores == {"pass@1": 1.0}


def test_humaneval_empty_bodies_all_fail(tmp_path):
    ids = _task_ids()
    scores, out, elapsed = _humaneval_run(tmp_path, ids, lambda p: "    pass\n")
    print(f"empty bodies: {sum(r['passed'] for r in out)}/{len(ids)} in {elapsed:.1f} s")
    assert [r["task_id"] for r in out if r["passed"]] == []
    assert scores == {"pass@1": 0.0}


def test_default_problems_are_the_164(tmp_path):
    problems = load_problems()
    assert len(problems) == 164 and "HumanEval/163" in problems
    samples = write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/16x", "completion": ""}])
    with pytest.raises(UserError, match="line 1: unknown task_id 'HumanEval/16x' .did you mean"):
        read_samples(samples, problems)
