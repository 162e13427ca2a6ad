"""suites/nlg.yaml states the settings that change results, and uses the DiSHA authors' values where
the paper is silent: ZeRO stage 1 with 1e8 buckets, token-weighted loss, no gradient checkpointing,
the authors' `<|EOT|>` end of text, 100,000 rows of one epoch at global batch 64.

    python -m pytest -q tests/test_paper_settings.py
"""

from __future__ import annotations

from pathlib import Path

from disha_bench import models, tasks
from disha_bench.config.expansion import expand_runs
from disha_bench.config.suite import load_suite
from disha_bench.tasks import gsm8k
from disha_bench.tasks import humaneval as code
from disha_bench.training.ds_config import deepspeed_config

NLG = Path(__file__).resolve().parents[1] / "suites" / "nlg.yaml"


def test_nlg_uses_the_authors_values_and_its_header_states_them():
    suite, _ = load_suite(NLG)
    header = "\n".join(line for line in NLG.read_text().splitlines() if line.startswith("#"))
    run = next(r for r in expand_runs(suite, 4) if r.task.name == "gsm8k" and not r.is_unadapted)
    ds = deepspeed_config(run.training, 4)
    assert ds["zero_optimization"] == {"stage": 1, "reduce_bucket_size": 100_000_000, "allgather_bucket_size": 100_000_000}
    assert ds["train_batch_size"] == 64 and ds["gradient_accumulation_steps"] == 8  # the authors' 2 x 8 x 4 GPUs
    assert run.training.loss_weighting == "token" and not run.training.gradient_checkpointing
    assert run.training.max_epochs == 1 and run.training.max_steps == 100_000 // 64
    for task in suite.tasks:
        assert task.model_extra["target_end"] == gsm8k.AUTHORS_END and task.train_limit == 100_000
    for statement in ("ZeRO stage 1", "1e8", "loss_weighting:", "Gradient checkpointing off", "<|EOT|>",
                      "--dataset_split train", "exact_match_answer", "Where this differs from the authors"):
        assert statement in header, statement


def test_the_authors_end_of_text_is_trained_as_text_without_eos_and_stops_generation():
    tokenizer = models.load_tokenizer("tiny-llama")
    task = tasks.get("gsm8k")
    task._config = {**task.options, "prompt": "alpaca", "target_end": "<|EOT|>"}
    row = gsm8k.from_metamath({"query": "What is 2+3?", "response": "2+3=5. The answer is: 5"})
    feature = task.encode(row, tokenizer, 512)
    supervised = [t for t, label in zip(feature["input_ids"], feature["labels"]) if label != -100]
    assert tokenizer.decode(supervised) == "2+3=5. The answer is: 5\n<|EOT|>" and tokenizer.eos_token_id not in supervised
    assert gsm8k.paper_stops("<|EOT|>")[-1] == "<|EOT|>" and "<|EOT|>" not in gsm8k.paper_stops("eos")
    humaneval = tasks.get("humaneval")
    humaneval._config = {**humaneval._config, "prompt_style": "instruct", "target_end": "<|EOT|>"}
    coded = humaneval.encode({"query": "Write f.", "answer": "```python\ndef f(): pass\n```"}, tokenizer, 512)
    supervised = [t for t, label in zip(coded["input_ids"], coded["labels"]) if label != -100]
    assert tokenizer.decode(supervised).endswith("```\n<|EOT|>") and code.PAPER_PROMPT == gsm8k.PAPER_PROMPT
