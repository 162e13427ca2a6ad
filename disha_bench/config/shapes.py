"""Layer widths a method's rank must fit, checked at `validate` from the model's configuration alone.

    disha-bench validate suites/smoke.yaml --set methods.2.r=15     # Bat: 128-wide layers, r=15

Bat needs every adapted layer's in and out features divisible by r, Bone needs r <= in_features:
`run` found out only after loading the model. Here the model is built on PyTorch's meta device from
its configuration (no weight is read or allocated), wherever that configuration is known without a
download (`models.architecture_config`: packaged models, local directories, hub ids in the cache).
Elsewhere the check is left to `run`, which makes it on the loaded model as before. Methods whose
rank is chosen by `match_params` are checked at run time too: their r is not known yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from disha_bench.config.suite import Suite


def check_layer_widths(suite: Suite, file: str) -> None:
    """UserError naming the method entry, the module and the width when a rank does not fit."""
    from disha_bench import methods, models, tasks

    checked = [(i, entry) for i, entry in enumerate(suite.methods)
               if methods.get(entry.name).rank_field is not None
               and (entry.model_extra or {}).get("match_params") is None]
    if not checked:
        return
    config = models.architecture_config(suite.model.name)
    if config is None:
        return
    for head in sorted({tasks.REGISTRY.get(t.name).head for t in suite.tasks}):
        model = _meta_model(config, head)
        for i, entry in checked:
            key = f"methods[{i}]"
            methods.parse(entry.name, dict(entry.model_extra or {}), file=file, key=key).check_shapes(model, file=file, key=key)


def _meta_model(config: Any, head: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    loader = AutoModelForCausalLM if head == "causal_lm" else AutoModelForSequenceClassification
    with torch.device("meta"):
        return loader.from_config(config)
