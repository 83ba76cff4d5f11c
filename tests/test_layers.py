"""The package's import graph: one direction (pipeline/layers.py), no circles.

Walks the source with ``ast`` (nothing is imported), so a violation is reported even in a
module no other test loads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline
from pipeline.layers import LAYERS, layer_name, layer_of

ROOT = Path(pipeline.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.Module, modules: dict[str, Path], module_level: bool
             ) -> list[tuple[str, int]]:
    """``(imported pipeline module, line)`` for the imports at module level (outside
    ``if TYPE_CHECKING:``) or, with ``module_level=False``, for every import."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.Import | ast.ImportFrom) and (top or not module_level):
            out.extend((m, node.lineno) for m in _targets(node, modules))
        for child in ast.iter_child_nodes(node):
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, top and not inner)

    visit(tree, True)
    return out


def _targets(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "pipeline"]
    if not node.module or node.module.split(".")[0] != "pipeline" or node.level:
        return []
    # `from pipeline.x import y` imports the submodule pipeline.x.y when there is one.
    return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
            for a in node.names]


def _graph(module_level: bool) -> dict[str, list[tuple[str, int]]]:
    modules = _modules()
    return {name: _imports(ast.parse(path.read_text()), modules, module_level)
            for name, path in modules.items()}


def test_every_module_has_a_layer():
    missing = [m for m in _modules() if m != "pipeline" and layer_of(m) is None]
    assert missing == [], f"modules outside every layer of pipeline/layers.py: {missing}"
    assert [name for name, _ in LAYERS][:2] == ["ground", "data"]


def test_no_upward_import():
    """No import, at module level or inside a function, reaches a higher layer."""
    upward = []
    for mod, imports in _graph(module_level=False).items():
        me = layer_of(mod)
        for target, line in imports:
            them = layer_of(target)
            if me is not None and them is not None and them > me:
                upward.append(f"{mod}:{line} ({layer_name(me)}) imports {target} "
                              f"({layer_name(them)})")
    assert upward == [], "upward imports:\n" + "\n".join(upward)


def _cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph.get(v, []):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return found


def test_no_import_circle_at_module_level():
    cycles = _cycles(_graph(module_level=True))
    assert cycles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_walk_sees_imports():
    """Guards the checks above against passing vacuously: the walk finds real edges."""
    graph = _graph(module_level=True)
    assert any(t.startswith("pipeline.errors") for t, _ in graph["pipeline.options"])
    assert sum(len(v) for v in graph.values()) > 50
    fake = {"a": [("b", 1)], "b": [("a", 2)], "c": [("a", 3)]}
    assert _cycles(fake) == [["a", "b"]]


def test_no_import_circle_even_inside_functions():
    """An import moved into a function to dodge a circle is still a circle: registries are
    filled by a table module that imports the implementations, never the other way round."""
    cycles = _cycles(_graph(module_level=False))
    assert cycles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)
