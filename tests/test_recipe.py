"""The training recipe's guarantees, on real runs (real DeepSpeed engines, real tokenizers, the sandbox).

    python -m pytest -q tests/test_recipe.py

- HumanEval end to end (suites/humaneval-tiny.yaml, SmolLM2-135M): complete, pass@1 over every
  problem; the same run's whole memory counts the model's weights.
- The canonical solutions score 1.0 through Task.score (the sandbox).
- An evaluation that raises keeps the training record and the adapter; the re-run evaluates the
  adapter without training.
- A 600-token prompt at max_length 256 keeps every answer token; no NaN anywhere.
- The held-out loss is token-weighted over supervised tokens.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from disha_bench import models, tasks
from disha_bench.contracts.results import COMPLETE, EVAL_FAILED, load_results
from disha_bench.running.runner import run_suite
from disha_bench.tasks.base import IGNORE_INDEX, collate, encode_prompt_answer
from disha_bench.training.heldout import heldout_loss, heldout_sums

ROOT = Path(__file__).resolve().parents[1]


def _run(suite: Path | str, out: Path, **kwargs) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run_suite(str(suite), out=str(out), **kwargs)
    logs = "".join(p.read_text()[-3000:] for p in (out / ".runs").glob("*.log")) if (out / ".runs").exists() else ""
    return code, printed.getvalue() + logs


def test_humaneval_suite_completes_and_its_peak_memory_holds_the_weights(tmp_path):
    out = tmp_path / "humaneval-tiny"
    code, printed = _run(ROOT / "suites" / "humaneval-tiny.yaml", out)
    assert code == 0, printed[-4000:]
    (result,) = load_results(out)
    assert result.run.status == COMPLETE, result.run.error
    assert result.evaluation["n_examples"] == result.run.config["task"]["eval_limit"] == 4
    assert 0.0 <= result.evaluation["pass@1"] <= 1.0 and result.evaluation["primary_metric"] == "pass@1"
    assert [p.step for p in result.heldout.points] == [0, 1, 2]
    assert result.heldout.source.startswith("canonical solutions") and result.heldout.n_examples == 4
    assert all(math.isfinite(p.loss) for p in result.heldout.points)
    assert not (out / "adapters").exists()  # saved before evaluation, removed after it with its empty folder
    timed = result.throughput.train_time_s + result.heldout.eval_time_s + result.throughput.eval_time_s
    assert result.run.wall_time_s >= timed  # stamped when the run ends, evaluation included

    # Whole memory (Linux: VmHWM / VmRSS): the run's absolute peak holds at least the fp32 weights
    # loaded after `before_model_mb` was taken; the increment is what training added on top.
    memory = result.memory
    weights_mb = result.training.total_params * 4 / 2**20
    assert weights_mb > 500  # SmolLM2-135M: a check a few MB of noise cannot pass by accident
    assert memory.peak_mb - memory.before_model_mb >= weights_mb
    assert memory.loaded_mb - memory.before_model_mb >= 0.9 * weights_mb
    assert memory.increment_mb == pytest.approx(memory.peak_mb - memory.loaded_mb)
    assert memory.per_rank_peak_mb == [memory.peak_mb]
    assert memory.train_peak_mb is not None and memory.train_peak_mb <= memory.peak_mb


def test_canonical_solutions_score_one_through_task_score():
    task = tasks.get("humaneval")
    _, problems = task.load({**task.options, "name": "humaneval", "train_source": "stdlib", "eval_limit": 8,
                             "train_limit": 1, "sample_seed": 0}, None)
    keep = ("task_id", "prompt", "test", "entry_point")
    solved = [{"problem": {k: p[k] for k in keep}, "completions": [p["canonical_solution"]]} for p in problems]
    assert task.score(solved) == {"pass@1": 1.0}
    # The held-out set is those solutions as answers: the loss curve of a HumanEval run.
    assert [r["answer"] for r in task.heldout(8)] == [p["canonical_solution"] for p in problems]


def _gsm8k_files(tmp_path: Path) -> dict[str, str]:
    """A few MetaMathQA training rows, GSM8K test problems, and a data directory with GSM8K train."""
    train = [{"query": f"What is {a} plus {a}?", "response": f"{a} + {a} = {2 * a}. The answer is: {2 * a}"} for a in range(1, 17)]
    test = [{"question": f"Tom has {a} apples and eats one. How many are left?", "answer": f"{a} - 1 = {a - 1}\n#### {a - 1}"}
            for a in range(2, 6)]
    (tmp_path / "metamath.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    (tmp_path / "data" / "gsm8k").mkdir(parents=True)
    (tmp_path / "data" / "gsm8k" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return {"train": str(tmp_path / "metamath.jsonl"), "eval": str(tmp_path / "test.jsonl")}


def test_evaluation_failure_keeps_training_and_the_rerun_evaluates_without_training(tmp_path, monkeypatch):
    # Real failure path: MetaMathQA training with few-shot evaluation needs GSM8K *train* for the
    # shots, found only under a data directory; without one, evaluation raises after training.
    monkeypatch.delenv("DISHA_BENCH_DATA", raising=False)
    suite = {
        "name": "evalfail", "model": {"name": "tiny-llama"},
        "tasks": [{"name": "gsm8k", "train_source": "metamathqa", "source": "local", "data_files": _gsm8k_files(tmp_path),
                   "eval_limit": 4}],
        "methods": [{"name": "bone", "r": 16}],
        "training": {"max_steps": 3, "batch_size": 2, "max_length": 64, "lr": 1.0e-3},
        "evaluation": {"batch_size": 4, "max_new_tokens": 4, "num_fewshot": 1, "heldout_examples": 4},
        "analysis": {"unadapted": False}, "output": {"report": False},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    code, printed = _run(path, out)
    assert code == 1, printed[-3000:]
    (failed,) = load_results(out)
    assert failed.run.status == EVAL_FAILED and "evaluation" in failed.run.error and "gsm8k" in failed.run.error
    assert len(failed.training.steps) == 3 and failed.training.trainable_params > 0
    assert [p.step for p in failed.heldout.points] == [0, 1, 2, 3]
    assert failed.memory.peak_mb > 0 and failed.throughput.tokens_per_s > 0 and failed.evaluation == {}
    adapter = out / "adapters" / failed.run.run_id
    assert (adapter / "adapter_config.json").is_file()

    code, printed = _run(path, out, data_dir=str(tmp_path / "data"))
    assert code == 0, printed[-3000:]
    assert "evaluating the saved adapter" in printed and "step 1/3" not in printed  # no training step ran
    (done,) = load_results(out)
    assert done.run.status == COMPLETE and done.run.error is None
    assert done.evaluation["n_examples"] == 4 and "exact_match_strict" in done.evaluation
    assert done.training == failed.training and done.heldout == failed.heldout  # step times too: not retrained
    assert not adapter.exists()  # evaluated: removed (output.save_adapter is off)


def test_a_long_prompt_keeps_every_answer_token_and_nothing_is_nan():
    tokenizer = models.load_tokenizer("tiny-llama")
    prompt = " ".join(f"word{i}" for i in range(300))
    answer = " The answer is 42, because six times seven is forty-two.\n#### 42"
    assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) >= 600
    feature = encode_prompt_answer(tokenizer, prompt, answer, 256)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert len(feature["input_ids"]) == 256
    assert feature["input_ids"][-len(answer_ids):] == answer_ids  # every answer token, EOS last
    assert [t for t in feature["labels"] if t != IGNORE_INDEX] == answer_ids
    assert feature["input_ids"][: -len(answer_ids)] == tokenizer(prompt, add_special_tokens=False)["input_ids"][-(256 - len(answer_ids)):]
    assert encode_prompt_answer(tokenizer, prompt, answer * 40, 256) is None  # the answer alone does not fit: dropped

    model = models.load_model("tiny-llama", "causal_lm")
    unsupervised = {"input_ids": feature["input_ids"][:50], "labels": [IGNORE_INDEX] * 50}
    total, terms = heldout_sums(model, [unsupervised], 1, tokenizer.pad_token_id, torch.device("cpu"))
    assert (total, terms) == (0.0, 0)  # a batch without a supervised token adds nothing, no NaN
    loss = heldout_loss(model, [feature, unsupervised], 2, tokenizer.pad_token_id, torch.device("cpu"))
    assert math.isfinite(loss)


def test_heldout_loss_is_token_weighted_over_supervised_tokens():
    tokenizer = models.load_tokenizer("tiny-llama")
    model = models.load_model("tiny-llama", "causal_lm")
    features = [encode_prompt_answer(tokenizer, "Question: 2+2?\nAnswer:", " 4" * n, 64) for n in (1, 5, 20)]
    per_example = []
    with torch.no_grad():
        for f in features:
            batch = collate([f], tokenizer.pad_token_id)
            terms = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            per_example.append((float(model(**batch).loss) * terms, terms))
    expected = sum(s for s, _ in per_example) / sum(n for _, n in per_example)
    got = heldout_loss(model, features, 2, tokenizer.pad_token_id, torch.device("cpu"))
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(sum(s / n for s, n in per_example) / 3, rel=1e-3)  # not example-weighted


STEP_SCRIPT = r"""
import math, os, socket, torch
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
from disha_bench.analysis import convergence
from disha_bench.training import distributed
from disha_bench import methods, models
distributed.skip_cpu_shm_build()
import deepspeed
from disha_bench.config.suite import TrainingConfig
from disha_bench.tasks.base import IGNORE_INDEX, collate, encode_prompt_answer
from disha_bench.training.ds_config import deepspeed_config
from disha_bench.training.loop import train_step
deepspeed.init_distributed(verbose=False)
torch.manual_seed(0)
tokenizer = models.load_tokenizer("tiny-llama")
model = methods.apply(models.load_model("tiny-llama", "causal_lm"), "lora", r=4)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(TrainingConfig(batch_size=1, grad_accum=2), 1))
feature = encode_prompt_answer(tokenizer, " ".join(f"word{i}" for i in range(300)), " #### 42", 256)
unsupervised = {"input_ids": feature["input_ids"][:40], "labels": [IGNORE_INDEX] * 40}
with torch.no_grad():
    expected = float(engine.module(**collate([feature], tokenizer.pad_token_id)).loss)
log = train_step(engine, [collate([feature], tokenizer.pad_token_id), collate([unsupervised], tokenizer.pad_token_id)], 1, torch.device("cpu"))
print("loss", repr(log.loss), "expected", repr(expected), "diverged", convergence.is_diverged(log.loss, log.loss, 4.0),
      "finite_grads", all(torch.isfinite(p).all().item() for p in engine.module.parameters()), flush=True)
"""


def test_a_micro_batch_without_a_supervised_token_adds_no_nan_to_a_real_step(tmp_path):
    """A real DeepSpeed step (ZeRO-2, 1 rank, 2 micro-batches): one micro-batch supervises nothing;
    the step's loss is the other's, finite, and the weights stay finite."""
    import subprocess
    import sys

    script = tmp_path / "step.py"
    script.write_text(STEP_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("loss ")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-3000:]
    fields = line.split()
    loss, expected = float(fields[1]), float(fields[3])
    assert math.isfinite(loss) and loss == pytest.approx(expected, rel=1e-6)
    assert fields[5] == "False" and fields[7] == "True"
