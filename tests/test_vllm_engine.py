"""vLLM as the evaluation engine (`disha_bench/evaluation/vllm_engine.py`): the merged checkpoint it loads,
the checks that refuse it where it cannot run, and - on a CUDA machine with the `vllm` extra - the
generation itself.

    python3 -m pytest -q tests/test_vllm_engine.py

The merged export runs here for real (tiny-llama, PEFT's own merges of LoRA, DoRA, Bone and Bat);
generating through vLLM needs CUDA and `pip install 'disha-bench[vllm]'`, and is skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch
from test_generation import PROMPTS, randomise_adapter
from test_preflight import _assert_refused, _cli, _write_suite
from transformers import AutoModelForCausalLM

from disha_bench import methods, models
from disha_bench.evaluation.vllm_engine import RANK_VARIABLES, child_environment, export_merged
from disha_bench.running import spawn
from disha_bench.tasks.base import EvalSettings, generate

VLLM_AND_CUDA = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.mark.parametrize("method,params", [("lora", {"r": 4}), ("dora", {"r": 4}), ("bone", {"r": 8}),
                                           ("bat", {"r": 8})])
def test_merged_checkpoint_computes_what_the_adapted_model_computes(tmp_path, method, params):
    tokenizer = models.load_tokenizer("tiny-llama")
    model = methods.apply(models.load_model("tiny-llama", "causal_lm"), method, **params)
    randomise_adapter(model)
    before = {key: tensor.clone() for key, tensor in model.state_dict().items()}

    export_merged(model, tokenizer, str(tmp_path))

    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before), "export changed the trained model"
    assert not any(getattr(module, "merged", False) for module in model.modules())
    merged = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    plain = models.load_model("tiny-llama", "causal_lm")
    assert sorted(merged.state_dict()) == sorted(plain.state_dict())  # the base architecture's names only
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        adapted, folded, base = (m.eval()(**inputs).logits for m in (model, merged, plain))
    torch.testing.assert_close(folded, adapted, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(base, adapted, atol=1e-2)  # the adapter mattered, so the merge was tested


def test_child_sees_only_its_gpu_and_no_rank(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("MASTER_ADDR", "node0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    env = child_environment(torch.device("cuda", 2))
    assert env["CUDA_VISIBLE_DEVICES"] == "6"
    assert not set(RANK_VARIABLES) & set(env)
    assert child_environment(torch.device("cpu"))["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"  # nothing to narrow


def _vllm_suite(path, **training):
    return _write_suite(path, tasks=[{"name": "gsm8k", "eval_limit": 2}], evaluation={"engine": "vllm"},
                        training={"max_steps": 1, "batch_size": 2, **training})


def test_validate_refuses_vllm_under_zero3(offline_env, tmp_path):
    suite = _vllm_suite(tmp_path / "s.yaml", zero_stage=3)
    _assert_refused(_cli(["validate", str(suite)], offline_env, tmp_path), tmp_path / "results",
                    "evaluation.engine", "ZeRO-3")


@pytest.mark.needs_data("gsm8k")  # `run` resolves the task's data before the engine check
@pytest.mark.skipif(VLLM_AND_CUDA, reason="this machine can run vLLM: nothing to refuse")
def test_run_refuses_vllm_where_it_cannot_run_before_any_run_starts(offline_env, tmp_path):
    suite = _vllm_suite(tmp_path / "s.yaml")
    assert _cli(["validate", str(suite)], offline_env, tmp_path).returncode == 0  # the file is fine, the machine is not
    out = tmp_path / "results"
    err = _assert_refused(_cli(["run", str(suite), "--out", str(out)], offline_env, tmp_path), out, "evaluation.engine")
    assert ("pip install 'disha-bench[vllm]'" in err) != ("CUDA" in err)


@pytest.mark.needs_data("gsm8k")
def test_run_refuses_a_vllm_interpreter_that_cannot_import_vllm(offline_env, tmp_path):
    python = tmp_path / "no-vllm-python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import vllm_is_not_here'\n")
    python.chmod(0o755)
    out = tmp_path / "results"
    for interpreter, fragment in ((tmp_path / "missing", "not an executable file"), (python, "cannot import vllm")):
        suite = _write_suite(tmp_path / "s.yaml", tasks=[{"name": "gsm8k", "eval_limit": 2}],
                             evaluation={"engine": "vllm", "vllm_python": str(interpreter)})
        _assert_refused(_cli(["run", str(suite), "--out", str(out)], offline_env, tmp_path), out,
                        "evaluation.vllm_python", fragment)


@pytest.mark.skipif(not VLLM_AND_CUDA, reason="needs CUDA and the vllm extra")
def test_vllm_generates_what_greedy_transformers_generates_on_the_merged_model():
    tokenizer = models.load_tokenizer("smollm2-135m")
    model = methods.apply(models.load_model("smollm2-135m", "causal_lm"), "bone", r=16).to("cuda")
    settings = EvalSettings(batch_size=8, max_new_tokens=32)
    hf = generate(model, tokenizer, PROMPTS, settings, stop=["\n\n"])
    vllm = generate(model, tokenizer, PROMPTS, EvalSettings(batch_size=8, max_new_tokens=32, engine="vllm"),
                    stop=["\n\n"])
    assert sum(a == b for a, b in zip(hf, vllm)) >= len(PROMPTS) - 1  # a near-tie may take another path


CHILD_UNDER_TORCHRUN = r"""
import json, os, sys, torch
from disha_bench.evaluation.vllm_engine import run_child
out = os.path.join(sys.argv[1], f"child-env-{os.environ['RANK']}.json")
run_child(os.path.join(sys.argv[1], "request.json"), out, torch.device("cpu"), python=sys.argv[2])
"""


def test_the_vllm_child_under_a_real_torchrun_sees_no_launcher_and_runs_in_its_own_interpreter(tmp_path):
    """Under torchrun the child must not see TORCHELASTIC_USE_AGENT_STORE and the rank variables (vLLM's
    own process group then waits for the training job's store and never connects); it runs in the
    interpreter of vLLM's environment (`evaluation.vllm_python`), which here records what it was given."""
    import json
    import subprocess
    import sys


    interpreter = tmp_path / "vllm-python"
    interpreter.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import json, os, sys; "
                           "json.dump({\"env\": dict(os.environ), \"argv\": sys.argv}, open(sys.argv[-1], \"w\"))' \"$@\"\n")
    interpreter.chmod(0o755)
    script = tmp_path / "child.py"
    script.write_text(CHILD_UNDER_TORCHRUN)
    command = spawn.launch_command("unused", [], 2, None)[:-2]  # torchrun's own arguments
    proc = subprocess.run([*command, str(script), str(tmp_path), str(interpreter)], capture_output=True, text=True,
                          timeout=300, env=spawn.launch_env(2))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"child-env-{rank}.json").read_text())
        leaked = [k for k in seen["env"] if k in RANK_VARIABLES or k.startswith(("TORCHELASTIC_", "TORCH_ELASTIC_"))]
        assert not leaked, leaked
        assert seen["argv"][1].endswith("disha_bench/evaluation/vllm_engine.py")  # run as a script: no harness imports
        assert seen["env"]["PATH"] == os.environ["PATH"]  # the rest of the environment is kept
