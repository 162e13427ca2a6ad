"""Per-GPU peak memory and step time of a method, from first principles: what `plan` prints per method.

    disha-bench plan suites/nlg.yaml --nproc 8

The peak of one rank, for a micro-batch of `tokens` = per-rank batch x sequence length (the suite's
max_length: every row at full length, an upper bound):

- **weights**: every parameter in the model's dtype, divided over the ranks under ZeRO-3;
- **optimizer state**: for every trainable parameter an fp32 master copy and Adam's two moments
  (12 bytes under bf16/fp16 mixed precision, 8 in fp32), divided over the ranks under ZeRO >= 1;
- **ZeRO-3's buffers**: its reduce bucket (`reduce_bucket_size` elements in the model's dtype,
  allocated with the engine) and the parameters gathered for the modules in flight (the prefetch
  bucket and the largest layer);
- **activations**: what autograd keeps from forward to backward, traced for the model's architecture
  and the method (`activation_trace`, per token and decoder layer) x tokens x layers; with gradient
  checkpointing each layer keeps only its input (hidden x tokens) and one layer at a time its whole set;
- **the loss**: the logits in the model's dtype (held by the output), the fp32 log-probabilities the
  loss saves, and at the start of backward their fp32 gradient and its cast back: 2 + 4 + 4 + 2 bytes
  per logit in bf16 (8 + 4 + 4 + 4 in fp32); every position's logits, vocabulary wide.

ZeRO-1/2's contiguous gradient bucket does not add to that peak: measured on the H200 (the GPU check,
checkpointing + accumulation: peak 4,389 MB, below static + loss alone), the loss's transients are
gone when it fills. Validated against the GPU check's peaks in tests/test_memory_model.py.

Time per optimizer step = model FLOPs / (the device's dense bf16 rate x an assumed utilisation):
FLOPs per token 2N forward + 2N input gradients + 2T weight gradients (+ 2N recomputed forward with
checkpointing), N all parameters, T trainable ones. The utilisation is an assumption stated beside
the figure (`--mfu`), not a measurement: at batch 8 the harness measured 3-8% on the H200 (issue 23).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIB = 2**20
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
LOSS_BYTES_PER_LOGIT = {"bf16": 2 + 4 + 4 + 2, "fp16": 2 + 4 + 4 + 2, "fp32": 4 + 4 + 4 + 4}
ZERO3_PREFETCH_ELEMENTS = 50_000_000
"""DeepSpeed's stage3_prefetch_bucket_size default."""
DEFAULT_REDUCE_BUCKET = 500_000_000
"""DeepSpeed's reduce_bucket_size default (elements)."""


@dataclass(frozen=True)
class Setting:
    """Where and how the method trains: everything the peak depends on besides the model and method."""

    world: int
    zero_stage: int
    precision: str
    """bf16, fp16 or fp32 (the model's dtype under DeepSpeed's mixed precision)."""
    batch: int
    """Rows per micro-batch per rank."""
    seq: int
    """Tokens per row (padded)."""
    checkpointing: bool = False
    reduce_bucket: int = DEFAULT_REDUCE_BUCKET


@dataclass(frozen=True)
class Estimate:
    """One method's predicted peak on one rank (MiB) and the parts it adds up from."""

    weights: float
    optimizer: float
    zero_buffers: float
    activations: float
    loss: float
    params: int
    trainable: int
    flops_per_token: float

    @property
    def peak(self) -> float:
        return self.weights + self.optimizer + self.zero_buffers + self.activations + self.loss


def estimate(config: Any, params: int, trainable: int, saved_per_token_layer: float, setting: Setting) -> Estimate:
    """The peak of one rank for a model of `params` parameters (adapters included), `trainable` of them
    trained, whose decoder layers keep `saved_per_token_layer` bytes per token (activation_trace)."""
    width = BYTES[setting.precision]
    tokens = setting.batch * setting.seq
    layers, hidden = config.num_hidden_layers, config.hidden_size
    shard = setting.world if setting.zero_stage >= 1 else 1
    weights = params * width / (setting.world if setting.zero_stage == 3 else 1)
    optimizer = trainable * (12 if setting.precision != "fp32" else 8) / shard
    buffers = 0.0
    if setting.zero_stage == 3:
        largest_layer = (params - config.vocab_size * hidden) / layers
        buffers = (setting.reduce_bucket + ZERO3_PREFETCH_ELEMENTS + largest_layer) * width
    if setting.checkpointing:
        activations = tokens * (layers * hidden * width + saved_per_token_layer)
    else:
        activations = tokens * layers * saved_per_token_layer
    loss = tokens * config.vocab_size * LOSS_BYTES_PER_LOGIT[setting.precision]
    flops = 4 * params + 2 * trainable + (2 * params if setting.checkpointing else 0)
    return Estimate(weights / MIB, optimizer / MIB, buffers / MIB, activations / MIB, loss / MIB, params, trainable, flops)


def meta_model(config: Any):
    """The causal LM of `config` on PyTorch's meta device: shapes, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def counts(config: Any, method, model=None) -> tuple[int, int]:
    """(all parameters with the method's, trainable ones), from the configuration on the meta device."""
    from disha_bench.methods.base import count_all

    model = meta_model(config) if model is None else model
    trainable = method.expected_trainable(model)
    base = count_all(model)
    return (base if method.name == "full" else base + trainable), trainable


def step_seconds(estimate_: Estimate, tokens_per_step: int, device_flops: float, mfu: float) -> float:
    """Seconds per optimizer step at `mfu` of `device_flops` (FLOP/s)."""
    return estimate_.flops_per_token * tokens_per_step / (device_flops * mfu)
