"""The package's import structure (docs/design.md, "Package layers and imports"): no import cycle between modules
or between packages, every package imports only what the layer map allows, and ``import mmtlab`` stays light.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` statement, at module
level or inside a function (a lazy import that only hides a cycle is still a cycle), and in a module that calls
``importlib.import_module``, every string constant naming a module of the package, absolute or relative to the
module's package (the lazy ``__getattr__`` tables, the command modules of ``mmtlab.cli``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "mmtlab"

# What each package (or top-level module) of mmtlab may import, besides itself; docs/design.md shows the same
# map. The root package ``mmtlab`` only gives ``train.checkpoint`` its ``__version__``.
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "commands": set(),
    "progress": set(),
    "typed_config": {"errors"},
    "files": {"errors"},
    "config": {"errors", "typed_config", "files"},
    "assets": {"config"},
    "cpu": {"config"},
    "device": {"config"},
    "presets": {"config"},
    "data": {"config", "errors", "assets", "progress"},
    "model": {"config", "presets"},
    "features": {"config", "errors", "data", "progress"},
    "run": {"config", "errors", "data", "model"},
    "train": {"mmtlab", "config", "errors", "commands", "cpu", "device", "progress", "presets", "data", "model", "run"},
    "eval": {"config", "errors", "commands", "cpu", "device", "progress", "data", "model", "run"},
    "study": {"config", "errors", "cpu", "presets", "data", "run", "train", "eval"},
    "bench": {"config", "cpu", "device", "presets", "model", "train"},
    "mmtlab": {"presets", "model"},
}
for _allowed in MAY_IMPORT.values():  # config re-exports typed_config and files: who may import one may import all
    if "config" in _allowed:
        _allowed |= {"typed_config", "files"}
MAY_IMPORT["cli"] = set(MAY_IMPORT) - {"mmtlab"}  # the command line: everything below it


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    mods = {}
    for path in sorted((SRC / PKG).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _resolve(name: str, mods: dict) -> str | None:
    """The innermost module of the package that ``name`` (a module or a name inside one) lives in."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(tree: ast.AST, package: str, mods: dict) -> set[str]:
    """Every dotted name the module imports, resolved against its ``package``."""
    names: set[str] = set()
    dynamic = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                module = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.update(f"{module}.{a.name}" for a in node.names)  # a submodule, or a name in `module`
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            dynamic = True
    if dynamic:  # strings that name a module exactly: "mmtlab.data.cli", or ".collate" / "trainer" in a package
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for candidate in (node.value, f"{package}.{node.value.lstrip('.')}"):
                    if candidate in mods and candidate != PKG:  # not prog="mmtlab"
                        names.add(candidate)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports. Importing ``a.b.c`` from outside package ``a.b`` also runs
    ``a/b/__init__.py``: that edge is included (from inside the package, its ``__init__`` is already running)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        out = graph.setdefault(name, set())
        for imported in _imported_names(ast.parse(path.read_text()), package, mods):
            target = _resolve(imported, mods) if imported.split(".")[0] == PKG else None
            if target is None or target == name:
                continue
            out.add(target)
            parent = target.rpartition(".")[0]
            while parent and parent != PKG and not (name + ".").startswith(parent + "."):
                out.add(parent)
                parent = parent.rpartition(".")[0]
    return graph


def package_of(module: str) -> str:
    """``mmtlab.data.store`` -> ``data``; a top-level module is its own package; the root is ``mmtlab``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PKG


def package_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, list[str]]]:
    """Package -> package it imports -> the module edges that make it."""
    out: dict[str, dict[str, list[str]]] = {}
    for a, targets in graph.items():
        for b in targets:
            pa, pb = package_of(a), package_of(b)
            if pa != pb:
                out.setdefault(pa, {}).setdefault(pb, []).append(f"{a} -> {b}")
    return out


def find_cycle(edges: dict[str, set[str] | dict]) -> list[str] | None:
    """One cycle of the directed graph as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_lazy_and_dynamic_imports():
    graph = import_graph()
    assert "mmtlab.data.tokenizer" in graph["mmtlab.data"]  # module level, relative
    assert "mmtlab.run.load" in graph["mmtlab.eval.retrieval"]  # inside a function
    assert "mmtlab.train.trainer" in graph["mmtlab.train"]  # the lazy __getattr__ table
    assert "mmtlab.study.cli" in graph["mmtlab.cli"]  # COMMAND_MODULES, loaded with importlib
    assert "mmtlab.presets" in graph["mmtlab.model.catalog"]
    assert "mmtlab.data" in graph["mmtlab.features.extract"]  # importing data.store from outside runs data/__init__
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_packages():
    packages = package_graph(import_graph())
    cycle = find_cycle(packages)
    assert cycle is None, (
        "package cycle: "
        + " -> ".join(cycle or [])
        + "; edges: "
        + "; ".join(e for a, b in zip(cycle or [], (cycle or [])[1:]) for e in packages[a][b])
    )


def test_each_package_imports_only_what_the_layer_map_allows():
    packages = package_graph(import_graph())
    assert set(packages) <= set(MAY_IMPORT), f"packages missing from MAY_IMPORT: {set(packages) - set(MAY_IMPORT)}"
    extra = {
        f"{a} -> {b}": edges for a, deps in packages.items() for b, edges in deps.items() if b not in MAY_IMPORT[a]
    }
    assert not extra, f"imports outside the layer map (docs/design.md): {extra}"


def test_evaluation_reads_runs_without_the_trainer():
    """Evaluation scores with the model's own interface and loads runs from :mod:`mmtlab.run`: no module of
    ``mmtlab.eval`` imports ``mmtlab.train``, even lazily."""
    graph = import_graph()
    eval_to_train = {a: sorted(b for b in bs if package_of(b) == "train") for a, bs in graph.items()}
    assert not {a: bs for a, bs in eval_to_train.items() if package_of(a) == "eval" and bs}


@pytest.mark.parametrize(
    "code, absent",
    [
        ("import mmtlab; mmtlab.list_presets()", ("torch", "tensorboard", "mmtlab.train", "mmtlab.model")),
        ("import mmtlab.cli; mmtlab.cli.build_parser()", ("torch", "tensorboard", "mmtlab.train.trainer")),
        (
            "import mmtlab; mmtlab.build_model('merged', scale='tiny'); import mmtlab.data, mmtlab.eval.metrics",
            ("tensorboard", "torch.utils.tensorboard", "mmtlab.train", "mmtlab.eval.retrieval"),
        ),
    ],
)
def test_importing_the_library_does_not_load_the_training_stack(code, absent):
    """``import mmtlab`` loads no torch; building a model loads neither the trainer (torch.optim schedules,
    TensorBoard) nor evaluation."""
    probe = f"{code}; import sys; print(sorted(m for m in sys.modules if m.startswith({absent!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{code!r} loaded {out.strip()}"
