"""The shape of the code, read from its syntax alone (no module is imported, so no TensorFlow), and the
weight of ``import imgsim``.

What DESIGN.md ("Growing the design") and STYLE.md ask, checked on every module of ``imgsim/`` (and of
``dashboard/`` and ``app.py`` where they apply):

- ``imgsim/`` never imports streamlit or the ``dashboard`` package;
- no import cycle inside ``imgsim``. An import inside a function counts like one at the top of the module:
  a lazy import hides a cycle rather than removing it (``models/base`` and ``models/clip`` were tied that
  way). Imports under ``if TYPE_CHECKING:`` do not run and do not count. A registry that names an
  implementation by a dotted string and imports it on use draws no edge, which is the point of it;
- the interface modules of a package with several implementations (``__init__.py``, ``base.py``) import none
  of their package's implementation modules;
- no module over 600 lines, and ``app.py`` at most 200;
- no comparison with a backbone's name outside ``imgsim/models/``: callers ask a backbone what it can do;
- ``import imgsim`` stays light: its public names are imported on first use.

``python tests/test_layering.py`` prints the figures of the import graph.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600
MAX_APP_LINES = 200
#: Packages holding one interface and several implementations; their interface modules (below) import none.
MULTI_IMPLEMENTATION = ("imgsim.models", "imgsim.search", "imgsim.engines")
INTERFACE_MODULES = ("__init__", "base")
BACKBONE_NAMES = frozenset({"resnet50", "clip", "efficientnet-lite0"})
FORBIDDEN_IN_LIBRARY = ("streamlit", "dashboard")


@dataclass(frozen=True)
class Module:
    """One parsed source file."""

    name: str  # dotted: imgsim.models.base, imgsim.models (its __init__.py), dashboard.state, app
    path: str  # relative to the repository root, for messages
    tree: ast.Module
    lines: int

    @property
    def is_package(self) -> bool:
        return self.path.endswith("__init__.py")

    @property
    def package(self) -> str:
        """The package a relative import in this module starts from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    """One import statement's target as written (absolute), where it is and whether it runs lazily."""

    target: str
    names: tuple[str, ...]  # the names of ``from target import a, b``; empty for ``import target``
    line: int
    lazy: bool


@dataclass(frozen=True)
class Edge:
    """``source`` imports the known module ``target``: its first module-level import, else its first lazy one."""

    source: str
    target: str
    line: int
    lazy: bool


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def parse_sources(sources: dict[str, str]) -> dict[str, Module]:
    """Modules from ``{relative path: source}`` (the self-tests feed synthetic trees through this)."""
    modules = {}
    for path, text in sources.items():
        name = module_name(Path(path))
        modules[name] = Module(name, path, ast.parse(text, filename=path), len(text.splitlines()))
    return modules


def repository_sources(root: Path = ROOT) -> dict[str, str]:
    """Every module of imgsim/ and dashboard/, and app.py, as ``{relative path: source}``."""
    files = [p for top in ("imgsim", "dashboard") for p in sorted((root / top).rglob("*.py"))
             if "__pycache__" not in p.parts]
    if (root / "app.py").is_file():
        files.append(root / "app.py")
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in files}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: Module) -> list[Import]:
    """Every import the module can run, top-level or inside functions, relative ones made absolute.

    ``importlib.import_module("x")`` and ``__import__("x")`` with a literal name are imports written another way.
    """
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, lazy)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(a.name, (), node.lineno, lazy) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.package.split(".")
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            found.append(Import(base, tuple(a.name for a in node.names), node.lineno, lazy))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            found.append(Import(node.args[0].value, (), node.lineno, lazy))
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(module.tree, False)
    return found


def _resolve(imp: Import, modules: dict[str, Module]) -> list[str]:
    """The known modules an import names: ``from a.b import c`` is ``a.b.c`` when that is a module, else ``a.b``."""
    targets = []
    for name in imp.names:
        if f"{imp.target}.{name}" in modules:
            targets.append(f"{imp.target}.{name}")
        elif imp.target in modules:
            targets.append(imp.target)
    if not imp.names:
        parts = imp.target.split(".")
        for n in range(len(parts), 0, -1):  # import a.b.c binds a, but runs (and depends on) a.b.c
            if ".".join(parts[:n]) in modules:
                targets.append(".".join(parts[:n]))
                break
    return targets


def import_graph(modules: dict[str, Module], within: str = "imgsim") -> dict[str, dict[str, Edge]]:
    """``{source: {target: Edge}}`` among the modules of the package ``within``."""
    inside = {n: m for n, m in modules.items() if n == within or n.startswith(within + ".")}
    graph: dict[str, dict[str, Edge]] = {n: {} for n in inside}
    for name, module in inside.items():
        for imp in imports_of(module):
            for target in _resolve(imp, inside):
                known = graph[name].get(target)
                if target != name and (known is None or (known.lazy and not imp.lazy)):
                    graph[name][target] = Edge(name, target, imp.line, imp.lazy)
    return graph


def strongly_connected(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (a cycle each), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _in_order(problems: list[str]) -> list[str]:
    """Problems that start with ``path:line`` sorted by file, then line."""
    def key(problem: str) -> tuple[str, int]:
        path, _, rest = problem.partition(":")
        return path, int(rest.split(" ", 1)[0])
    return sorted(problems, key=key)


def _where(modules: dict[str, Module], edge: Edge) -> str:
    how = "inside a function" if edge.lazy else "at module level"
    return f"{modules[edge.source].path}:{edge.line} imports {edge.target} ({how})"


# --- the checks: each returns the problems it finds, one line each, naming the file and line ----------------

def library_ui_imports(modules: dict[str, Module]) -> list[str]:
    """imgsim/ modules that import streamlit or the dashboard package."""
    problems = []
    for name, module in sorted(modules.items()):
        if name == "imgsim" or name.startswith("imgsim."):
            for imp in imports_of(module):
                top = imp.target.split(".")[0]
                if top in FORBIDDEN_IN_LIBRARY:
                    problems.append(f"{module.path}:{imp.line} imports {imp.target}: only dashboard/ and app.py "
                                    "may use the UI")
    return problems


def import_cycles(modules: dict[str, Module]) -> list[str]:
    """One line per cycle inside imgsim, with the imports that tie it."""
    graph = import_graph(modules)
    problems = []
    for component in strongly_connected(graph):
        members = set(component)
        ties = [_where(modules, e) for s in component for t, e in sorted(graph[s].items()) if t in members]
        problems.append(f"cycle of {len(component)} modules {', '.join(component)}: " + "; ".join(ties))
    return problems


def interface_imports(modules: dict[str, Module]) -> list[str]:
    """Interface modules of a multi-implementation package that import one of its implementations."""
    graph = import_graph(modules)
    problems = []
    for package in MULTI_IMPLEMENTATION:
        interfaces = {package} | {f"{package}.{n}" for n in INTERFACE_MODULES if n != "__init__"}
        # An implementation is what the package's registries name (and its own submodules); shared helpers
        # of the package (weights, runtimes, projections) are not, and the interface may use them.
        named = {target for target, _ in registry_strings(modules) if target.startswith(package + ".")}
        implementations = {n for n in graph if n not in interfaces
                           and any(n == t or n.startswith(t + ".") for t in named)}
        for source in sorted(interfaces & set(graph)):
            for target, edge in sorted(graph[source].items()):
                if target in implementations:
                    problems.append(f"{_where(modules, edge)}: an interface must not import an implementation of "
                                    f"its package; name it in a registry string and import it on use")
    return _in_order(problems)


def oversized(modules: dict[str, Module]) -> list[str]:
    """Modules over the line limits (app.py has its own, smaller one)."""
    problems = []
    for name, module in sorted(modules.items()):
        limit = MAX_APP_LINES if name == "app" else MAX_LINES
        if module.lines > limit:
            problems.append(f"{module.path} has {module.lines} lines (at most {limit})")
    return problems


def _backbone_strings(node: ast.expr) -> list[str]:
    values = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [v.value for v in values if isinstance(v, ast.Constant) and v.value in BACKBONE_NAMES]


def name_constants(modules: dict[str, Module]) -> set[str]:
    """Module-level names in imgsim/models/ bound to a backbone's name (``RESNET50 = "resnet50"``)."""
    names = set()
    for name, module in modules.items():
        if name.startswith("imgsim.models"):
            for node in module.tree.body:
                if isinstance(node, ast.Assign) and _backbone_strings(node.value) and not isinstance(
                        node.value, (ast.Tuple, ast.List, ast.Set)):
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def name_comparisons(modules: dict[str, Module]) -> list[str]:
    """Comparisons with a backbone's name outside imgsim/models/: the string itself, or a models/ constant
    holding it (``backbone.name == RESNET50`` asks which model it is just the same)."""
    constants = name_constants(modules)
    problems = []
    for name, module in sorted(modules.items()):
        if name == "imgsim.models" or name.startswith("imgsim.models."):
            continue
        imported = {a.asname or a.name for node in ast.walk(module.tree) if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("imgsim.models") for a in node.names if a.name in constants}
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
            elif isinstance(node, ast.MatchValue):
                operands = [node.value]
            else:
                continue
            for operand in operands:
                said = _backbone_strings(operand)
                if isinstance(operand, ast.Name) and operand.id in imported:
                    said.append(operand.id)
                if isinstance(operand, ast.Attribute) and operand.attr in constants:
                    said.append(operand.attr)
                problems.extend(f"{module.path}:{operand.lineno} compares with the backbone name {what!r}: ask the "
                                "backbone what it can do (a capability), or move the decision into imgsim/models/"
                                for what in said)
    return _in_order(problems)


def registry_strings(modules: dict[str, Module]) -> list[tuple[str, tuple[Module, ast.Constant]]]:
    """Every ``"imgsim.x.y:Name"`` string (a registry entry, imported on use): its module name and where it is."""
    found = []
    for module in modules.values():
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            target, colon, attr = node.value.partition(":")
            if colon and target.startswith("imgsim.") and attr.isidentifier() and " " not in target:
                found.append((target, (module, node)))
    return found


def registry_targets(modules: dict[str, Module]) -> list[str]:
    """``"imgsim.x.y:Name"`` strings (registries import them on use) that name no module or no such name in it."""
    problems = []
    for target, (module, node) in registry_strings(modules):
        attr = node.value.partition(":")[2]
        found = modules.get(target)
        if found is None:
            problems.append(f"{module.path}:{node.lineno} names {node.value!r}, but there is no module {target}")
        elif attr not in _top_level_names(found):
            problems.append(f"{module.path}:{node.lineno} names {node.value!r}, but {found.path} defines no {attr}")
    return problems


def _top_level_names(module: Module) -> set[str]:
    names = set()
    for node in module.tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def figures(modules: dict[str, Module]) -> str:
    """The import graph of imgsim in numbers."""
    graph = import_graph(modules)
    lib = [modules[n] for n in graph]
    largest = max(modules.values(), key=lambda m: m.lines)
    largest_lib = max(lib, key=lambda m: m.lines)
    cycles = strongly_connected(graph)
    lazy = sum(e.lazy for edges in graph.values() for e in edges.values())
    return (f"imgsim: {len(lib)} modules in {sum(m.is_package for m in lib)} packages, "
            f"{sum(map(len, graph.values()))} import edges ({lazy} inside functions), {len(cycles)} cycles"
            + "".join(f" [{' <-> '.join(c)}]" for c in cycles)
            + f"; largest {largest_lib.path} ({largest_lib.lines} lines). All {len(modules)} modules checked (with "
            f"dashboard/ and app.py): largest {largest.path} ({largest.lines} lines)")


# --- the repository ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def repo() -> dict[str, Module]:
    modules = parse_sources(repository_sources())
    print("\n" + figures(modules))
    return modules


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)


def test_library_never_imports_the_ui(repo):
    problems = library_ui_imports(repo)
    assert not problems, _report(problems)


def test_no_import_cycle_inside_imgsim(repo):
    problems = import_cycles(repo)
    assert not problems, _report(problems)


def test_interfaces_never_import_their_implementations(repo):
    problems = interface_imports(repo)
    assert not problems, _report(problems)


def test_modules_stay_small(repo):
    problems = oversized(repo)
    assert not problems, _report(problems)


def test_no_backbone_name_comparisons_outside_models(repo):
    problems = name_comparisons(repo)
    assert not problems, _report(problems)


def test_registry_strings_name_real_implementations(repo):
    problems = registry_targets(repo)
    assert not problems, _report(problems)


HEAVY = ("tensorflow", "keras", "faiss", "sklearn", "torch", "ray", "streamlit")


def test_import_imgsim_is_light_and_resolves_the_public_names():
    probe = f"""
import json, sys
heavy = {HEAVY!r}
import imgsim
after_import = sorted(m for m in heavy if m in sys.modules)
from imgsim import Collection, build_index, load_index
from imgsim.collection import Collection as C
from imgsim.build import build_index as B
from imgsim.store.generations import load_index as L
print(json.dumps({{"after_import": after_import, "version": imgsim.__version__,
                  "same": [Collection is C, build_index is B, load_index is L, imgsim.Collection is C],
                  "after_collection": sorted(m for m in heavy if m in sys.modules),
                  "listed": sorted(set(imgsim.__all__) - set(dir(imgsim)))}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["after_import"] == [], f"import imgsim loads {found['after_import']}"
    assert found["version"] == "0.1.0"
    assert found["same"] == [True, True, True, True]
    # Opening an index needs no model: DESIGN's "the dashboard can open fast and load TensorFlow lazily".
    assert not {"tensorflow", "keras"} & set(found["after_collection"]), found["after_collection"]
    assert found["listed"] == []


def test_unknown_public_name_is_an_attribute_error():
    import imgsim

    with pytest.raises(AttributeError, match="module 'imgsim' has no attribute 'Colection'"):
        imgsim.Colection  # noqa: B018 - the lookup is the test


# --- the checker itself finds what it should -----------------------------------------------------------

def synthetic(files: dict[str, str]) -> dict[str, Module]:
    """Modules from short sources written indented inside a test."""
    return parse_sources({p: textwrap.dedent(t).strip("\n") for p, t in files.items()})


def test_checker_finds_a_lazy_cycle_and_names_its_lines():
    modules = synthetic({
        "imgsim/__init__.py": "",
        "imgsim/models/__init__.py": "",
        "imgsim/models/base.py": """
            import numpy as np
            def make():
                from imgsim.models.clip import Clip
                return Clip()""",
        "imgsim/models/clip.py": "from imgsim.models.base import make",
        "imgsim/decode.py": "from . import errors",
        "imgsim/errors.py": "from .decode import x",
    })
    problems = import_cycles(modules)
    assert len(problems) == 2, problems
    assert "imgsim.models.base, imgsim.models.clip" in problems[1]
    assert "imgsim/models/base.py:3 imports imgsim.models.clip (inside a function)" in problems[1]
    assert "imgsim/models/clip.py:1 imports imgsim.models.base (at module level)" in problems[1]
    assert "imgsim/decode.py:1 imports imgsim.errors" in problems[0]  # relative imports resolved
    assert "2 cycles" in figures(modules)


def test_checker_ignores_type_checking_imports_and_string_registries():
    modules = synthetic({
        "imgsim/engines/__init__.py": "",
        "imgsim/engines/base.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from imgsim.engines.ray import RayEngine
            ENGINES = {"ray": "imgsim.engines.ray:RayEngine"}""",
        "imgsim/engines/ray.py": "from imgsim.engines.base import ENGINES\nclass RayEngine: pass",
    })
    assert import_cycles(modules) == []
    assert interface_imports(modules) == []
    assert registry_targets(modules) == []
    modules["imgsim.engines.ray"] = synthetic({"imgsim/engines/ray.py": "class Other: pass"})["imgsim.engines.ray"]
    assert registry_targets(modules) == [
        "imgsim/engines/base.py:4 names 'imgsim.engines.ray:RayEngine', but imgsim/engines/ray.py defines no RayEngine"]


def test_checker_finds_an_interface_importing_an_implementation():
    modules = synthetic({
        "imgsim/search/__init__.py": "from imgsim.search import exact",
        "imgsim/search/exact.py": "import numpy",
        "imgsim/search/ann.py": "import numpy",
        "imgsim/search/registry.py": 'METHODS = {"exact": "imgsim.search.exact:Exact", "ann": "imgsim.search.ann:Ann"}',
        "imgsim/models/__init__.py": "",
        "imgsim/models/base.py": "def f():\n    import imgsim.models.efficientnet_lite0.weights\n"
                                 "import imgsim.models.weights\n"
                                 'B = {"lite": "imgsim.models.efficientnet_lite0:Net"}',
        "imgsim/models/weights.py": "",
        "imgsim/models/efficientnet_lite0/__init__.py": "",
        "imgsim/models/efficientnet_lite0/weights.py": "",
    })
    assert interface_imports(modules) == [
        "imgsim/models/base.py:2 imports imgsim.models.efficientnet_lite0.weights (inside a function): an interface must not "
        "import an implementation of its package; name it in a registry string and import it on use",
        "imgsim/search/__init__.py:1 imports imgsim.search.exact (at module level): an interface must not import "
        "an implementation of its package; name it in a registry string and import it on use",
    ]


def test_checker_finds_ui_imports_in_the_library_only():
    modules = synthetic({
        "imgsim/serving/charts.py": """
            import os
            def draw():
                import streamlit as st""",
        "imgsim/jobs.py": "from dashboard.state import KEYS",
        "imgsim/lazy.py": "import importlib\nst = importlib.import_module('streamlit.components')",
        "dashboard/views/search.py": "import streamlit as st",
        "app.py": "import streamlit as st",
    })
    assert library_ui_imports(modules) == [
        "imgsim/jobs.py:1 imports dashboard.state: only dashboard/ and app.py may use the UI",
        "imgsim/lazy.py:2 imports streamlit.components: only dashboard/ and app.py may use the UI",
        "imgsim/serving/charts.py:3 imports streamlit: only dashboard/ and app.py may use the UI",
    ]


def test_checker_finds_long_modules_and_a_long_app():
    modules = synthetic({"app.py": "x = 1\n" * 201, "imgsim/a.py": "x = 1\n" * 601, "imgsim/b.py": "x = 1\n" * 600,
                         "dashboard/v.py": "x = 1\n" * 200})
    assert oversized(modules) == ["app.py has 201 lines (at most 200)", "imgsim/a.py has 601 lines (at most 600)"]


def test_checker_finds_backbone_name_comparisons():
    modules = synthetic({
        "imgsim/models/base.py": 'RESNET50 = "resnet50"\nCLIP = "clip"\nBACKBONES = (RESNET50, CLIP)\n'
                                 'def f(n):\n    return n == "clip"',
        "imgsim/collection.py": """
            from imgsim.models.base import RESNET50
            from imgsim.models import base
            def f(spec):
                if spec.name == RESNET50 or "clip" != spec.name:
                    return spec.name in ("efficientnet-lite0", "other")
                return base.CLIP == spec.name or spec.pooling == "avg" or spec.name == "clip_vit_base_patch32"
            """,
        "app.py": 'def g(name):\n    match name:\n        case "resnet50":\n            return 1',
    })
    assert [p.split(": ask")[0] for p in name_comparisons(modules)] == [
        "app.py:3 compares with the backbone name 'resnet50'",
        "imgsim/collection.py:4 compares with the backbone name 'RESNET50'",
        "imgsim/collection.py:4 compares with the backbone name 'clip'",
        "imgsim/collection.py:5 compares with the backbone name 'efficientnet-lite0'",
        "imgsim/collection.py:6 compares with the backbone name 'CLIP'",
    ]


if __name__ == "__main__":
    print(figures(parse_sources(repository_sources())))
