"""Parameter matching between methods, from analytic counts (no adapter is built).

``resolve_matching`` answers: "give method X the rank that makes its trainable count closest to
method Y's on this model and these target modules" (the paper matches LoRA r=36 against Bone r=64 on
Llama2-7B: 89.9M against 87.0M). Counts come from module shapes and each method's per-module count.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch import nn

from disha_bench.core.errors import UserError, did_you_mean
from disha_bench.methods.base import Method, head_param_count, join_key


def _shape_count(method: Method, shapes: Counter, head: int) -> int:
    return sum(n * method.module_count(i, o) for (i, o), n in shapes.items()) + head


def _matchable(label: str, method: Method, target: str, labels: list[str], visiting: list[str], *,
               file: str | None, key: str) -> None:
    """Check that `label` may match `target`: a known label, no cycle (`visiting` is the chain being
    resolved), and a method with a rank to choose."""
    if target not in labels:
        others = [lab for lab in labels if lab != label]
        raise UserError(f"'{target}' is not a method label in this suite; {did_you_mean(target, others)}", file=file, key=key)
    if target == label or target in visiting:
        chain = " -> ".join(visiting + [target])
        raise UserError(f"match_params forms a cycle: {chain}", file=file, key=key)
    if method.rank_field is None:
        raise UserError(f"method '{method.name}' has no rank to match", file=file, key=key)


def _closest_rank(model: nn.Module, method: Method, target_count: int, *,
                  file: str | None, key: str | None) -> tuple[Method, int]:
    """`method` at the rank whose trainable count is closest to `target_count` (and that count), over
    the ranks that suit every target module; ties go to the smaller rank."""
    shapes = Counter((i, o) for _, i, o in method.targets(model))
    if not shapes:
        raise UserError(f"target_modules {getattr(method, 'target_modules', None)!r} match no linear module of the model",
                        file=file, key=join_key(key, "target_modules"))
    head = head_param_count(model)
    best: tuple[int, Method, int] | None = None
    for r in range(1, max(max(i, o) for i, o in shapes) + 1):
        trial = method.with_rank(r)
        if any(trial.check_module(i, o) for i, o in shapes):
            continue
        count = _shape_count(trial, shapes, head)
        if best is None or abs(count - target_count) < best[0]:
            best = (abs(count - target_count), trial, count)
    if best is None:
        raise UserError(f"no value of '{method.rank_field}' suits every target module of method '{method.name}' "
                        f"(shapes {sorted(shapes)})", file=file, key=join_key(key, "match_params"))
    return best[1], best[2]


def resolve_matching(model: nn.Module, methods_in_suite: dict[str, Method], *, file: str | None = None,
                     key: str | None = None) -> dict[str, dict[str, Any]]:
    """Choose the rank of every method whose parameters set ``match_params: <other label>``.

    methods_in_suite: {label: parsed method}. Chains (a -> b -> c) resolve in order; cycles, unknown
    labels and methods without a rank are UserErrors (key ``<key>.<label>.match_params``).

    Returns, for each matched label only:
      {"param": "r", "value": chosen r, "count": own analytic trainable count,
       "target": the other label, "target_count": its count,
       "method": the method at that rank (match_params cleared, a relative alpha `2r` made numeric)}
    The chosen r minimises |count - target_count| over the r that suit every target module
    (Bat: divides every in/out; Bone: r <= in; ...); ties go to the smaller r.
    """
    resolved: dict[str, Method] = {}
    result: dict[str, dict[str, Any]] = {}
    visiting: list[str] = []
    labels = list(methods_in_suite)

    def resolve(label: str) -> Method:
        if label in resolved:
            return resolved[label]
        method = methods_in_suite[label]
        target = getattr(method, "match_params", None)
        if target is None:
            resolved[label] = method.resolved()
            return resolved[label]
        _matchable(label, method, target, labels, visiting, file=file, key=join_key(join_key(key, label), "match_params"))
        visiting.append(label)
        target_count = resolve(target).expected_trainable(model)
        visiting.pop()
        matched, count = _closest_rank(model, method, target_count, file=file, key=join_key(key, label))
        resolved[label] = matched
        result[label] = {"param": method.rank_field, "value": getattr(matched, method.rank_field or ""), "count": count,
                         "target": target, "target_count": target_count, "method": matched}
        return matched

    for label in labels:
        resolve(label)
    return result
