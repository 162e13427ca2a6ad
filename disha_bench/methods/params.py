"""Field types that methods' parameters share, and the LoRA alpha rule.

LoRA alpha may be written relative to the rank, `alpha: 2r` (any `<k>r`): it then follows the rank
that `match_params` chooses. `alpha_number` turns it (and the default, alpha = r) into the number
once r is known, so the parameters that reach training and the result carry the numeric alpha.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Union

from pydantic import Field, PlainValidator, StringConstraints


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


def alpha_number(alpha: Union[float, str, None], r: int) -> float:
    """The numeric LoRA alpha at rank r: `<k>r` -> k * r, None -> r, a number stays."""
    if alpha is None:
        return float(r)
    if isinstance(alpha, str):
        match = _RELATIVE.match(alpha)
        assert match is not None, alpha  # validated by _alpha
        return float(match.group(1)) * r
    return float(alpha)
