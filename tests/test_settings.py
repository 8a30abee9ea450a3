"""The settings table: every environment variable declared once, parsed with validation, and the README listing exactly
those variables."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from labelling import settings
from labelling.errors import SettingError

README = Path(__file__).resolve().parents[1] / "README.md"
# Read by huggingface_hub and CUDA themselves; the README names the hub ones for gated models, their cache and
# `export --push-to-hub`, and `labelling worker` sets CUDA_VISIBLE_DEVICES from --gpu.
THIRD_PARTY = {"HF_TOKEN", "HF_HOME", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES"}


def _readme_table_names() -> set[str]:
    text = README.read_text(encoding="utf-8")
    table = text.split("Environment variables (all optional", 1)[1].split("\n\n", 2)[1]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    return {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}


def test_the_readme_lists_exactly_the_declared_variables():
    declared = {s.name for s in settings.SETTINGS}
    assert len(declared) == len(settings.SETTINGS)  # each name declared once
    assert _readme_table_names() - THIRD_PARTY == declared


def _environment_reads(path: Path) -> list[tuple[int, str]]:
    """(line, first argument) of every read of ``os.environ`` in a file: ``.get(...)``, ``getenv(...)`` and ``[...]``."""
    reads = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            owner = node.func.value
            if (node.func.attr == "get" and ast.unparse(owner).endswith("environ")) or node.func.attr == "getenv":
                reads.append((node.lineno, ast.unparse(node.args[0])))
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and ast.unparse(node.value).endswith("environ"):
            reads.append((node.lineno, ast.unparse(node.slice)))
    return reads


def test_no_variable_of_ours_is_read_outside_the_settings_module():
    repo = README.parent
    files = [*repo.glob("labelling/**/*.py"), *repo.glob("cli/*.py"), *repo.glob("tasks/*.py"), *repo.glob("benchmarks/*.py")]
    outside = [
        f"{path.relative_to(repo)}:{line} reads {name}"
        for path in [*files, repo / "celeryconfig.py"]
        if path.name != "settings.py"
        for line, name in _environment_reads(path)
        if name.strip("'\"") not in THIRD_PARTY | {"HF_HUB_OFFLINE"}  # huggingface_hub's own variables
    ]
    assert outside == []


def test_the_read_finder_sees_every_form_of_read(tmp_path):
    code = 'import os\na = os.environ.get("LABELLING_A")\nb = os.getenv(NAME)\nc = os.environ["C"]\nos.environ["D"] = "1"\n'
    (tmp_path / "m.py").write_text(code)
    assert _environment_reads(tmp_path / "m.py") == [(2, "'LABELLING_A'"), (3, "NAME"), (4, "'C'")]


def test_values_parse_and_bad_ones_name_their_variable(monkeypatch):
    monkeypatch.delenv(settings.CLAIM_LEASE_S.name, raising=False)
    assert settings.CLAIM_LEASE_S.get() == 180.0
    monkeypatch.setenv(settings.CLAIM_LEASE_S.name, " 30 ")
    assert settings.CLAIM_LEASE_S.get() == 30.0
    monkeypatch.setenv(settings.TASK_MAX_RETRIES.name, "3")
    assert settings.TASK_MAX_RETRIES.get() == 3
    for setting, raw, why in [
        (settings.CLAIM_LEASE_S, "soon", "is not a number"),
        (settings.CLAIM_LEASE_S, "0", "must be positive"),
        (settings.MONGODB_RETRY_S, "-1", "must not be negative"),
        (settings.TASK_MAX_RETRIES, "2.5", "is not a whole number"),
    ]:
        monkeypatch.setenv(setting.name, raw)
        with pytest.raises(SettingError, match=f"{setting.name}='{re.escape(raw)}' {why} \\(fix or unset {setting.name}\\)"):
            setting.get()
