"""The package has no import cycles and no import running back up a layer, counting lazy and
TYPE_CHECKING imports too (AST only, no imports run)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "promptclf"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Edges ``a -> b`` for every ``import``/``from ... import`` of a package module, wherever it sits."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join([*base, node.module] if node.module else base)
                names = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            edges[mod].update(n for n in names if n in files and n != mod)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_graph_sees_lazy_imports() -> None:
    edges = import_graph()
    assert "promptclf.distill.train" in edges["promptclf.distill.run"]  # imported inside distill()
    assert "promptclf.label.labeler" in edges["promptclf"]  # imported inside __getattr__
    assert "promptclf.cli.group" in edges["promptclf.cli.label"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# The packages (and top-level modules) of promptclf by layer, lowest first. A module may import
# from its own layer or any layer below, never from one above: providers know nothing of labeling
# jobs, labeling nothing of reports, and only the CLI and the package root see everything.
# Packages in one layer may import each other (distill trains the student predict loads).
LAYERS: list[set[str]] = [
    {"errors"},
    {"resources", "options"},
    {"data", "labels", "label_tree", "store"},
    {"embeddings", "eval"},
    {"runs"},
    {"providers"},
    {"pricing"},
    {"label"},
    {"review"},
    {"distill", "predict", "export"},
    {"report", "serve"},  # serve: the student (predict) behind an HTTP API
    {"demo"},
    {"cli", "testing"},  # testing: the fake providers and servers of the tests and benchmarks
    {"promptclf", "__main__"},  # the package root (lazy library API) and ``python -m promptclf``
]


def unit(module: str) -> str:
    """The package or top-level module a module belongs to: ``promptclf.label.jobs`` -> ``label``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of() -> dict[str, int]:
    return {name: k for k, names in enumerate(LAYERS) for name in names}


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer into a higher one, as ``a -> b (layer i -> j)``."""
    layer = layer_of()
    return sorted(
        f"{a} -> {b} (layer {layer[unit(a)]} -> {layer[unit(b)]})"
        for a, targets in edges.items()
        for b in targets
        if layer[unit(b)] > layer[unit(a)]
    )


def test_every_package_has_a_layer() -> None:
    missing = sorted({unit(m) for m in import_graph()} - set(layer_of()))
    assert not missing, f"add {missing} to LAYERS in tests/test_imports.py"


def test_no_import_runs_back_up_a_layer() -> None:
    up = upward_imports(import_graph())
    assert not up, "imports running back up a layer:\n" + "\n".join(up)


def test_the_layer_check_sees_an_upward_import() -> None:
    edges = {"promptclf.providers.hosted": {"promptclf.label.confidence"}, "promptclf.label.jobs": set()}
    assert upward_imports(edges) == ["promptclf.providers.hosted -> promptclf.label.confidence (layer 5 -> 7)"]
    assert unit("promptclf") == "promptclf" and unit("promptclf.providers.local.cache") == "providers"
