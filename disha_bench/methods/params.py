"""Method parameters as typed models: the shared fields and types, and the LoRA alpha rule.

    disha-bench list methods

Each method declares a `MethodParams` subclass (see lora.py, miss.py, full.py) with a docstring per
field; `validate_params` checks a suite's values against it and `disha-bench list methods` prints
it. A method with a rank subclasses `RankedParams` (r, target_modules, match_params).

LoRA alpha may be written relative to the rank, `alpha: 2r` (any `<k>r`): it then follows the rank
that `match_params` chooses. `resolve_alpha` turns it (and the default, alpha = r) into the number
once r is known, so the parameters that reach training and the result carry the numeric alpha.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Optional, Union

from pydantic import Field, PlainValidator, StringConstraints

from disha_bench.config.schema import StrictModel


def _target_modules(value: Any) -> Union[str, list[str]]:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v.strip() for v in value):
        return list(value)
    raise ValueError("expected 'all-linear', a module name or a non-empty list of module names")


TargetModules = Annotated[
    Union[str, list[str]],
    PlainValidator(_target_modules),
    Field(json_schema_extra={"type_text": "'all-linear' | name | [names]"}),
]
"""'all-linear', one module-name suffix, or a non-empty list of them."""

_RELATIVE = re.compile(r"^\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*r\s*$")


def _alpha(value: Any) -> Union[float, str]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and value > 0:
            return float(value)
    elif isinstance(value, str):
        match = _RELATIVE.match(value)
        if match and float(match.group(1)) > 0:
            return value.strip().replace(" ", "")
    raise ValueError("expected a number > 0 or '<k>r' relative to the rank (e.g. 2r, 0.5r)")


Alpha = Annotated[Union[float, str], PlainValidator(_alpha), Field(json_schema_extra={"type_text": "number > 0 | '<k>r'"})]
"""A LoRA alpha: a positive number, or `<k>r` = k times the rank."""

Label = Annotated[str, StringConstraints(min_length=1)]


class MethodParams(StrictModel):
    """Parameters of a method with none (full fine-tuning); base of every method's parameters."""


class RankedParams(MethodParams):
    """Parameters every method with a rank has. Subclasses redeclare `r` with their default."""

    r: int = Field(8, gt=0)
    """Rank; chosen by `match_params` when that is set."""
    target_modules: TargetModules = "all-linear"
    """Modules to adapt: 'all-linear' (every linear layer except the output / classification head), a
    module-name suffix such as 'q_proj', or a list of them."""
    match_params: Optional[Label] = None
    """Label of another method in the suite: choose `r` so that this method's trainable count is
    closest to that method's on the same model and target modules (then `r` must not be given)."""


def alpha_value(params: dict) -> Optional[float]:
    """The numeric LoRA alpha of validated params with a known r: `<k>r` -> k * r, null -> r;
    None for methods without an alpha."""
    if "alpha" not in params:
        return None
    alpha, r = params["alpha"], params["r"]
    if alpha is None:
        return float(r)
    if isinstance(alpha, str):
        return float(_RELATIVE.match(alpha).group(1)) * r
    return float(alpha)


def resolve_alpha(params: dict) -> dict:
    """Params with the numeric alpha in place of `<k>r` / null, when r is fixed (no `match_params`
    left to choose it); otherwise unchanged."""
    if "alpha" not in params or params.get("match_params") is not None:
        return params
    return {**params, "alpha": alpha_value(params)}
