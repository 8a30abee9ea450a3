"""Markdown rendering shared by the benchmark reports (`labelling bench`, `labelling quality`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def markdown_table(setup: Mapping[str, object], header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A report as markdown: its setup on one line (unset entries left out), then the table."""
    described = ", ".join(f"{k} {v}" for k, v in setup.items() if v is not None)
    lines = [f"Setup: {described}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
