"""The dependency rule of README's "Layout", enforced over every module (imports inside functions count).

A module imports only from layers below its own, never from a sibling package of its layer, and the module
graph has no cycle. Imports inside functions are kept for optional or slow third-party packages and for
the CLI's start-up (`cnnzoo --help` must not load PyTorch); everything else is imported at the top.
"""

from __future__ import annotations

import ast
import graphlib
import re
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cnnzoo"

# Lowest first. A unit is a top-level module or subpackage of cnnzoo; "" is the package's own __init__
# (the lazy facade), which may name anything.
LAYERS = (
    ("errors", "_version"),
    ("_io", "runtime"),
    ("layers", "data"),
    ("models",),
    ("artifacts", "summary"),
    ("engine", "inference", "explain"),
    ("transfer", "serve"),
    ("studies",),
    ("cli",),
    ("__main__", ""),
)
LAYER = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}

# Imported inside functions on purpose: optional extras (onnx, serve, torchvision, scikit-learn...) or slow
# to import (matplotlib), so that a command that does not need them never pays for them.
LAZY_ALLOWED = {
    "matplotlib",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "starlette",
    "uvicorn",
    "torchvision",
    "sklearn",
    "tensorboard",
    "torch.utils.tensorboard",  # torch's SummaryWriter: importing it imports the optional tensorboard
    "prometheus_client",
    "tritonclient",
    "fcntl",  # POSIX only: file locks are skipped where it does not exist
}
# The CLI's start-up path: `cnnzoo --help` and a Ctrl-C while PyTorch loads are handled before anything heavy.
LAZY_MODULES = {"cnnzoo.cli", "cnnzoo.__main__", "cnnzoo", "cnnzoo.errors"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _target(module: str, path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The cnnzoo modules an import statement loads (a name imported from a package may be a module)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        if node.level:
            base = base[: len(base) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names]
    found = []
    for name in names:
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES and name.split(".")[0] == "cnnzoo":
            found.append(name)
    return found


def _is_cnnzoo(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "cnnzoo"
    return any(a.name.split(".")[0] == "cnnzoo" for a in node.names)


def imports() -> list[tuple[str, str, int, bool, ast.AST]]:
    """(module, imported cnnzoo module or third-party top name, line, inside a function, node)."""
    out = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        inside = {
            id(n)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(fn)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                if _is_cnnzoo(node):
                    for target in _target(module, path, node):
                        if target != module:
                            out.append((module, target, node.lineno, id(node) in inside, node))
                else:
                    full = node.names[0].name if isinstance(node, ast.Import) else node.module
                    top = full if full in LAZY_ALLOWED else full.split(".")[0]  # allowed by its whole name
                    out.append((module, "!" + top, node.lineno, id(node) in inside, node))
    return out


IMPORTS = imports()
EDGES = [(a, b, line, lazy) for a, b, line, lazy, _ in IMPORTS if not b.startswith("!")]


def test_every_unit_has_a_layer():
    assert {unit_of(m) for m in MODULES} <= set(LAYER), "a new package needs a line in LAYERS (and README)"


def test_no_module_imports_a_higher_layer_or_a_sibling_package():
    wrong = {
        f"{a}:{line} imports {b} ({'higher layer' if LAYER[unit_of(b)] > LAYER[unit_of(a)] else 'sibling'})"
        for a, b, line, _ in EDGES
        if unit_of(a) != unit_of(b) and LAYER[unit_of(b)] >= LAYER[unit_of(a)]
    }
    assert not wrong, "\n".join(sorted(wrong))


def test_the_module_graph_has_no_cycle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for a, b, _, _ in EDGES:
        graph[a].add(b)
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_package_graph_has_no_cycle():
    graph: dict[str, set[str]] = {unit_of(m): set() for m in MODULES}
    for a, b, _, _ in EDGES:
        if unit_of(a) != unit_of(b):
            graph[unit_of(a)].add(unit_of(b))
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"package cycle: {' -> '.join(e.args[1])}")


def test_imports_inside_functions_are_only_for_optional_or_slow_packages():
    stdlib = set(sys.stdlib_module_names)
    wrong = set()
    for a, b, line, lazy, _ in IMPORTS:
        if not lazy or a in LAZY_MODULES:
            continue
        name = b.removeprefix("!")
        if b.startswith("!") and (name in LAZY_ALLOWED or name == "__future__"):
            continue
        kind = "stdlib" if name in stdlib else ("cnnzoo" if not b.startswith("!") else "third-party")
        wrong.add(f"{a}:{line} imports {name} ({kind}) inside a function")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_rule_catches_a_violation(tmp_path):
    """The checks above can fail: an upward import and a cycle, written into a scratch copy, are found."""
    assert LAYER["models"] < LAYER["inference"] and LAYER["engine"] == LAYER["inference"]
    source = "from ..inference import load\n"
    node = ast.parse(source).body[0]
    targets = _target("cnnzoo.models._registry", PACKAGE / "models" / "_registry.py", node)
    assert targets == ["cnnzoo.inference"] and LAYER[unit_of(targets[0])] > LAYER["models"]
    cyclic = {"a": {"b"}, "b": {"a"}}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(cyclic).static_order())


def test_readme_states_the_same_layers():
    """README's Layout names the layers this test enforces: the written rule and the checked one agree."""
    text = (SRC.parent / "README.md").read_text()
    section = text[text.index("**One direction of dependencies.**") :]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", section, re.M)
    written = [tuple(sorted(re.findall(r"`([\w./]+)`", packages))) for _, packages in rows]
    expected = [tuple(sorted(u for u in units if u)) for units in LAYERS]
    expected[-1] = tuple(sorted((*expected[-1], "cnnzoo/__init__")))
    assert written == expected
