"""`training.loss_weighting: token`: one mean over every supervised token of an optimizer step (HF
Trainer's and the DiSHA authors'), checked on a real DeepSpeed step against plain autograd.

    python -m pytest -q tests/test_loss_weighting.py
"""

from __future__ import annotations

import subprocess
import sys

import pytest

STEP = r"""
import copy, os, socket, sys, torch
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
from disha_bench.training import distributed
from disha_bench import methods, models
distributed.skip_cpu_shm_build()
import deepspeed
from disha_bench.config.suite import TrainingConfig
from disha_bench.tasks.base import collate, encode_prompt_answer
from disha_bench.training.ds_config import deepspeed_config
from disha_bench.training.loop import train_step
deepspeed.init_distributed(verbose=False)
weighting, lr = sys.argv[1], 0.1
torch.manual_seed(0)
tokenizer = models.load_tokenizer("tiny-llama")
model = methods.apply(models.load_model("tiny-llama", "causal_lm"), "lora", r=4)
with torch.no_grad():  # LoRA's B starts at zero: give both factors a gradient
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.normal_(0, 0.02)
reference = copy.deepcopy(model)
batches = [collate([encode_prompt_answer(tokenizer, "Q: add", " 4" * n, 64)], tokenizer.pad_token_id) for n in (1, 12)]
training = TrainingConfig(batch_size=1, grad_accum=2, grad_clip=None, loss_weighting=weighting)
optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(training, 1))
before = {n: p.detach().clone() for n, p in engine.module.named_parameters() if p.requires_grad}
log = train_step(engine, batches, 1, torch.device("cpu"), token_weighted=weighting == "token")
counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
losses = [reference(**b).loss for b in batches]
token_mean = sum(l * n for l, n in zip(losses, counts)) / sum(counts)
(token_mean if weighting == "token" else sum(losses) / 2).backward()
grads = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}
worst = max(float(((before[n] - p.detach()) / lr - grads[n]).abs().max() / grads[n].abs().max())
            for n, p in engine.module.named_parameters() if p.requires_grad)
print("result", weighting, repr(log.loss), repr(float(token_mean)), repr(float(sum(losses) / 2)), repr(worst), flush=True)
"""


@pytest.mark.parametrize("weighting", ["token", "micro_batch"])
def test_a_deepspeed_step_follows_the_loss_weighting(tmp_path, weighting):
    """Two micro-batches with 1 and 12 supervised tokens: the step's update is plain autograd's
    gradient of the token mean (or the mean of the micro-batch means), and the logged loss is that mean."""
    script = tmp_path / "step.py"
    script.write_text(STEP)
    proc = subprocess.run([sys.executable, str(script), weighting], capture_output=True, text=True, timeout=600)
    line = next((text for text in proc.stdout.splitlines() if text.startswith("result ")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-3000:]
    _, _, logged, token_mean, batch_mean, worst = line.split()
    expected = float(token_mean) if weighting == "token" else float(batch_mean)
    assert float(logged) == pytest.approx(expected, rel=1e-5)
    assert float(token_mean) != pytest.approx(float(batch_mean), rel=1e-3)  # the two weightings differ here
    assert float(worst) < 1e-3  # the update is the reference gradient, relative to its largest entry
