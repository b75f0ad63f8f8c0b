"""The package's layering (ARCHITECTURE.md): no import cycles, and imports only point downwards.

    developer tools   numpyseg.devtools                  may import everything below
    application       data, inference, prediction, ...   may import the core
    core              kernels, layers, models, ...       imports only the core

The import graph is read from the source with `ast` (no module is imported), every
`import` and `from ... import` counted, those inside functions too: a lazy import is
still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "numpyseg"

CORE = ("numpyseg", "numpyseg.kernels", "numpyseg.layers", "numpyseg.models", "numpyseg.losses",
        "numpyseg.optim", "numpyseg.errors", "numpyseg.validate", "numpyseg.backends")
APPLICATION = ("numpyseg.__main__", "numpyseg.atomic", "numpyseg.checkpoint", "numpyseg.data",
               "numpyseg.inference", "numpyseg.prediction", "numpyseg.evaluation", "numpyseg.training",
               "numpyseg.metrics", "numpyseg.interop", "numpyseg.cli")
DEVTOOLS = ("numpyseg.devtools",)

#: The only upward imports: the two commands that exist to run a developer tool.
ALLOWED_UPWARD = {
    ("numpyseg.cli.gradcheck", "numpyseg.devtools.gradcheck_suite"),   # `numpyseg gradcheck`
    ("numpyseg.cli.benchmark", "numpyseg.devtools.benchmark"),         # `numpyseg benchmark`
}

LEVEL = {"core": 0, "application": 1, "devtools": 2}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__) for every module of numpyseg."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the numpyseg modules it imports (relative imports resolved)."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names if alias.name.startswith("numpyseg"))
            elif isinstance(node, ast.ImportFrom):
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = (base + "." + node.module if node.module else base) if node.level else node.module
                if not source or not source.split(".")[0] == "numpyseg":
                    continue
                for alias in node.names:  # `from numpyseg.data import io` imports the module numpyseg.data.io
                    full = f"{source}.{alias.name}"
                    targets.add(full if full in modules else known(source))
        targets.discard(None)
        targets.discard(name)
        graph[name] = targets
    return graph


def layer_of(module: str) -> str:
    for layer, roots in (("devtools", DEVTOOLS), ("application", APPLICATION), ("core", CORE)):
        if any(module == root or (root != "numpyseg" and module.startswith(root + ".")) for root in roots):
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to CORE, APPLICATION or DEVTOOLS "
                         f"in tests/test_layering.py and to ARCHITECTURE.md")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle [a, b, ..., a] if there is any (depth-first search), else None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "numpyseg.data.synthetic" in graph["numpyseg.data.datasets"]     # inside load_dataset
    assert "numpyseg.models.unet" in graph["numpyseg.inference"]           # inside load_model
    assert "numpyseg.devtools.gradcheck" in graph["numpyseg.devtools.gradcheck_suite"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_imports_point_down_the_layers():
    upward = set()
    for module, targets in import_graph().items():
        for target in targets:
            if LEVEL[layer_of(target)] > LEVEL[layer_of(module)]:
                upward.add((module, target))
    wrong = ", ".join(f"{a} -> {b}" for a, b in sorted(upward - ALLOWED_UPWARD))
    assert not wrong, f"imports against the layering (ARCHITECTURE.md): {wrong}"
    assert upward == ALLOWED_UPWARD, f"allowed exceptions no longer used: {sorted(ALLOWED_UPWARD - upward)}"


def test_architecture_names_every_package_and_top_level_module():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    top = {name.split(".")[1] for name in import_graph() if name.count(".") >= 1}
    top -= {"__main__"}
    missing = sorted(name for name in top if f"{name}/" not in text and f"{name}.py" not in text)
    assert not missing, f"ARCHITECTURE.md does not mention {missing}"
