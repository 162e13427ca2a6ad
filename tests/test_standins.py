"""The 7B path on CPU: a random 1-layer Llama with Llama-2-7B's layer shapes (`llama2-7b-shape-1l`)
through `disha-bench run` on two ranks (torchrun, gloo) in fp32, under ZeRO-2 and ZeRO-3, with
gradient checkpointing and accumulation: trained, saved, reloaded by plain PEFT, merged for vLLM.

    pytest -m slow tests/test_standins.py
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from disha_bench import models, tasks
from disha_bench.contracts.results import load_results
from disha_bench.tasks.base import collate
from disha_bench.training.heldout import run_heldout_loss

pytestmark = pytest.mark.slow
STANDIN = "llama2-7b-shape-1l"


def test_the_standin_has_llama2_7b_layer_shapes():
    config = yaml.safe_load((models._llama2_7b_shape_dir(1) / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"], config["num_attention_heads"]) == (4096, 11008, 32)
    assert config["num_hidden_layers"] == 1 and {"llama2-7b-shape-2l", "llama2-7b-shape-4l"} <= set(models.PACKAGED)


@pytest.mark.parametrize("stage,method", [(2, {"name": "bone", "r": 64}), (3, {"name": "bat", "r": 64})])
def test_the_7b_shaped_standin_trains_saves_reloads_and_merges_on_two_ranks(tmp_path, stage, method):
    suite = {
        "name": f"standin-z{stage}", "model": {"name": STANDIN},
        "tasks": [{"name": "synthetic-arith", "train_limit": 8, "eval_limit": 2}],
        "methods": [method],
        "training": {"max_steps": 2, "lr": 1.0e-3, "batch_size": 1, "grad_accum": 2, "max_length": 32, "zero_stage": stage,
                     "gradient_checkpointing": True, "precision": "fp32",
                     "deepspeed": {"zero_optimization": {"stage3_param_persistence_threshold": 0}} if stage == 3 else {}},
        "evaluation": {"enabled": False, "heldout_examples": 2},
        "analysis": {"unadapted": False}, "output": {"report": False, "save_adapter": True},
    }
    path, out = tmp_path / "suite.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(suite))
    proc = subprocess.run([sys.executable, "-m", "disha_bench.cli", "run", str(path), "--out", str(out), "--nproc", "2"],
                          capture_output=True, text=True, timeout=1800)
    logs = "".join(p.read_text()[-1500:] for p in (out / ".runs").glob("*.log")) if (out / ".runs").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + logs
    from peft import PeftModel

    from disha_bench.evaluation.vllm_engine import export_merged

    tokenizer = models.load_tokenizer(STANDIN)
    for result in load_results(out):
        assert result.run.status == "complete" and result.run.world_size == 2, result.run.error
        assert len(result.training.steps) == 2 and result.training.deepspeed_config["gradient_accumulation_steps"] == 2
        adapted = PeftModel.from_pretrained(models.load_model(STANDIN, "causal_lm"), out / "adapters" / result.run.run_id)
        assert run_heldout_loss(adapted, result) == pytest.approx(result.heldout.points[-1].loss, rel=1e-4)
        merged_dir = tmp_path / f"merged-{result.run.method}"
        export_merged(adapted, tokenizer, str(merged_dir))  # what the vLLM engine loads
        merged = type(adapted.get_base_model()).from_pretrained(merged_dir)
        task = tasks.get("synthetic-arith")
        _, records = task.load({**task.options, "name": "synthetic-arith", "train_limit": 8, "eval_limit": 2, "sample_seed": 0}, None)
        batch = collate([task.encode(r, tokenizer, 32) for r in records], tokenizer.pad_token_id)
        with torch.no_grad():
            torch.testing.assert_close(merged.eval()(**batch).logits, adapted.eval()(**batch).logits, atol=1e-4, rtol=1e-4)
        del adapted, merged
