"""Launch records: one live launch per group, so two ``labelling run`` commands on the same group do not both submit.

Each group has one launch document in the store (:class:`labelling.fleet.store.LaunchDoc`); a new launch replaces it by
compare-and-swap, so of two commands launching at the same moment exactly one wins. A launch is *live* while it was
submitted, its process (for an in-process launch on this host) is alive, and its group has work left.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from enum import Enum

from pymongo.errors import DuplicateKeyError

from labelling.errors import FleetError
from labelling.fleet import store
from labelling.fleet.leases import retrying
from labelling.fleet.mongo_server import pid_alive


class LaunchMode(str, Enum):
    """Where a launch labels: on the Celery fleet, or in the launching process."""

    FLEET = "fleet"
    LOCAL = "local"


class LaunchState(str, Enum):
    """A launch is submitted until an in-process launch ends (a fleet launch is never marked ended: its tasks are)."""

    SUBMITTED = "submitted"
    ENDED = "ended"


FLEET, LOCAL = LaunchMode.FLEET.value, LaunchMode.LOCAL.value
SUBMITTED, ENDED = LaunchState.SUBMITTED.value, LaunchState.ENDED.value
_RESUBMIT = "if its tasks were lost (a purged queue, a broker reset), pass --resubmit: tasks are idempotent"


@dataclass(kw_only=True)
class Launch:
    """Who launched a group's current run, how (fleet or local) and when; ``run_id`` names its Celery tasks."""

    run_id: str
    group: str
    corpus: str
    seed_split: str
    mode: str
    host: str
    pid: int
    submitted_at: float
    state: str = SUBMITTED
    ended_at: float | None = None


def _collection():
    store.connect()
    return store.LaunchDoc._get_collection()


@retrying
def current_launch(group: str) -> Launch | None:
    """The group's latest launch, if it has one."""
    doc = _collection().find_one({"_id": group})
    return Launch(**{k: v for k, v in doc.items() if k != "_id"}) if doc else None


def is_live(launch: Launch | None) -> bool:
    """Whether a launch may still be labelling: submitted, its process alive (local runs on this host), work left."""
    if launch is None or launch.state != SUBMITTED:
        return False
    if launch.mode == LOCAL and launch.host == socket.gethostname() and not pid_alive(launch.pid):
        return False
    return any(p.status in (store.PENDING, store.RUNNING) for p in store.partitions(launch.group))


def claim_launch(group: str, corpus: str, seed_split: str, mode: str, resubmit: bool = False) -> Launch:
    """Record a new launch of ``group``, atomically; FleetError when a live launch exists (unless ``resubmit``) or when
    another command claimed the group at the same moment."""
    previous = current_launch(group)
    if is_live(previous) and not resubmit:
        raise FleetError(_live_message(previous), f"watch it with `labelling status --group {group} --watch`; {_RESUBMIT}")
    launch = Launch(
        run_id=uuid.uuid4().hex[:12],
        group=group,
        corpus=corpus,
        seed_split=seed_split,
        mode=mode,
        host=socket.gethostname(),
        pid=os.getpid(),
        submitted_at=time.time(),
    )
    if not _swap(previous, launch):
        raise FleetError(f"another `labelling run` launched group {group!r} at the same moment", "nothing was submitted")
    return launch


@retrying
def _swap(previous: Launch | None, launch: Launch) -> bool:
    """Replace ``previous`` by ``launch`` only if it is still the group's launch; True when ``launch`` is now recorded.

    A retry after a lost reply finds its own launch recorded and counts that as a success, so retrying is safe.
    """
    doc = asdict(launch)
    try:
        if previous is None:
            _collection().insert_one({"_id": launch.group, **doc})
            return True
        # Compare and swap: only the command that still sees the launch it read replaces it.
        if _collection().find_one_and_update({"_id": launch.group, "run_id": previous.run_id}, {"$set": doc}) is not None:
            return True
    except DuplicateKeyError:
        pass
    now = current_launch(launch.group)
    return now is not None and now.run_id == launch.run_id


@retrying
def end_launch(launch: Launch) -> None:
    """Mark a local launch over (done, failed or interrupted), so the next run of the group need not wait for it."""
    _collection().update_one({"_id": launch.group, "run_id": launch.run_id}, {"$set": {"state": ENDED, "ended_at": time.time()}})


def _live_message(launch: Launch) -> str:
    age = time.time() - launch.submitted_at
    return (
        f"group {launch.group!r} is already being labelled by run {launch.run_id} "
        f"({launch.mode}, launched from {launch.host} {age:.0f} s ago)"
    )
