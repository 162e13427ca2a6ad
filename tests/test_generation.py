"""Greedy generation with a pool of rows (`disha_bench/evaluation/generation.py`) against plain `model.generate`.

    python3 -m pytest -q tests/test_generation.py
"""

from __future__ import annotations

import pytest
import torch

from disha_bench import methods, models
from disha_bench.evaluation import generation
from disha_bench.tasks.base import EvalSettings, generate

PROMPTS = ["Question: 1+1?\nAnswer:", "Question: how many legs have two cats?\nAnswer:", "Hi there",
           "Question: a longer one, with many more words in it, so that its row is padded less?\nAnswer:",
           "Why", "The quick brown fox", "def f(x):", "Once upon a time"]
MAX_NEW = 24


class RowSteps:
    """Counts rows x forward calls (decode steps and prefills) through a forward pre-hook."""

    def __init__(self, model) -> None:
        self.rows = 0
        self.handle = model.register_forward_pre_hook(self.count, with_kwargs=True)

    def count(self, module, args, kwargs) -> None:
        self.rows += kwargs["input_ids"].shape[0]


def staggered_stops(model, tokenizer) -> tuple[str, ...]:
    """Stop strings first met at different points of different rows' continuations, so rows finish at
    different steps (the rest run to MAX_NEW) and the pool replaces them while others still run."""
    free = generate(model, tokenizer, PROMPTS, EvalSettings(batch_size=8, max_new_tokens=MAX_NEW), mode="batches")
    stops = [first_new_substring(text, 6 * i + 4) for i, text in enumerate(free)]
    assert sum(s is not None for s in stops) >= 3
    return tuple(s for s in stops if s is not None)


def first_new_substring(text: str, start: int) -> str | None:
    """The first 4 characters from `start` on that do not occur earlier in `text` (the random model repeats itself)."""
    return next((text[k : k + 4] for k in range(start, len(text) - 4) if text.find(text[k : k + 4]) == k), None)


def randomise_adapter(model) -> None:
    """Adapters start as the identity (LoRA's B, Bat's D are zero): give them weights that matter."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_pool_gives_exactly_the_texts_of_model_generate(tiny_llama, batch_size):
    model, tokenizer = tiny_llama
    assert generation.usable(model, synced_gpus=False)
    stops = staggered_stops(model, tokenizer)
    settings = EvalSettings(batch_size=batch_size, max_new_tokens=MAX_NEW)
    counter = RowSteps(model)
    pooled = generate(model, tokenizer, PROMPTS, settings, stop=stops)
    pool_rows, counter.rows = counter.rows, 0
    batched = generate(model, tokenizer, PROMPTS, settings, stop=stops, mode="batches")
    counter.handle.remove()
    assert pooled == batched == generate(model, tokenizer, PROMPTS, settings, stop=stops, mode="to_end")
    assert len({len(text) for text in pooled}) >= 4  # rows did finish at different steps
    if batch_size > 1:
        assert pool_rows < counter.rows  # finished rows left the batch instead of being padded along
    plain = generate(model, tokenizer, PROMPTS, settings)  # no stop strings: to EOS or MAX_NEW
    assert plain == generate(model, tokenizer, PROMPTS, settings, mode="batches")


@pytest.mark.parametrize("method,params", [("lora", {"r": 4}), ("bat", {"r": 8})])
def test_pool_on_peft_models_including_the_efficient_bat_kernel(method, params):
    tokenizer = models.load_tokenizer("tiny-llama")
    model = methods.apply(models.load_model("tiny-llama", "causal_lm"), method, **params)
    if method == "bat":
        assert any(type(m).__name__ == "EfficientBatLinear" for m in model.modules())
    randomise_adapter(model)
    assert generation.usable(model, synced_gpus=False)
    settings = EvalSettings(batch_size=3, max_new_tokens=MAX_NEW)
    stops = staggered_stops(model, tokenizer)
    assert generate(model, tokenizer, PROMPTS, settings, stop=stops) == generate(
        model, tokenizer, PROMPTS, settings, stop=stops, mode="batches")


def test_plain_path_where_the_pool_cannot_reproduce_generate(tiny_llama):
    model, _ = tiny_llama
    assert not generation.usable(model, synced_gpus=True)  # ZeRO-3, several ranks: every rank in every forward
    saved = model.generation_config.repetition_penalty
    model.generation_config.repetition_penalty = 1.3
    try:
        assert not generation.usable(model, synced_gpus=False)  # a logits processor the pool does not apply
    finally:
        model.generation_config.repetition_penalty = saved
    with pytest.raises(ValueError, match="generation mode"):
        generate(model, None, [], EvalSettings(), mode="sampled")


def test_transformers_older_than_the_cache_argument_is_refused_at_start_and_never_pooled(tiny_llama, monkeypatch, tmp_path):
    """transformers < 5.24 takes the pool's `cache=` into **kwargs and decodes wrongly without an error:
    pyproject's floor is 5.24, `run` refuses an older one at start-up, and the pool steps aside."""
    from pathlib import Path

    import tomllib
    import transformers

    from disha_bench.cli import main
    from disha_bench.running import preflight

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    floor = next(d for d in pyproject["project"]["dependencies"] if d.startswith("transformers"))
    assert f">={generation.MIN_TRANSFORMERS}," in floor
    model, _ = tiny_llama
    assert generation.usable(model, synced_gpus=False)
    monkeypatch.setattr(transformers, "__version__", "5.17.0")  # the GPU image's version
    assert not generation.usable(model, synced_gpus=False)
    suite = tmp_path / "s.yaml"
    suite.write_text("name: t\nmodel: {name: tiny-llama}\ntasks: [{name: synthetic-arith}]\nmethods: [{name: lora}]\n")
    assert main(["run", str(suite), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    with pytest.raises(preflight.UserError, match=r"transformers 5\.17\.0 is older than 5\.24"):
        preflight.check_libraries()
