"""The package's layers hold: each wing imports only the shared vocabulary and the wings below it.

    root (the shared vocabulary: config, schema, states, acts, turns, records, corpus, errors, settings, ...)
      < engine (the language model)
      < method (the labelling method)
      < fleet (the store and a group's life) and bench (benchmarks), which never import each other

Imports inside functions and under ``TYPE_CHECKING`` count too. The front door (``labelling/__init__.py``) names the
public API lazily and is the one root module allowed to point into the wings. Nothing in the package imports Celery,
the CLI or the task modules: those live outside it and import the package.

Two finer rules hold across the whole code (the package, ``cli/``, ``tasks/`` and ``celeryconfig.py``): no two modules
import each other, directly or around a longer circle, even through an import inside a function (a lazy import only
hides a circle, so every import counts); and every import is absolute, so the checks here see it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE = REPOSITORY / "labelling"
CODE = ("labelling", "cli", "tasks", "celeryconfig.py")  # every importable module of the project, tests aside
RANK = {"root": 0, "engine": 1, "method": 2, "fleet": 3, "bench": 3}
FRONT_DOOR = "__init__.py"
OUTSIDE = {"celery", "kombu", "flower", "typer", "rich", "cli", "tasks", "celeryconfig"}


def wing_of_file(path: Path, package: Path) -> str:
    """The wing a source file belongs to: its folder under the package, or "root" (the data folder is root too)."""
    parts = path.relative_to(package).parts
    return parts[0] if len(parts) > 1 and parts[0] in RANK else "root"


def wing_of_module(dotted: str) -> str | None:
    """The wing of an imported module name, "root" for the package's own top-level modules, None outside the package."""
    parts = dotted.split(".")
    if parts[0] != "labelling":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "root"


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in a file; ``from labelling import x`` names the module ``labelling.x``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("labelling", *(f"labelling.{w}" for w in RANK)):
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def violations(package: Path) -> list[str]:
    """Every import in ``package`` that points up a layer, across between fleet and bench, or out to Celery or the CLI."""
    out = []
    for path in sorted(package.rglob("*.py")):
        wing = wing_of_file(path, package)
        where = path.relative_to(package.parent)
        for line, module in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            if module.split(".")[0] in OUTSIDE:
                out.append(f"{where}:{line} imports {module}: the package never imports Celery or the CLI")
                continue
            target = wing_of_module(module)
            if target is None or target == wing or (wing == "root" and path.name == FRONT_DOOR and path.parent == package):
                continue
            if RANK[target] >= RANK[wing]:
                out.append(f"{where}:{line} ({wing}) imports {module} ({target})")
    return out


def test_no_wing_imports_upward_or_sideways():
    assert violations(PACKAGE) == []


def test_every_wing_states_its_rule():
    for wing in RANK.keys() - {"root"}:
        doc = ast.get_docstring(ast.parse((PACKAGE / wing / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "Rule:" in doc, f"labelling/{wing}/__init__.py must state its import rule"


@pytest.mark.parametrize(
    ("wing", "line", "why"),
    [
        ("engine", "from labelling.method import prompts", "engine"),
        ("method", "from labelling.fleet import store", "method"),
        ("fleet", "from labelling.bench import quality", "fleet"),
        ("records.py", "from labelling.method.channel import choose", "root"),
        ("method", "from labelling import engine, fleet", "method"),
        ("engine", "import celery", "Celery"),
    ],
)
def test_the_checker_catches_an_upward_import(tmp_path, wing, line, why):
    """The check is not vacuous: a copy of the package with one bad import planted fails it, naming the file."""
    package = tmp_path / "labelling"
    for wing_name in RANK.keys() - {"root"}:
        (package / wing_name).mkdir(parents=True)
        (package / wing_name / "__init__.py").write_text('"""Rule: ..."""\n')
    target = package / wing if wing.endswith(".py") else package / wing / "planted.py"
    target.write_text(f"{line}\n")
    found = violations(package)
    assert len(found) == 1 and why in found[0] and target.name in found[0]


def code_files(top: Path, code: tuple[str, ...] = CODE) -> dict[str, Path]:
    """Every module under ``top`` named in ``code`` (folders and single files), by dotted name (a package by its folder)."""
    found = {}
    for name in code:
        paths = [top / name] if name.endswith(".py") else sorted((top / name).rglob("*.py"))
        for path in paths:
            parts = path.relative_to(top).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {module it imports: first line}, for the imports that name one of ``modules`` (wherever they stand in
    the file: top level, inside a function, under ``TYPE_CHECKING``); ``from a import b`` is the module ``a.b`` when
    there is one, ``a`` otherwise."""

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return None

    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [resolve(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [resolve(f"{node.module}.{alias.name}") for alias in node.names]
            else:
                continue
            for target in targets:
                if target is not None and target != name:
                    edges.setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import circles: each set of modules that reach one another (Tarjan's strongly connected components, more
    than one module each), sorted, so a failure names every module of every circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, {}):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def describe_cycle(component: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path], top: Path) -> str:
    """One circle as the imports that close it: ``a.py:12 imports b; b.py:40 imports a``."""
    inside = set(component)
    arrows = [
        f"{modules[source].relative_to(top)}:{line} imports {target}"
        for source in component
        for target, line in sorted(graph[source].items())
        if target in inside
    ]
    return "; ".join(arrows)


def import_cycles(top: Path, code: tuple[str, ...] = CODE) -> list[str]:
    """Every import circle among the modules under ``top``, described by the imports that make it."""
    modules = code_files(top, code)
    graph = import_graph(modules)
    return [describe_cycle(component, graph, modules, top) for component in cycles(graph)]


def relative_imports(top: Path, code: tuple[str, ...] = CODE) -> list[str]:
    """Every ``from .x import y`` under ``top``: the layer and cycle checks read absolute names only, so none may hide."""
    out = []
    for path in code_files(top, code).values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                out.append(f"{path.relative_to(top)}:{node.lineno} imports {'.' * node.level}{node.module or ''} relatively")
    return sorted(out)


def test_no_module_imports_itself_around_a_circle():
    assert import_cycles(REPOSITORY) == []


def test_every_import_is_absolute():
    assert relative_imports(REPOSITORY) == []


def _scratch(tmp_path: Path, files: dict[str, str]) -> Path:
    """A scratch tree of the project's shape (the package with its wings, cli/, tasks/) holding ``files``."""
    for folder in ("labelling", "labelling/fleet", "cli", "tasks"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "__init__.py").write_text('"""Rule: ..."""\n')
    (tmp_path / "celeryconfig.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "members"),
    [
        (  # the shape config <-> schema had: one side imports at the top, the other inside a function
            {
                "labelling/config.py": "from labelling.schema import Schema\n",
                "labelling/schema.py": "def load():\n    from labelling.config import file_problem\n",
            },
            ("labelling/config.py:1 imports labelling.schema", "labelling/schema.py:2 imports labelling.config"),
        ),
        (  # the shape store <-> corpus_claims had, as module imports inside a wing
            {
                "labelling/fleet/store.py": "def ingest():\n    from labelling.fleet.corpus_claims import holding\n",
                "labelling/fleet/corpus_claims.py": "from labelling.fleet import store\n",
            },
            ("store.py:2 imports labelling.fleet.corpus_claims", "corpus_claims.py:1 imports labelling.fleet.store"),
        ),
        (  # three modules around, one under TYPE_CHECKING, one outside the package
            {
                "labelling/a.py": "import labelling.b\n",
                "labelling/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import cli.c\n",
                "cli/c.py": "from labelling import a\n",
            },
            ("labelling/a.py:1 imports labelling.b", "labelling/b.py:3 imports cli.c", "cli/c.py:1 imports labelling.a"),
        ),
    ],
)
def test_the_checker_catches_a_planted_cycle(tmp_path, files, members):
    """The cycle check is not vacuous: a planted circle, lazy or not, fails it, naming each import that closes it."""
    found = import_cycles(_scratch(tmp_path, files))
    assert len(found) == 1, found
    assert all(member in found[0] for member in members), found


def test_the_checker_catches_a_relative_import(tmp_path):
    top = _scratch(tmp_path, {"labelling/fleet/runner.py": "def run():\n    from .store import claim\n"})
    assert relative_imports(top) == ["labelling/fleet/runner.py:2 imports .store relatively"]
    assert import_cycles(top) == []
