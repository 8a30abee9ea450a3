"""``labelling status``: a group's partitions as a table, once or redrawn until nothing is pending or running."""

from __future__ import annotations

import time

import typer
from rich.live import Live

from cli.console import report, status_table


def status(
    group: str = typer.Option(..., "--group", "-g", help="The labelling group."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Redraw until no partition is pending or running."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, max=3600, help="Seconds between redraws with --watch."),
) -> None:
    """Show a group's partitions: state, turns done / total, turns/s, JGA and act F1 so far, worker, attempts, last error."""
    from labelling.fleet import store

    with store.connect():
        if not watch:
            report.print(status_table(group))
            return
        with Live(console=report, auto_refresh=False) as live:
            while True:  # one snapshot per frame: the loop ends on the very states the last frame shows
                parts = store.partitions(group)
                live.update(status_table(group, parts), refresh=True)
                if not any(p.status in (store.PENDING, store.RUNNING) for p in parts):
                    return
                time.sleep(interval)
