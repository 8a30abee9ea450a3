"""What the fleet commands share on screen: the two consoles (notes on stderr, reports on stdout), the live bar per
partition and the group's status table, both redrawn from the store so they show every worker's progress."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from labelling.store import Partition

# Logs and CI are not terminals: rich would wrap at 80 columns there and squeeze the status table's columns.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(stderr=True, width=_WIDTH)  # progress and notes
report = Console(width=_WIDTH, soft_wrap=True)  # tables and the lines a user copies


def _stale(part: Partition, now: float) -> bool:
    from labelling import store

    return part.status == store.RUNNING and now - (part.heartbeat_at or now) > store.claim_lease_s()


def _state(part: Partition, now: float) -> str:
    return f"{part.status} (stale)" if _stale(part, now) else part.status


def _rate(part: Partition) -> str:
    return f"{part.turns_per_s:.2f}" if part.turns_per_s else "-"


class PartitionBars:
    """A live progress bar per partition of a group, redrawn from the store (so it shows any worker's progress)."""

    def __init__(self, group: str):
        self.group = group
        columns = [TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[state]:<9}")]
        columns += [TextColumn("{task.fields[rate]} turns/s"), TextColumn("{task.fields[worker]}"), TimeElapsedColumn()]
        self.progress = Progress(*columns, console=console)
        self.tasks: dict[str, int] = {}

    def refresh(self) -> list[Partition]:
        """Read the group's partitions and redraw; returns them."""
        from labelling import store

        parts, now = store.partitions(self.group), time.time()
        for part in parts:
            if part.split not in self.tasks:
                self.tasks[part.split] = self.progress.add_task(part.split, total=part.turns_total, state="", rate="-", worker="")
            fields = {"state": _state(part, now), "rate": _rate(part), "worker": part.worker or ""}
            self.progress.update(self.tasks[part.split], completed=part.turns_done, **fields)
        return parts

    def __enter__(self) -> PartitionBars:
        self.progress.start()
        self.refresh()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def status_table(group: str) -> Table:
    """The group's partitions: state, turns done / total, turns/s, JGA and act F1 so far, worker, attempts, last error."""
    from labelling import store
    from labelling.export import score_cells
    from labelling.launches import current_launch
    from labelling.metrics import MetricsAccumulator

    head, launch, now = store.group_run(group), current_launch(group), time.time()
    title = f"group {group} · corpus {head.corpus}"
    if launch is not None:
        since = launch.ended_at or launch.submitted_at  # "ended N ago" counts from the end, "submitted" from the start
        title += f" · run {launch.run_id} ({launch.mode}, {launch.state} {_ago(now - since)} ago)"
    table = Table(title=escape(title), title_justify="left")
    for name in ("partition", "state", "turns", "turns/s", "JGA", "act F1", "worker", "attempts", "last error"):
        table.add_column(name, justify="right" if name in ("turns", "turns/s", "JGA", "act F1", "attempts") else "left")
    for part in store.partitions(group):
        jga, _, act_f1 = score_cells(MetricsAccumulator.from_dict(part.metrics or {}).summary())
        label = part.split + (" (seed)" if part.split == head.seed_split else "")
        error = (part.last_error or "").strip().splitlines()[-1:] if part.status == store.FAILED else []
        cells = [label, _state(part, now), f"{part.turns_done}/{part.turns_total}", _rate(part), jga, act_f1]
        table.add_row(*map(escape, cells), escape(part.worker or "-"), str(part.attempts), escape(error[0][:80] if error else ""))
    return table


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
