"""Analytic trainable counts and parameter matching between methods (no adapter is built).

``resolve_matching`` answers: "give method X the rank that makes its trainable count closest to
method Y's on this model and these target modules" (the paper matches LoRA r=36 against Bone r=64 on
Llama2-7B: 89.9M against 87.0M). Counts come from module shapes and each method's per-module formula.
"""

from __future__ import annotations

from collections import Counter

from torch import nn

from disha_bench.errors import UserError, did_you_mean
from disha_bench.methods.base import (
    REGISTRY,
    MethodSpec,
    count_all,
    head_param_count,
    join_key,
    resolve_targets,
    validate_params,
)
from disha_bench.methods.params import resolve_alpha


def shape_histogram(model: nn.Module, params: dict) -> Counter:
    """Counter {(in_features, out_features): number of target modules} for these target_modules."""
    return Counter((i, o) for _, i, o in resolve_targets(model, params["target_modules"]))


def analytic_count(model: nn.Module, name: str, params: dict, shapes: Counter | None = None) -> int:
    """Trainable parameters method `name` with (validated) `params` will have on `model`, from shapes alone.

    Full fine-tuning: every parameter. Adapters: sum over target modules of the method's per-module
    count, plus the classification head (PEFT modules_to_save) for sequence-classification models.
    """
    spec: MethodSpec = REGISTRY.get(name)
    if spec.module_count is None:
        return count_all(model)
    shapes = shape_histogram(model, params) if shapes is None else shapes
    return sum(n * spec.module_count(i, o, params) for (i, o), n in shapes.items()) + head_param_count(model)


def _valid_for_all(spec: MethodSpec, shapes: Counter, params: dict) -> bool:
    return spec.check_module is None or all(spec.check_module(i, o, params) is None for (i, o) in shapes)


def _matchable(label: str, name: str, target: str, labels: list[str], visiting: list[str], *,
               file: str | None, key: str) -> MethodSpec:
    """The spec of method `name` after checking that `label` may match `target`: a known label, no
    cycle (`visiting` is the chain being resolved), and a method with a rank to choose."""
    if target not in labels:
        others = [lab for lab in labels if lab != label]
        raise UserError(f"'{target}' is not a method label in this suite; {did_you_mean(target, others)}", file=file, key=key)
    if target == label or target in visiting:
        chain = " -> ".join(visiting + [target])
        raise UserError(f"match_params forms a cycle: {chain}", file=file, key=key)
    spec = REGISTRY.get(name)
    if spec.rank is None:
        raise UserError(f"method '{name}' has no rank to match", file=file, key=key)
    return spec


def _closest_rank(model: nn.Module, name: str, base: dict, target_count: int, *,
                  file: str | None, key: str | None) -> tuple[int, int]:
    """The rank (and the count it gives) of method `name` whose trainable count is closest to
    `target_count`, over the ranks that suit every target module; ties go to the smaller rank."""
    spec = REGISTRY.get(name)
    shapes = shape_histogram(model, base)
    if not shapes:
        raise UserError(f"target_modules {base['target_modules']!r} match no linear module of the model",
                        file=file, key=join_key(key, "target_modules"))
    head = head_param_count(model)
    best = None
    top = max(max(i, o) for i, o in shapes)
    for r in range(1, top + 1):
        trial = dict(base, **{spec.rank: r})
        if not _valid_for_all(spec, shapes, trial):
            continue
        count = sum(n * spec.module_count(i, o, trial) for (i, o), n in shapes.items()) + head
        gap = abs(count - target_count)
        if best is None or gap < best[0]:
            best = (gap, r, count)
    if best is None:
        raise UserError(f"no value of '{spec.rank}' suits every target module of method '{name}' "
                        f"(shapes {sorted(shapes)})", file=file, key=join_key(key, "match_params"))
    return best[1], best[2]


def resolve_matching(
    model: nn.Module,
    methods_in_suite: dict,
    *,
    file: str | None = None,
    key: str | None = None,
) -> dict[str, dict]:
    """Choose the rank of every method whose params set ``match_params: <other label>``.

    methods_in_suite: {label: (method name, params)}. Chains (a -> b -> c) resolve in order; cycles,
    unknown labels and methods without a rank are UserErrors (key ``<key>.<label>.match_params``).

    Returns, for each matched label only:
      {"param": "r", "value": chosen r, "count": own analytic trainable count,
       "target": the other label, "target_count": its count,
       "params": this method's params with defaults, match_params removed, r set and a
                 relative alpha (`2r`) made numeric}
    The chosen r minimises |count - target_count| over the r that suit every target module
    (Bat: divides every in/out; Bone: r <= in; ...); ties go to the smaller r.
    """
    validated: dict[str, tuple[str, dict]] = {}
    for label, entry in methods_in_suite.items():
        name, params = entry
        validated[label] = (name, validate_params(name, params, file=file, key=join_key(key, label)))

    resolved: dict[str, dict] = {}  # label -> final params (all labels)
    result: dict[str, dict] = {}
    visiting: list[str] = []

    def resolve(label: str) -> dict:
        if label in resolved:
            return resolved[label]
        name, params = validated[label]
        target = params.get("match_params")
        if target is None:
            resolved[label] = resolve_alpha(params)
            return resolved[label]
        spec = _matchable(label, name, target, list(validated), visiting, file=file,
                          key=join_key(join_key(key, label), "match_params"))
        visiting.append(label)
        target_params = resolve(target)
        visiting.pop()
        target_name = validated[target][0]
        target_count = analytic_count(model, target_name, target_params)

        base = {k: v for k, v in params.items() if k != "match_params"}
        r, count = _closest_rank(model, name, base, target_count, file=file, key=join_key(key, label))
        final = resolve_alpha(dict(base, **{spec.rank: r}))  # `alpha: 2r` follows the chosen r
        resolved[label] = final
        result[label] = {"param": spec.rank, "value": r, "count": count, "target": target,
                         "target_count": target_count, "params": final}
        return final

    for label in validated:
        resolve(label)
    return result
