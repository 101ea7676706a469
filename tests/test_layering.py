"""Imports point down: every ``sibyl_nb`` import (module level *and* inside functions) goes to the same layer
or a lower one. ARCHITECTURE.md draws these layers; this test keeps the drawing true.

Only imports under ``if TYPE_CHECKING:`` are exempt (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sibyl_nb"

# Bottom first. A module belongs to the first (longest) prefix that names it.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "paths", "_version", "_lazy"),
    ("text", "context.tokens", "context.extractive"),  # model-free: counting, extractive summaries
    (
        "document.expressions",
        "document.templates",
        "document.schema",
        "document.trust",
        "document.yaml_lines",
        "document.yaml_path",
        "document.yaml_errors",
        "document.yaml_load",
    ),
    ("stores", "providers"),
    ("context",),  # strategies and their comparison (abstractive ones call a provider)
    ("techniques",),
    ("engine", "techniques.context"),
    ("document",),
    ("observe", "state", "sessions"),
    ("techniques.builtins", "context.technique", "sessions.technique", "state.technique"),
    ("pipeline",),
    ("experiments", "draw", "testing"),
    ("notebook", "cli", "__init__"),
]

# Upward imports that are a declared design, each with its reason.
ALLOWED: dict[tuple[str, str], str] = {
    ("sibyl_nb.techniques.registry", "sibyl_nb.techniques.builtins"): (
        "plugin discovery: the registry loads the built-in technique modules on first lookup"
    ),
}


def _layer_of(module: str) -> int:
    rel = module.removeprefix("sibyl_nb").lstrip(".") or "__init__"
    best, best_len = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (rel == prefix or rel.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best < 0:
        raise AssertionError(f"module {module} is in no layer: add it to LAYERS (and ARCHITECTURE.md)")
    return best


def _module_name(path: Path) -> tuple[str, list[str]]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts), package


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    _, package = _module_name(path)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.append((node.lineno, full if _is_module(full) else target))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, t) for line, t in found if t == "sibyl_nb" or t.startswith("sibyl_nb.")]


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module, _ = _module_name(path)
        own = _layer_of(module)
        for line, target in _imports(path):
            theirs = _layer_of(target)
            if theirs > own and not any(
                module == a and (target == b or target.startswith(b + ".")) for a, b in ALLOWED
            ):
                problems.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (layer {own}: {LAYERS[own][0]}) "
                    f"imports {target} (layer {theirs}: {LAYERS[theirs][0]})"
                )
    return problems


def test_imports_point_down() -> None:
    problems = _violations()
    assert not problems, "imports that point up:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("sibyl_nb.errors", 0),
        ("sibyl_nb.engine.scheduler", 6),
        ("sibyl_nb.document.compile", 7),
        ("sibyl_nb.document.schema", 2),
        ("sibyl_nb.context.tokens", 1),
        ("sibyl_nb.context.compare", 4),
        ("sibyl_nb.notebook.magics", 12),
    ],
)
def test_layer_lookup(module: str, layer: int) -> None:
    assert _layer_of(module) == layer


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    # the check would be worthless if imports inside functions slipped through
    source = "def f():\n    from ..notebook import render\n"
    path = PACKAGE / "engine" / "_probe_layering.py"
    path.write_text(source, encoding="utf-8")
    try:
        assert any("_probe_layering" in p and "notebook" in p for p in _violations())
    finally:
        path.unlink()


# Import cycles (through function-level imports too) that are still there, each with its reason. A cycle
# may shrink or go; a new one, or a module joining one of these, fails the test below.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _module_of(target: str) -> str:
    parts = target.split(".")
    while len(parts) > 1 and not _is_module(".".join(parts)):
        parts.pop()
    return ".".join(parts)


def _import_cycles() -> list[frozenset[str]]:
    import networkx as nx

    graph = nx.DiGraph()
    for path in sorted(PACKAGE.rglob("*.py")):
        module, _ = _module_name(path)
        graph.add_node(module)
        for _, target in _imports(path):
            target = _module_of(target)
            if target != module and not module.startswith(target + "."):  # a package's own __init__
                graph.add_edge(module, target)
    short = lambda m: m.removeprefix("sibyl_nb.")  # noqa: E731
    return [frozenset(map(short, c)) for c in nx.strongly_connected_components(graph) if len(c) > 1]


def test_no_new_import_cycles() -> None:
    new = [c for c in _import_cycles() if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, "import cycles (counting imports inside functions): " + "; ".join(
        " <-> ".join(sorted(c)) for c in new
    )


def test_the_cycle_check_sees_a_cycle_through_a_function_level_import() -> None:
    first, second = PACKAGE / "text" / "_probe_a.py", PACKAGE / "text" / "_probe_b.py"
    first.write_text("from . import _probe_b\n", encoding="utf-8")
    second.write_text("def f():\n    from . import _probe_a\n", encoding="utf-8")
    try:
        assert frozenset({"text._probe_a", "text._probe_b"}) in _import_cycles()
    finally:
        first.unlink()
        second.unlink()
