"""``labelling corpus ls`` and ``labelling corpus rm``: the corpora ingested into the store, and removing one."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def ls() -> None:
    """List the corpora in the store: turns, splits, whether the ingest completed, and the groups labelling each."""
    from labelling.fleet import store

    with store.connect() as conn:
        rows = store.corpus_overview()
    table = Table(title=f"corpora at {escape(conn.masked_uri)}", title_justify="left")
    for name in ("corpus", "turns", "splits", "state", "groups"):
        table.add_column(name, justify="right" if name in ("turns", "splits") else "left")
    for row in rows:
        state = "complete" if row["complete"] else f"incomplete: `labelling corpus rm {row['corpus']}` or ingest it again"
        splits = "-" if row["splits"] is None else str(row["splits"])
        table.add_row(escape(row["corpus"]), f"{row['turns']:,}", splits, escape(state), escape(", ".join(row["groups"]) or "-"))
    wide = None if sys.stdout.isatty() else 200  # a log or a pipe: no wrapping of names at 80 columns
    Console(width=wide).print(table if rows else "no corpora in the store: `labelling ingest SOURCE --corpus NAME` adds one")


def rm(name: str = typer.Argument(..., help="The corpus to remove.", show_default=False)) -> None:
    """Remove a corpus from the store, or what an interrupted ingest left of it; refused while a group labels it."""
    from labelling.fleet import store

    with store.connect():
        removed = store.remove_corpus(name)
    Console().print(f"corpus {escape(name)} removed ({removed:,} turns)")


COMMANDS = {"ls": ls, "rm": rm}
