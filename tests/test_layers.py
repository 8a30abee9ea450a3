"""The package's layers hold: each wing imports only the shared vocabulary and the wings below it.

    root (the shared vocabulary: config, schema, states, acts, turns, records, corpus, errors, settings, ...)
      < engine (the language model)
      < method (the labelling method)
      < fleet (the store and a group's life) and bench (benchmarks), which never import each other

Imports inside functions and under ``TYPE_CHECKING`` count too. The front door (``labelling/__init__.py``) names the
public API lazily and is the one root module allowed to point into the wings. Nothing in the package imports Celery,
the CLI or the task modules: those live outside it and import the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labelling"
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
