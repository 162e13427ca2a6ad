"""The one config system: typed pydantic models for every user-facing setting, and their errors.

    disha-bench validate suites/smoke.yaml
    disha-bench list methods        # generated from the models' fields and docstrings

The suite file (`disha_bench.config.suite`), each method's parameters (`disha_bench.methods.params`) and
each task's options (`Task.Options`) are pydantic models built on `StrictModel`: unknown names are
rejected, an int is never taken for a string or a bool for an int (an int is a valid float), and
every field carries a docstring. `validate_model` turns the first validation error into one
`UserError` line naming the file, the key and what was expected; `field_lines` renders a model
for `disha-bench list`. `load_yaml` reads YAML with YAML 1.2 numbers, so `lr: 1e-4` is a float
(PyYAML's YAML 1.1 rules would read it as the string "1e-4").
"""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticUndefined

from disha_bench.core.errors import UserError, did_you_mean


class StrictModel(BaseModel):
    """Base of every config model: unknown keys rejected, no type coercion beyond int -> float,
    no NaN or infinity, field docstrings kept as descriptions (for `disha-bench list`)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, use_attribute_docstrings=True)


M = TypeVar("M", bound=BaseModel)


def validate_model(model: type[M], values: Mapping[str, Any], *, file: str | None = None, key: str | None = None,
                   what: str = "", noun: str = "parameter", aliases: Mapping[str, str] | None = None) -> M:
    """`model.model_validate(values)`, with an unknown name or the first bad value as one UserError.

    key: the key path of `values` in the file (e.g. `methods[1]`); what: who owns these names, for
    the message (e.g. "method 'lora'"); noun: what one name is ("parameter", "option"); aliases:
    other spellings of our names (PEFT's `lora_alpha` -> `alpha`), for "did you mean".
    """
    fields = list(model.model_fields)
    for name in values:
        if name not in model.model_fields:
            alias = (aliases or {}).get(str(name))
            hint = (f"did you mean '{alias}'?" if alias in model.model_fields
                    else did_you_mean(str(name), fields) if fields else "it takes no parameters")
            owner = f" for {what}" if what else ""
            raise UserError(f"unknown {noun} '{name}'{owner}; {hint}", file=file, key=join_key(key, str(name)))
    try:
        return model.model_validate(dict(values))
    except ValidationError as err:
        first = err.errors()[0]
        prefix = f"{what} {noun} '{first['loc'][0]}': " if what and first["loc"] else ""
        raise UserError(prefix + describe_error(first), file=file, key=join_key(key, key_path(first["loc"]))) from None


def join_key(key: str | None, name: str) -> str:
    """`methods[1]` + `r` -> `methods[1].r`; + `[0]` -> `methods[1][0]`."""
    if not name:
        return key or ""
    if not key:
        return name
    return f"{key}{name}" if name.startswith("[") else f"{key}.{name}"


def key_path(loc: tuple) -> str:
    """pydantic's error location as a suite key path: `methods[1].r`, `seeds[0]`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("int", "float", "str", "bool") or re.fullmatch(r"(literal|list|dict)\[.*\]|function-.*", str(part)):
            continue  # pydantic adds the union branch to the location
        else:
            path += f".{part}" if path else str(part)
    return path


_EXPECTED = {
    "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic error as 'expected ..., got ...' (or 'unknown key' / 'required key is missing')."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
    elif kind in _BOUNDS:
        name, symbol = _BOUNDS[kind]
        expected = f"a value {symbol} {ctx[name]} ({error['msg'][len('Input should be '):]})"
    elif kind == "literal_error":
        expected = f"one of {ctx['expected']}"
    elif kind == "too_short":
        expected = f"at least {ctx.get('min_length', 1)} item(s)"
    elif kind == "string_pattern_mismatch":
        expected = f"a string matching {ctx['pattern']}"
    elif kind == "value_error":
        return f"{error['msg'].removeprefix('Value error, ')}, got {_shown(error.get('input'))}"
    else:
        expected = error["msg"][0].lower() + error["msg"][1:]
    return f"expected {expected}, got {_shown(error.get('input'))}"


def _shown(value: Any) -> str:
    if isinstance(value, (int, float, str, bool, type(None))):
        return json.dumps(value)
    return type(value).__name__


# ---------------------------------------------------------------------------------------------
# Listing


def type_text(annotation: Any) -> str:
    """A field's type as a reader would write it: `int`, `'a' | 'b'`, `[str]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        for item in args[1:]:
            extra = getattr(item, "json_schema_extra", None)
            if isinstance(extra, dict) and "type_text" in extra:
                return extra["type_text"]
        return type_text(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args if a is not type(None))
    if origin in (list, tuple):
        return f"[{type_text(args[0])}]" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _nullable(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _bounds_text(metadata: Iterable[Any]) -> str:
    out = []
    for item in metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{symbol} {value}")
    return (" " + ", ".join(out)) if out else ""


def field_lines(model: type[BaseModel], indent: str = "    ") -> list[str]:
    """`name (type, default x): docstring` for every field of a config model, one line each."""
    lines = []
    for name, info in model.model_fields.items():
        default = "required" if info.default is PydanticUndefined else f"default {json.dumps(info.default)}"
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        shown = str(extra.get("type_text") or type_text(info.annotation) + _bounds_text(info.metadata))
        shown += " or null" if _nullable(info.annotation) else ""
        doc = " ".join((info.description or "").split())
        lines.append(f"{indent}{name} ({shown}, {default}): {doc}".rstrip())
    return lines


# ---------------------------------------------------------------------------------------------
# YAML with YAML 1.2 numbers


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4, 2E5 and 1_000.5 as floats, as YAML 1.2 (and every user) does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """yaml.safe_load, with YAML 1.2 floats (see the module docstring)."""
    return yaml.load(text, Loader=_Loader)
