"""The README's worked examples run as they stand: "Add a method" registers LoHa from the README's own
code block, and the method then does what the battery asks of every method.

    pytest tests/test_readme_examples.py
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_methods import SHAPES, assert_trains, batch, tiny_llama  # imported before LoHa joins the registry

from disha_bench import methods
from disha_bench.methods.base import REGISTRY

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(section: str) -> str:
    """The first ```python block under the README heading `section`."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"no python block under '## {section}'"
    return match.group(1)


@pytest.fixture
def readme_method(tmp_path):
    """Register the README's LoHa for one test (imported from a file, as a method module is: pydantic
    reads the field docstrings from the source), then take it out of the registry again."""
    import importlib.util

    path = tmp_path / "readme_loha.py"
    path.write_text(readme_block("Add a method"))
    spec = importlib.util.spec_from_file_location("readme_loha", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    try:
        yield "loha"
    finally:
        REGISTRY._entries.pop("loha", None)


def test_add_a_method_example(readme_method):
    assert readme_method in methods.names() and "loha:" in methods.describe()
    method = methods.parse("loha", {"r": 4, "alpha": 8})
    model = tiny_llama()
    expected = method.expected_trainable(model)
    model = method.apply(model)
    assert methods.count_trainable(model) == expected == 2 * 4 * SHAPES["llama"].sum_in_out
    assert method.scaling() == 2.0
    # parameter matching works from the method's module_count alone
    table = {"bone": methods.parse("bone", {"r": 8}), "loha": methods.parse("loha", {"match_params": "bone"})}
    matched = methods.resolve_matching(tiny_llama(), table)["loha"]
    assert matched["count"] == matched["method"].expected_trainable(tiny_llama())
    # it trains
    assert_trains(model, method.param_groups(model, lr=1e-2, weight_decay=0.0), batch("llama"))
