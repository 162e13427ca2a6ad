"""Greedy generation that keeps `batch_size` rows busy: finished rows leave, waiting prompts take their place.

    outputs = greedy_pool(model, tokenizer, prompts, batch_size=16, max_new_tokens=256, stop=["Question:"])

`generate` in `tasks/base.py` calls it for greedy decoding; measure it with
`python benchmarks/bench_gsm8k_eval.py`, which also checks its outputs against plain `model.generate`.

Why: with fixed batches, a batch runs until its longest member is done. On GSM8K a few problems never
emit a stop string or EOS and run to `max_new_tokens`, so every batch that holds one costs
`max_new_tokens` steps at full batch width, and batching gains little (the length bound). Here a row
leaves the batch the step it finishes (its key/value cache rows are dropped) and the next prompt is
prefilled and joins, so long rows run alongside new ones instead of holding up a batch of finished ones.
The cache grows in place (`GrowingLayer`): `DynamicCache` copies every layer's whole cache each step to
append one token, which at 16 rows took about a quarter of a CPU decode step.

Each row's text is what plain greedy `model.generate` gives for it: the same forward (same position
ids from the attention mask, the same `logits_to_keep=1`, a `DynamicCache`), argmax over float32
logits, the same EOS ids, the same stop test as `StopAtStrings`. A row's arithmetic is not bitwise
the same, though: its batch companions and its left padding change as rows come and go, and a matmul's
rounding can depend on the batch shape. Greedy paths only move on near-ties; the benchmark counts
identical outputs against plain `generate` at the same batch size and `tests/test_generation.py`
checks equality on tiny-llama. Where the model's generation config asks for logits processors, a
cache that is not plain per-layer key/value tensors, or ZeRO-3 synced GPUs, `usable` says no and
`generate` keeps the plain path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, cast

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

PROCESSOR_SETTINGS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
                      "bad_words_ids": None, "min_length": 0, "min_new_tokens": None, "suppress_tokens": None,
                      "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
                      "sequence_bias": None, "exponential_decay_length_penalty": None}
"""Generation-config settings that add a logits processor to greedy `generate`, at their inactive values
(transformers 5 leaves them None when unset)."""


def usable(model, synced_gpus: bool) -> bool:
    """Whether `greedy_pool` reproduces the model's greedy `generate` (else: use `generate`).

    Under ZeRO-3 with several ranks every rank must call forward until all ranks are done, and each
    rank's batch width would differ; `generate(synced_gpus=True)` handles that, so it keeps it."""

    if synced_gpus or model.config.is_encoder_decoder or not transformers_supported():
        return False  # transformers < 5.24 ignores `cache=` and would decode wrongly
    config = model.generation_config
    if any(getattr(config, key, None) not in (None, default, [], ()) for key, default in PROCESSOR_SETTINGS.items()):
        return False
    if getattr(config, "cache_implementation", None) not in (None, "dynamic"):
        return False
    # Sliding-window or linear-attention layers keep state that cannot be padded or row-indexed as below.
    layers = DynamicCache(config=model.config.get_text_config(decoder=True)).layers
    return all(type(layer) is DynamicLayer for layer in layers)


@dataclass
class Pool:
    """The rows being generated: one per prompt in flight, all of them left-padded to one width."""

    prompt_index: list[int] = field(default_factory=list)
    """Which prompt each row answers."""
    tokens: list[list[int]] = field(default_factory=list)
    """Each row's generated tokens so far."""
    attention_mask: torch.Tensor | None = None
    """(rows, width): 0 over left padding, 1 over prompt and generated tokens already in the cache."""
    next_position: torch.Tensor | None = None
    """(rows,): the position id of each row's next token (its count of real tokens so far)."""
    cache: DynamicCache | None = None
    """The rows' `DynamicCache` of `GrowingLayer`s: per layer, keys and values (rows, heads, width, head dim)."""

    def in_flight(self) -> tuple[torch.Tensor, torch.Tensor, list[GrowingLayer]]:
        """(attention_mask, next_position, cache layers) of the rows in flight (`join` sets all three at once)."""
        if self.attention_mask is None or self.next_position is None or self.cache is None:
            raise RuntimeError("generation pool: no rows in flight")
        return self.attention_mask, self.next_position, growing_layers(self.cache)

    def clear(self) -> None:
        """Nothing in flight: the next prompts start a fresh cache, no padding carried over."""
        self.prompt_index, self.tokens = [], []
        self.attention_mask = self.next_position = self.cache = None


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views of buffers with room to grow: a step writes its
    token in place instead of copying the whole cache (`torch.cat`), and a full buffer doubles.

    Attention sees the same tensors, values and length as with `DynamicLayer` (a strided view instead of
    a fresh contiguous tensor), so each forward computes what it would have."""

    keys: torch.Tensor  # set on the first update, before anything reads them
    values: torch.Tensor

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.set(key_states, value_states)
            return self.keys, self.values
        length, added = self.keys.shape[-2], key_states.shape[-2]
        if length + added > self.key_buffer.shape[-2]:
            self.set(self.keys, self.values, room=max(length, added))
        self.key_buffer[:, :, length : length + added] = key_states
        self.value_buffer[:, :, length : length + added] = value_states
        self.keys = self.key_buffer[:, :, : length + added]
        self.values = self.value_buffer[:, :, : length + added]
        return self.keys, self.values

    def set(self, keys: torch.Tensor, values: torch.Tensor, room: int = 64) -> None:
        """Hold exactly these keys and values, in new buffers with `room` free positions after them."""
        shape = list(keys.shape)
        shape[-2] += room
        self.key_buffer, self.value_buffer = keys.new_empty(shape), values.new_empty(shape)
        width = keys.shape[-2]
        self.key_buffer[:, :, :width] = keys
        self.value_buffer[:, :, :width] = values
        self.keys, self.values = self.key_buffer[:, :, :width], self.value_buffer[:, :, :width]


def eos_ids(model, tokenizer) -> set[int]:
    """The token ids that end a row in `generate`: the generation config's EOS, else the tokenizer's."""
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


def forward(model, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
    """One forward as `generate` makes it; returns each row's next token (argmax of float32 logits)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                   use_cache=True, logits_to_keep=1, return_dict=True).logits
    return torch.argmax(logits[:, -1].to(dtype=torch.float32), dim=-1)


def growing_layers(cache: DynamicCache) -> list[GrowingLayer]:
    """The cache's layers, which `prefill` made `GrowingLayer`s (DynamicCache types them as any layer)."""
    return cast(list[GrowingLayer], cache.layers)


def prefill(model, tokenizer, prompts: list[str], device) -> tuple[torch.Tensor, torch.Tensor, DynamicCache]:
    """Left-padded prompts through the model: (first tokens, attention mask, cache)."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    cache.layers = [GrowingLayer() for _ in cache.layers]  # `usable` checked they are all plain DynamicLayers
    return forward(model, ids, mask, positions, cache), mask, cache


def left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`tensor` with zeros put before it along `dim` up to `width` (masked out, so never attended)."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def join(pool: Pool, mask: torch.Tensor, cache: DynamicCache, first: torch.Tensor, indices: list[int]) -> None:
    """Add freshly prefilled rows to the pool, padding whichever side is narrower on the left."""
    pool.prompt_index += indices
    pool.tokens += [[token] for token in first.tolist()]
    positions = mask.long().sum(-1)
    if pool.cache is None:
        pool.attention_mask, pool.next_position, pool.cache = mask, positions, cache
        return
    pool_mask, pool_positions, pool_layers = pool.in_flight()
    width = max(mask.shape[1], pool_mask.shape[1])
    pool.attention_mask = torch.cat([left_pad(pool_mask, width, 1), left_pad(mask, width, 1)])
    pool.next_position = torch.cat([pool_positions, positions])
    for old, new in zip(pool_layers, growing_layers(cache)):
        old.set(torch.cat([left_pad(old.keys, width, 2), left_pad(new.keys, width, 2)]),
                torch.cat([left_pad(old.values, width, 2), left_pad(new.values, width, 2)]))


def keep(pool: Pool, rows: list[int]) -> None:
    """Keep only `rows` of the pool, and drop leading columns that are padding in all of them."""
    if not rows:
        pool.clear()
        return
    pool_mask, pool_positions, pool_layers = pool.in_flight()
    index = torch.tensor(rows, device=pool_mask.device)
    mask = pool_mask.index_select(0, index)
    start = int(mask.any(0).long().argmax())
    pool.attention_mask, pool.next_position = mask[:, start:], pool_positions.index_select(0, index)
    pool.prompt_index = [pool.prompt_index[r] for r in rows]
    pool.tokens = [pool.tokens[r] for r in rows]
    for layer in pool_layers:
        layer.set(layer.keys.index_select(0, index)[:, :, start:], layer.values.index_select(0, index)[:, :, start:])


def finished(tokenizer, tokens: list[int], eos: set[int], stop: Sequence[str], max_new_tokens: int) -> bool:
    """A row is done at EOS, at `max_new_tokens`, or once its text holds a stop string (`StopAtStrings`' test)."""
    if tokens[-1] in eos or len(tokens) >= max_new_tokens:
        return True
    return bool(stop) and any(s in tokenizer.decode(tokens, skip_special_tokens=True) for s in stop)


@torch.no_grad()
def greedy_pool(model, tokenizer, prompts: Sequence[str], batch_size: int, max_new_tokens: int,
                stop: Sequence[str] = ()) -> list[str]:
    """Each prompt's greedy continuation (decoded, special tokens skipped, not yet cut at `stop`);
    at most `batch_size` rows in flight, a finished row's place taken by the next waiting prompt."""
    device = next(model.parameters()).device
    eos, waiting = eos_ids(model, tokenizer), list(range(len(prompts)))
    texts: list[str] = [""] * len(prompts)
    pool = Pool()
    while waiting or pool.prompt_index:
        free = batch_size - len(pool.prompt_index)
        if waiting and free > 0:
            entering, waiting = waiting[:free], waiting[free:]
            first, mask, cache = prefill(model, tokenizer, [prompts[i] for i in entering], device)
            join(pool, mask, cache, first, entering)
        done = {r for r, tokens in enumerate(pool.tokens) if finished(tokenizer, tokens, eos, stop, max_new_tokens)}
        for r in done:
            texts[pool.prompt_index[r]] = tokenizer.decode(pool.tokens[r], skip_special_tokens=True)
        if done:
            keep(pool, [r for r in range(len(pool.tokens)) if r not in done])
        if not pool.prompt_index or (waiting and len(pool.prompt_index) < batch_size):
            continue  # refill before the next step: a decode step costs little more for more rows
        step(model, pool)
    return texts


def step(model, pool: Pool) -> None:
    """One decode step of every row in the pool: its last token in, its next token out."""
    mask, positions, _ = pool.in_flight()
    last = torch.tensor([tokens[-1] for tokens in pool.tokens], device=mask.device)
    pool.attention_mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    following = forward(model, last[:, None], pool.attention_mask, positions[:, None], pool.cache)
    pool.next_position = positions + 1
    for tokens, token in zip(pool.tokens, following.tolist()):
        tokens.append(token)


MIN_TRANSFORMERS = "5.24"
"""The oldest transformers the harness runs on: 5.24 renamed the models' `past_key_values` argument to
`cache`, which the generation pool passes; older versions take it into **kwargs, ignore it and
decode wrongly without an error (pyproject's floor is the same)."""


def transformers_supported(version: Optional[str] = None) -> bool:
    """Whether `version` (default: the installed transformers) is at least MIN_TRANSFORMERS."""
    import transformers
    from packaging.version import Version

    return Version(version or transformers.__version__).release[:2] >= Version(MIN_TRANSFORMERS).release[:2]
