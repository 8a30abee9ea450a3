"""Claims on a corpus while it is ingested or removed, with the store's claim rules: one live holder at a time, a
heartbeat from a background thread every lease/6, and a claim taken over once its heartbeat is older than the lease
(``$LABELLING_CLAIM_LEASE_S``) or, on the same host, once its process is gone.

So ``corpus rm`` refuses a corpus an ingest is writing (and an ingest refuses one being removed or ingested by another
command), and an ingest killed with ``kill -9`` does not block the same ingest run again on this host.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mongoengine as me
from pymongo.errors import DuplicateKeyError

from labelling.errors import PartitionBusy, StoreError
from labelling.fleet.leases import beating, claim_lease_s, retrying
from labelling.fleet.mongo_server import pid_alive

log = logging.getLogger(__name__)
INGEST, REMOVAL = "ingest", "removal"
_DOING = {INGEST: "ingested", REMOVAL: "removed"}


class CorpusClaimDoc(me.Document):
    """Who is ingesting or removing a corpus right now: one document per corpus, deleted when they are done."""

    meta = {"collection": "corpus_claims", "indexes": [], "auto_create_index": False}
    id = me.StringField(primary_key=True)
    what = me.StringField()
    token = me.StringField()
    host = me.StringField()
    pid = me.IntField()
    since = me.FloatField()
    heartbeat_at = me.FloatField()


@dataclass(frozen=True)
class CorpusClaim:
    """This command's hold on a corpus; ``lost()`` says whether another command took it over (a stale heartbeat)."""

    corpus: str
    what: str
    token: str

    def lost(self) -> bool:
        return _holder(self.corpus).get("token") != self.token


def _collection():
    return CorpusClaimDoc._get_collection()


@retrying
def _holder(corpus: str) -> dict:
    return _collection().find_one({"_id": corpus}) or {}


def _live(doc: dict, now: float) -> bool:
    if doc.get("host") == socket.gethostname() and not pid_alive(int(doc.get("pid") or 0)):
        return False  # its process is gone (kill -9, a crash): no need to wait for the lease
    return now - float(doc.get("heartbeat_at") or 0.0) <= claim_lease_s()


def _busy(corpus: str, doc: dict, what: str, now: float) -> PartitionBusy:
    age = now - float(doc.get("heartbeat_at") or now)
    holder = f"{doc.get('what', 'another command')} by pid {doc.get('pid')} on {doc.get('host')}"
    doing = _DOING.get(doc.get("what", ""), "used")
    if what == REMOVAL:
        hint = "wait for it to end, then remove the corpus"
    else:
        hint = "wait for it to end; the same ingest run afterwards changes nothing" if doing == "ingested" else "wait for it"
    return PartitionBusy(
        f"corpus {corpus!r} is being {doing} right now ({holder}, heartbeat {age:.0f} s ago)",
        f"{hint}; a claim whose heartbeat is older than {claim_lease_s():g} s is taken over",
    )


@retrying
def _take(corpus: str, what: str, token: str) -> None:
    """Atomically become the corpus's holder; PartitionBusy naming the live holder otherwise. Safe to retry."""
    now = time.time()
    doc = {"what": what, "token": token, "host": socket.gethostname(), "pid": os.getpid(), "since": now, "heartbeat_at": now}
    for _ in range(3):
        try:
            _collection().insert_one({"_id": corpus, **doc})
            return
        except DuplicateKeyError:
            pass
        current = _collection().find_one({"_id": corpus})
        if current is None:
            continue  # released between our insert and our read: try again
        if current.get("token") == token:
            return  # our insert landed and only its reply was lost
        if _live(current, now):
            raise _busy(corpus, current, what, now)
        # Stale: compare and swap on the holder we saw, so of two commands taking it over exactly one wins.
        if _collection().find_one_and_update({"_id": corpus, "token": current.get("token")}, {"$set": doc}) is not None:
            return
    raise _busy(corpus, _holder(corpus), what, now)


@retrying
def _beat(claim: CorpusClaim) -> bool:
    found = _collection().update_one({"_id": claim.corpus, "token": claim.token}, {"$set": {"heartbeat_at": time.time()}})
    return found.matched_count == 1


@retrying
def _release(claim: CorpusClaim) -> None:
    _collection().delete_one({"_id": claim.corpus, "token": claim.token})


@contextmanager
def holding(corpus: str, what: str) -> Iterator[CorpusClaim]:
    """Hold ``corpus`` for an ingest or a removal while the block runs, beating its heartbeat from a background thread."""
    claim = CorpusClaim(corpus, what, uuid.uuid4().hex[:16])
    _take(corpus, what, claim.token)

    def beat() -> bool:
        if _beat(claim):
            return True
        log.warning("the %s of corpus %s lost its claim to another command", what, corpus)
        return False

    try:
        with beating(beat, claim_lease_s() / 6, f"the {what} of corpus {corpus}"):
            yield claim
    finally:
        try:
            _release(claim)
        except StoreError:
            pass  # unreachable: the claim goes stale after the lease, or our pid is seen gone
