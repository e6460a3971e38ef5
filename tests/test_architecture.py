"""The package's layers: imports point one way (docs/design.md draws them).

Every import counts, at module level or inside a function (a lazy import is still a
dependency); imports under ``if TYPE_CHECKING:`` (annotations, never executed) do not, except
in a package's ``__init__.py``, where they name what its lazy ``__getattr__`` loads.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "energymeter"

#: Folders (and top-level modules) from the bottom up; a module may import from its own folder
#: and from lower layers only. Folders sharing a layer must not import each other.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "_version", "_lazy", "_ids", "data", "notes"}),
    frozenset({"settings", "redact", "stats"}),
    frozenset({"probes"}),
    frozenset({"carbon", "store"}),
    frozenset({"sampling"}),
    frozenset({"report"}),
    frozenset({"session", "daemon"}),
    frozenset({"analysis"}),
    frozenset({"cli", "notebook", "integrations"}),
    frozenset({"__init__", "__main__"}),  # the lazy front and `python -m energymeter`
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _runtime_nodes(tree: ast.AST, lazy_front: bool) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (kept in a lazy front)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if (not lazy_front and isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test)):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The energymeter modules ``name`` imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if _is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree, lazy_front=_is_package(path)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("energymeter")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("energymeter"):
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


@functools.lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i, top
    raise AssertionError(f"{module} belongs to no layer: add its folder to LAYERS and "
                         "docs/design.md")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_imports() -> None:
    """The checker is not blind: known imports, lazy ones included, are found."""
    graph = _graph()
    assert "energymeter.probes.base" in graph["energymeter.probes.rapl"]
    assert "energymeter.session.command" in graph["energymeter.cli.run"]  # inside the command
    assert "energymeter.session.meter" not in graph["energymeter.cli.run"]  # TYPE_CHECKING only
    assert "energymeter.report.model" in graph["energymeter.report"]  # its lazy __getattr__


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_point_down(module: str) -> None:
    level, top = _layer(module)
    upward = []
    for target in sorted(_graph()[module]):
        target_level, target_top = _layer(target)
        if target_top != top and target_level >= level:
            upward.append(f"{target} ({target_top})")
    assert upward == [], f"{module} ({top}) imports from its own layer or above: {upward}"


def test_probes_import_no_session_report_store_or_cli() -> None:
    graph = _graph()
    for module, targets in graph.items():
        if module.startswith("energymeter.probes"):
            bad = [t for t in targets
                   if t.split(".")[1] in ("session", "report", "store", "cli", "sampling")]
            assert bad == [], module
