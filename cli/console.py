"""What the fleet commands share on screen: the two consoles (notes on stderr, reports on stdout), the live bar per
partition and the group's status table, both redrawn from the store so they show every worker's progress."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from labelling.fleet.store import Partition

# Logs and CI are not terminals: rich would wrap at 80 columns there and squeeze the status table's columns.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(stderr=True, width=_WIDTH)  # progress and notes
report = Console(width=_WIDTH, soft_wrap=True)  # tables and the lines a user copies


def _stale(part: Partition, now: float) -> bool:
    from labelling.fleet import leases, store

    return part.status == store.RUNNING and now - (part.heartbeat_at or now) > leases.claim_lease_s()


def _state(part: Partition, now: float) -> str:
    return f"{part.status} (stale)" if _stale(part, now) else part.status


def _took(part: Partition, now: float) -> str:
    """How long the partition's current or last attempt has taken, from the store's clock fields (any worker's)."""
    from labelling.fleet import store

    if part.claimed_at is None or part.status == store.PENDING:
        return ""
    end = now if part.status == store.RUNNING else (part.finished_at or part.heartbeat_at or now)
    seconds = max(0, int(end - part.claimed_at))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _rate(part: Partition) -> str:
    return f"{part.turns_per_s:.2f}" if part.turns_per_s else "-"


class PartitionBars:
    """A live progress bar per partition of a group, redrawn from the store (so it shows any worker's progress).

    With ``poll_s`` a background thread redraws that often, so a partition that is claimed, loading its models or just
    finished shows so at once; leaving the block redraws once more, so the last frame is the store's final state.
    """

    def __init__(self, group: str, poll_s: float | None = None):
        self.group = group
        columns = [TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[state]:<9}")]
        columns += [TextColumn("{task.fields[rate]} turns/s"), TextColumn("{task.fields[worker]}")]
        columns.append(TextColumn("{task.fields[took]}"))  # from the store's clocks, so every viewer shows the same time
        self.progress = Progress(*columns, console=console)
        self.tasks: dict[str, int] = {}
        self.poll_s = poll_s
        self._lock = threading.Lock()  # the poller and the labelling thread both redraw
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def refresh(self) -> list[Partition]:
        """Read the group's partitions and redraw; returns them."""
        from labelling.fleet import store

        with self._lock:
            parts, now = store.partitions(self.group), time.time()
            for part in parts:
                fields = {"state": _state(part, now), "rate": _rate(part), "worker": part.worker or "", "took": _took(part, now)}
                if part.split not in self.tasks:
                    self.tasks[part.split] = self.progress.add_task(part.split, total=part.turns_total, **fields)
                self.progress.update(self.tasks[part.split], completed=part.turns_done, **fields)
            return parts

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # a store hiccup must not end the run; the next poll or the final redraw catches up
                continue

    def __enter__(self) -> PartitionBars:
        self.progress.start()
        self.refresh()
        if self.poll_s:
            self._poller = threading.Thread(target=self._poll, name="partition-bars", daemon=True)
            self._poller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        try:
            self.refresh()  # the last frame shows the final states, not those of the last progress report
        except Exception:
            if exc[0] is None:  # leaving on an error already: that error is the one to report
                raise
        finally:
            self.progress.stop()


@contextmanager
def step(doing: str, done: str) -> Iterator[None]:
    """One step of ours on stderr: a spinner with the elapsed time while it runs, then ``done`` and how long it took.

    The spinner's console keeps the stream it started with, so a step that captures third-party output on stderr
    (see labelling.engine.model_files) does not capture the spinner too.
    """
    pinned = Console(file=sys.stderr, width=_WIDTH)
    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=pinned, transient=True) as bar:
        bar.add_task(escape(doing), total=None)
        yield
    pinned.print(f"{escape(done)} in {time.perf_counter() - started:.0f} s")


def status_table(group: str, parts: Sequence[Partition] | None = None) -> Table:
    """The group's partitions: state, turns done / total, turns/s, JGA and act F1 so far, worker, attempts, last error.

    ``parts`` is a snapshot already read (so a caller can decide on the same states it shows); read now when None.
    """
    from labelling.fleet import store
    from labelling.fleet.export import score_cells
    from labelling.fleet.launches import current_launch
    from labelling.method.metrics import MetricsAccumulator

    head, launch, now = store.group_run(group), current_launch(group), time.time()
    title = f"group {group} · corpus {head.corpus}"
    if launch is not None:
        since = launch.ended_at or launch.submitted_at  # "ended N ago" counts from the end, "submitted" from the start
        title += f" · run {launch.run_id} ({launch.mode}, {launch.state} {_ago(now - since)} ago)"
    table = Table(title=escape(title), title_justify="left")
    for name in ("partition", "state", "turns", "turns/s", "JGA", "act F1", "worker", "attempts", "last error"):
        justify = "right" if name in ("turns", "turns/s", "JGA", "act F1", "attempts") else "left"
        # On a narrow terminal the other columns wrap first: partition names and states stay whole and on one line.
        table.add_column(name, justify=justify, no_wrap=name in ("partition", "state", "turns"))
    for part in store.partitions(group) if parts is None else parts:
        jga, _, act_f1 = score_cells(MetricsAccumulator.from_dict(part.metrics or {}).summary())
        label = part.split + (" (seed)" if part.split == head.seed_split else "")
        error = (part.last_error or "").strip().splitlines()[-1:] if part.status == store.FAILED else []
        cells = [label, _state(part, now), f"{part.turns_done}/{part.turns_total}", _rate(part), jga, act_f1]
        table.add_row(*map(escape, cells), escape(part.worker or "-"), str(part.attempts), escape(error[0][:80] if error else ""))
    return table


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
