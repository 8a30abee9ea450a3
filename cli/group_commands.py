"""``labelling group rm``: delete a labelling group and its labels, so a run can start over or its corpus be removed."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from labelling.errors import LabellingError


def rm(
    name: str = typer.Argument(..., help="The group to remove.", show_default=False),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (needed when not on a terminal)."),
) -> None:
    """Delete a group: its labels, manifest entries, partitions and launch record; refused while anything labels it.

    Export the group first to keep its labels. Its corpus stays; `labelling corpus rm` removes it once no group uses it.
    """
    from labelling.fleet import groups, store

    with store.connect():
        parts = store.partitions(name)  # an unknown group fails here, before any question
        labelled = sum(p.turns_done for p in parts)
        groups.check_removable(name)  # a busy group is refused before any question, --yes or not
        if not yes:
            if not sys.stdin.isatty():
                raise LabellingError(f"removing group {name!r} deletes {labelled:,} labels", "pass --yes to confirm")
            typer.confirm(f"delete group {name} ({len(parts)} partitions, {labelled:,} labelled turns)?", abort=True)
        counts = groups.remove_group(name)
    shown = ", ".join(f"{n:,} {what}" for what, n in counts.items())
    Console().print(f"group {escape(name)} removed ({shown})")


COMMANDS = {"rm": rm}
