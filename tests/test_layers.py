"""Imports flow one way: cli → api → gallery/experiments → job → ... → encodings/models.

Checked on the real import graph (grimp reads every ``import``, also those inside
functions), so the next circle fails CI rather than a user's first run. Two checks:
``layer_violations`` (an import from a module up to a layer above it, or from the
foundation into any layer) and ``circles`` (top-level modules that import each other,
directly or through others: it also covers the foundation and modules in one layer).
"""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp", reason="grimp is not installed: pip install -e '.[dev]'")

# Top to bottom: a module may import from the layers below its own, never from above.
LAYERS = (
    "evofool.cli",
    "evofool.api",
    "evofool.gallery",
    "evofool.experiments",
    "evofool.job",
    "evofool.distributed",
    "evofool.runfolder",
    "evofool.config",
    "evofool.engine",
    "evofool.recombination",
    "evofool.emitters",
    "evofool.archive",
    "evofool.scoring",
    "evofool.evaluator",
    "evofool.runtime",
    "evofool.crops",
    "evofool.train",
    "evofool.encodings",
    "evofool.models",
)
# Modules every layer may use, which import none of the layers: errors, file and value
# checking, image files, checkpoints, the vectorised operators, data readers, devices.
FOUNDATION = ("evofool.errors", "evofool.safefs", "evofool.values", "evofool.imageio",
              "evofool.checkpoint", "evofool.operators", "evofool.data", "evofool.devices")
ENTRY_POINTS = ("evofool.__main__",)


def evofool_graph():
    graph = grimp.build_graph("evofool")
    # ``evofool.evolve`` is a lazy re-export (module ``__getattr__``): the root package is
    # the API's address, not a layer (``__version__`` lives there, imported everywhere).
    graph.remove_import(importer="evofool", imported="evofool.api")
    return graph


def layer_violations(graph) -> list[str]:
    """``importer -> imported`` for every import that goes up a layer or out of the foundation."""
    found = [f"{' -> '.join(route)} (up from {d.importer} to {d.imported})"
             for d in graph.find_illegal_dependencies_for_layers(layers=LAYERS) for route in _routes(d)]
    # The foundation's modules may import each other (``circles`` keeps that acyclic), nothing else:
    # then no chain from them reaches a layer either.
    for module in sorted(graph.modules):
        if _top(module) in FOUNDATION:
            for imported in sorted(graph.find_modules_directly_imported_by(module)):
                if _top(imported) not in (*FOUNDATION, None):
                    found.append(f"{module} -> {imported} (the foundation imports a layer)")
    return sorted(found)


def _routes(dependency) -> list[tuple[str, ...]]:
    """The module chains of an illegal layer dependency: ``importer -> ... -> imported``."""
    return sorted((head, *route.middle, tail) for route in dependency.routes
                  for head in sorted(route.heads) for tail in sorted(route.tails))


def _top(module: str) -> str | None:
    """The top-level module or package ``module`` belongs to (``None``: the root package)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else None


def circles(graph) -> list[str]:
    """Every set of top-level modules that import each other, shown as one loop of imports."""
    edges: dict[str, set[str]] = {}
    witness: dict[tuple[str, str], str] = {}  # (a, b) -> one import "module -> imported" from a to b
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            a, b = _top(module), _top(imported)
            if a and b and a != b:
                edges.setdefault(a, set()).add(b)
                witness.setdefault((a, b), f"{module} -> {imported}")
    found = []
    for group in _strongly_connected(edges):
        start = min(group)
        loop = _path(edges, group, start, start)
        hops = "; ".join(witness[hop] for hop in zip(loop, loop[1:]))
        found.append(f"circle {' -> '.join(loop)} ({hops})")
    return sorted(found)


def _path(edges: dict[str, set[str]], group: set[str], start: str, goal: str) -> list[str]:
    """The shortest loop (breadth first) from ``start`` back to ``goal`` inside ``group``."""
    queue, came_from = [start], {}
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges.get(node, set()) & group):
            if nxt == goal:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), goal]
            if nxt not in came_from and nxt != start:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is in a circle but no loop was found")


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """The groups of two or more nodes that all reach each other (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def problems(graph) -> list[str]:
    return layer_violations(graph) + circles(graph)


def test_imports_flow_one_way_without_circles():
    found = problems(evofool_graph())
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_every_module_has_a_place():
    """A new top-level module must be put in a layer (or the foundation) on purpose."""
    graph = evofool_graph()
    placed = set(LAYERS) | set(FOUNDATION) | set(ENTRY_POINTS)
    assert sorted(set(graph.find_children("evofool")) - placed) == []


@pytest.mark.parametrize("importer, imported", [
    ("evofool.models.first", "evofool.experiments.retrain"),  # the circle first.py removed
    ("evofool.models.torchscript", "evofool.config"),          # a model loader reaching up (values.py)
    ("evofool.encodings.base", "evofool.config"),
    ("evofool.evaluator", "evofool.engine"),
    ("evofool.safefs", "evofool.runfolder"),                   # the foundation importing a layer
])
def test_an_introduced_upward_import_is_reported_with_its_circle(importer, imported):
    graph = evofool_graph()
    graph.add_import(importer=importer, imported=imported)
    violations = layer_violations(graph)
    assert any(v.startswith(f"{importer} -> {imported} ") for v in violations), violations
    assert circles(graph), "the import closes a circle (the module above imports this one)"


def test_a_circle_inside_the_foundation_is_reported():
    """No layer is crossed, so only the circle check sees it: safefs <-> imageio."""
    graph = evofool_graph()
    graph.add_import(importer="evofool.safefs", imported="evofool.imageio")
    assert not any("evofool.safefs -> evofool.imageio" in v for v in layer_violations(graph))
    found = [c for c in circles(graph) if "evofool.imageio" in c and "evofool.safefs" in c]
    assert len(found) == 1, circles(graph)
