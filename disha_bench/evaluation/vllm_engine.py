"""vLLM as the generation engine of evaluation, on GPUs: the trained model with its adapters folded in.

    pip install 'disha-bench[vllm]'        # then in the suite:   evaluation: {engine: vllm}
    python -m pytest -q tests/test_vllm_engine.py

`generate` in `tasks/base.py` comes here when a suite sets `evaluation.engine: vllm`; prompts, stop
strings and scoring stay the task's own, only the decoding moves. The steps:

1. `export_merged` writes the trained model as a plain Hugging Face checkpoint with every adapter
   folded into its base weight by PEFT's own `merge` (LoRA and its variants, DoRA, Bone, Bat), one
   layer at a time; each base weight is then restored bitwise, so the model in memory is unchanged.
2. A child process (this file run as a script, by `evaluation.vllm_python` - the interpreter of
   vLLM's own environment - or by this one) loads it in vLLM on this rank's GPU and decodes greedily,
   stopping at the same stop strings.

Why a child process: vLLM sets up its own CUDA memory pool and, for tensor parallelism, its own
process group, while the training process holds DeepSpeed's. The child sees only this rank's GPU and
none of the launcher's rank or agent variables (TORCHELASTIC_*: under torchrun they made the child's
process group wait for the training job's store forever); `evaluation.vllm_gpu_memory` is the share of that GPU it may
take beside the trained model, which stays resident in the parent.

Greedy vLLM and greedy transformers agree up to kernel rounding (near-ties can take another path).
Preflight (`running/preflight.py`) refuses the engine where it cannot run: no CUDA, vLLM not installed;
`validate` refuses it under ZeRO-3, whose ranks each hold only a shard of the weights to merge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Sequence

import torch

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                  "ROLE_NAME", "ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "CROSS_RANK",
                  "CROSS_SIZE", "OMP_NUM_THREADS")
"""The launcher's variables: a child that saw them would take itself for a rank of the training job
(OMP_NUM_THREADS: torchrun's one thread per rank, not the child's)."""
LAUNCHER_PREFIXES = ("TORCHELASTIC_", "TORCH_ELASTIC_")
"""torchrun's agent settings: with TORCHELASTIC_USE_AGENT_STORE the child's own process group waits
for the training job's store and never connects, while ranks 1-7 wait for rank 0."""


def merged_weights(model) -> dict[str, torch.Tensor]:
    """Each adapted layer's base weight with its adapter merged (CPU copies, keyed by layer name);
    the layers themselves are left exactly as they were."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = {}
    with torch.no_grad():
        for name, layer in model.get_base_model().named_modules():
            if not isinstance(layer, BaseTunerLayer):
                continue
            weight: torch.Tensor = getattr(layer.get_base_layer(), "weight")  # a Linear's; nn.Module types it Tensor | Module
            original = weight.detach().clone()
            layer.merge()
            merged[name] = weight.detach().to("cpu", copy=True)
            weight.copy_(original)  # bitwise; PEFT's unmerge would invert the merge in floating point
            layer.merged_adapters = []
    return merged


def plain_state_dict(model) -> dict[str, torch.Tensor]:
    """The PEFT model's weights under the base architecture's own names, adapters merged, adapter
    parameters left out: `q_proj.base_layer.weight` becomes `q_proj.weight`."""
    merged = merged_weights(model)
    state = {}
    for key, tensor in model.get_base_model().state_dict().items():
        owner = max((name for name in merged if key.startswith(name + ".")), key=len, default=None)
        if owner is None:
            state[key] = tensor
            continue
        rest = key[len(owner) + 1 :]
        if rest.startswith("base_layer."):
            plain = f"{owner}.{rest[len('base_layer.'):]}"
            state[plain] = merged[owner] if plain == f"{owner}.weight" else tensor
    return state


def export_merged(model, tokenizer, directory: str) -> None:
    """A checkpoint `AutoModelForCausalLM.from_pretrained` (and vLLM) loads: config, weights with the
    adapters merged, tokenizer."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        # getattr: a PreTrainedModel's method, which PEFT's nn.Module return type hides
        getattr(model.get_base_model(), "save_pretrained")(directory, state_dict=plain_state_dict(model))
    else:  # full fine-tuning: the weights are the model's own
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def child_environment(device: torch.device) -> dict[str, str]:
    """This process's environment for the vLLM child: no rank or launcher variables, only this rank's GPU visible."""
    env = {key: value for key, value in os.environ.items()
           if key not in RANK_VARIABLES and not key.startswith(LAUNCHER_PREFIXES)}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        env["CUDA_VISIBLE_DEVICES"] = visible.split(",")[index] if visible else str(index)
    return env


def run_child(request_path: str, out_path: str, device: torch.device, python: str | None = None) -> None:
    """Start the vLLM child on REQUEST -> OUT and wait for it. `python`: the interpreter of vLLM's own
    environment (null: this one); this file runs as a script there, so the child imports only the
    standard library, torch and vLLM, not the harness."""
    child = subprocess.run([python or sys.executable, os.path.abspath(__file__), request_path, out_path],
                           env=child_environment(device))
    if child.returncode != 0:
        raise RuntimeError(f"vLLM generation exited with code {child.returncode} (its output is above)")


def generate_with_vllm(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str],
                       gpu_memory: float, python: str | None = None) -> list[str]:
    """Each prompt's greedy continuation from vLLM on the merged model (decoded, special tokens skipped)."""
    parameter = next(model.parameters())
    longest = max((len(ids) for ids in tokenizer(list(prompts))["input_ids"]), default=0)
    with tempfile.TemporaryDirectory(prefix="disha-bench-vllm-") as work:
        export_merged(model, tokenizer, os.path.join(work, "model"))
        request = {"model": os.path.join(work, "model"), "prompts": list(prompts), "stop": list(stop),
                   "max_new_tokens": max_new_tokens, "max_model_len": longest + max_new_tokens,
                   "dtype": str(parameter.dtype).removeprefix("torch."), "gpu_memory_utilization": gpu_memory}
        request_path, out_path = os.path.join(work, "request.json"), os.path.join(work, "texts.json")
        with open(request_path, "w") as f:
            json.dump(request, f)
        run_child(request_path, out_path, parameter.device, python)
        with open(out_path) as f:
            return json.load(f)


def main(argv: Sequence[str]) -> None:
    """The child: REQUEST (json written by `generate_with_vllm`) in, the texts (json list) to OUT."""
    from vllm import LLM, SamplingParams

    request_path, out_path = argv
    with open(request_path) as f:
        request = json.load(f)
    # generation_config="vllm": vLLM's neutral defaults, not the checkpoint's sampling settings, as in
    # `generation.usable` (greedy with no logits processor)
    llm = LLM(model=request["model"], dtype=request["dtype"], seed=0, max_model_len=request["max_model_len"],
              gpu_memory_utilization=request["gpu_memory_utilization"], generation_config="vllm")
    params = SamplingParams(temperature=0.0, max_tokens=request["max_new_tokens"], stop=request["stop"] or None,
                            skip_special_tokens=True)
    texts = [output.outputs[0].text for output in llm.generate(request["prompts"], params)]
    with open(out_path, "w") as f:
        json.dump(texts, f)


if __name__ == "__main__":
    main(sys.argv[1:])
