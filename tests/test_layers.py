"""The package's layers, from its imports: no import cycle, and no arrow that runs back up.

    pytest tests/test_layers.py

Every import counts, also one inside a function (not one under `if TYPE_CHECKING:`, which never runs). A layer may import its own and the layers below it:

    core < contracts < methods, models, evaluation < tasks < config < analysis < training < running < cli

core: errors, registry, the strict config base, atomic io, the datasets layer. contracts: what the
processes hand each other (result schema, progress events, checkpoint layout). methods, models,
evaluation: the plug-ins and the evaluation machinery (generation pool, vLLM, lm-eval, sandbox).
tasks: datasets and scoring per task. config: the suite, the run spec and its expansion. analysis:
results -> leaderboards (pure). training: everything inside one run's processes. running: the suite
runner and its launchers. cli: one file per command.
"""

from __future__ import annotations

import ast
from pathlib import Path

import disha_bench

PACKAGE = Path(disha_bench.__file__).parent
LAYERS = [("core",), ("contracts",), ("methods", "models", "evaluation"), ("tasks",), ("config",), ("analysis",),
          ("training",), ("running",), ("cli",)]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """disha_bench modules `path` imports (a `from pkg import name` of a submodule counts as that submodule)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # imports for type checkers only never run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("disha_bench"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("disha_bench")}
    return {m for m in found if m in known}


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # disha_bench itself: the version string
    return RANK[parts[1]]


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports(p, known) - {m} for m, p in mods.items()}


def test_every_module_belongs_to_a_layer():
    for module in modules():
        parts = module.split(".")
        assert len(parts) == 1 or parts[1] in RANK, f"{module}: not in a layer of {LAYERS}"


def test_no_import_runs_back_up():
    upward = []
    for module, targets in graph().items():
        for target in targets:
            # a package's __init__ importing its own modules (registration) is within the layer
            if layer(target) > layer(module):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run back up:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    edges = graph()
    # a package imports its own submodules (registration) and they import siblings, not the package back
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
