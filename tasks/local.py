"""The embedded mode: a run's chord executed in this process, with no broker, by the same functions the tasks run.

Chord semantics are kept: the seed partition is labelled first, alone, and only then each dependent, so every
dependent starts from an example pool that holds the seed's labels. Used when ``LABELLING_BROKER_URL`` is unset, with
``labelling run --local``, and by ``labelling demo``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from tasks.partition import dependents, label_one, limit_threads

SplitProgress = Callable[[str, int, int], None]


def local_worker() -> str:
    """The worker name recorded on partitions labelled in process."""
    return f"local@{socket.gethostname()}"


def run_local(group: str, seed_split: str, on_progress: SplitProgress | None = None) -> list[dict]:
    """Label the seed split, then every other unfinished split of ``group``; returns each partition's summary.

    Stops at the first partition that fails: it is marked failed in the store, and the next run resumes it.
    """
    limit_threads()
    worker = local_worker()
    results = [label_one(group, seed_split, worker, _for_split(on_progress, seed_split))]
    for split in dependents(group, seed_split):
        results.append(label_one(group, split, worker, _for_split(on_progress, split)))
    return results


def _for_split(on_progress: SplitProgress | None, split: str) -> Callable[[int, int], None] | None:
    if on_progress is None:
        return None
    return lambda done, total: on_progress(split, done, total)
