"""The rules every claim and store operation shares: how long a claim's lease lasts, the heartbeat that keeps it, and
the retries that ride out a MongoDB restart.

Partition claims (:mod:`labelling.fleet.store`) and corpus claims (:mod:`labelling.fleet.corpus_claims`) both use
them, so they live below both: each claims module imports this one, and neither imports the other for these.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from pymongo.errors import ConnectionFailure

from labelling import settings
from labelling.errors import StoreError

_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.5, 8.0
log = logging.getLogger(__name__)
T = TypeVar("T")


def claim_lease_s() -> float:
    """How long a claim survives without a heartbeat (``$LABELLING_CLAIM_LEASE_S``, default 180 s)."""
    return settings.CLAIM_LEASE_S.get()


def retry_budget_s() -> float:
    """How long one store operation retries a server it lost (``$LABELLING_MONGODB_RETRY_S``, default 120 s)."""
    return settings.MONGODB_RETRY_S.get()


@contextmanager
def beating(beat: Callable[[], bool], every_s: float, what: str) -> Iterator[None]:
    """Call ``beat`` (one heartbeat of a claim) from a background thread every ``every_s`` seconds while the block runs.

    ``beat`` returns False once the claim is lost: the thread stops, and the holder finds out at its next guarded
    write. A store outage outlasting the retries is logged and the next beat tried. Partition and corpus claims share it.
    """
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            try:
                if not beat():
                    return
            except Exception:  # keep beating: the next beat may land
                log.warning("heartbeat for %s failed", what, exc_info=True)

    thread = threading.Thread(target=run, name=f"heartbeat {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def retrying(operation: Callable[..., T]) -> Callable[..., T]:
    """Retry ``operation`` with exponential backoff (0.5 s doubling to 8 s, logged) while the server is unreachable,
    for at most :func:`retry_budget_s`; then StoreError. Only for operations that may safely run twice: every write
    here is an upsert or a guarded ``$set``, so a write that landed before its reply was lost lands again harmlessly."""

    @functools.wraps(operation)
    def attempt(*args, **kwargs):
        deadline, pause = time.monotonic() + retry_budget_s(), _BACKOFF_FIRST_S
        while True:
            try:
                return operation(*args, **kwargs)
            except ConnectionFailure as e:  # AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreError(
                        f"MongoDB stayed unreachable for {retry_budget_s():g} s during {operation.__name__} ({type(e).__name__})",
                        f"check the server; {settings.MONGODB_RETRY_S.name} sets how long operations retry",
                    ) from e
                pause = min(pause, left)
                log.warning("MongoDB unreachable during %s (%s); retrying in %.1f s", operation.__name__, type(e).__name__, pause)
                time.sleep(pause)
                pause = min(pause * 2, _BACKOFF_MAX_S)

    return attempt
