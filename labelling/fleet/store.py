"""The MongoDB store, through mongoengine: corpus turns, a group's partitions, labels and manifest, and the atomic
operations a fleet of workers needs to share them safely.

Each document's ``_id`` is its natural key joined with ``/`` (``group/dialogue/turn`` ...) and the same key also has a
unique compound index. Every write is an upsert on ``_id``: repeating it changes nothing, and nx-27017 serves
``_id`` matches about ten times faster than compound-key matches. Operations retry a server that went away (a restart)
with exponential backoff for ``$LABELLING_MONGODB_RETRY_S`` (:mod:`labelling.fleet.leases`), which that idempotence makes safe.

The module keeps clear of what the embedded nx-27017 server gets wrong (measured with pymongo 4.20 / nx-27017 0.8.1):
times are stored as Unix seconds (it returns datetimes as strings), arrays are rewritten whole with ``$set`` (``$push``
of a subdocument turns the array into JSON strings), booleans live only inside subdocuments (``$set`` of a top-level
``True`` on an existing document stores ``1``), reads project top-level fields only (a dotted projection comes back as
a flat ``"a.b"`` key), and nothing uses ``replace_one`` (on a document with a compound unique index it fails as a
duplicate key), transactions, TTL indexes or ``$regex`` through arrays.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import mongoengine as me
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from labelling import config as job_config
from labelling import settings
from labelling.errors import ClaimLost, ConfigError, PartitionBusy, StoreError
from labelling.fleet.corpus_claims import INGEST, REMOVAL, holding
from labelling.fleet.leases import claim_lease_s, retrying
from labelling.fleet.mongo_server import EmbeddedServer, ensure_server
from labelling.records import PoolRefresh, TurnLabel, labelled_examples
from labelling.redact import mask_uri
from labelling.schema import Schema
from labelling.states import strip_blanks
from labelling.turns import Turn

DEFAULT_DATABASE = "labelling"
_CHUNK = 1000  # documents per bulk write: big enough to amortise round trips, small enough for the 16 MB message limit
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME_LENGTH = 100  # corpus and group names: they appear in every message, key and dataset name
_AUTH_CODES = (13, 18)  # Unauthorized, AuthenticationFailed
log = logging.getLogger(__name__)


class PartitionStatus(str, Enum):
    """Where a partition of a group stands; stored as its plain value."""

    PENDING = "pending"  # never claimed
    RUNNING = "running"  # claimed; taken over when its heartbeat is older than the lease
    DONE = "done"
    FAILED = "failed"  # its error is on the partition; the next run claims it again

    __str__ = str.__str__  # "done", not "PartitionStatus.DONE", wherever a status is printed
    __format__ = str.__format__


PENDING, RUNNING, DONE, FAILED = (PartitionStatus.PENDING, PartitionStatus.RUNNING, PartitionStatus.DONE, PartitionStatus.FAILED)


# --- documents -----------------------------------------------------------------------------------------------


def _meta(collection: str, *indexes: dict) -> dict:
    return {"collection": collection, "indexes": list(indexes), "auto_create_index": False}


class TurnDoc(me.Document):
    """One turn of an ingested corpus: the reference's row (``Turn.to_row``) and its position in the corpus."""

    meta = _meta("turns", {"fields": ["corpus", "split", "dialogue_id", "turn_id"], "unique": True})
    id = me.StringField(primary_key=True)
    corpus = me.StringField(required=True)
    split = me.StringField(required=True)
    dialogue_id = me.StringField(required=True)
    turn_id = me.IntField(required=True)
    order = me.IntField(required=True)
    row = me.DictField()


class CorpusDoc(me.Document):
    """A completely ingested corpus: its turns are written first, and this record last, so a corpus without one
    (an interrupted ingest or removal) is never labelled."""

    meta = _meta("corpora")
    id = me.StringField(primary_key=True)
    turns = me.IntField(required=True)
    splits = me.IntField(required=True)
    ingested_at = me.FloatField()


class GroupRun(me.Document):
    """A labelling group: which corpus it labels, with which job config, and which split seeds it."""

    meta = _meta("runs", {"fields": ["group_id"], "unique": True})
    id = me.StringField(primary_key=True)
    group_id = me.StringField(required=True)
    corpus = me.StringField(required=True)
    config = me.DictField()
    seed_split = me.StringField()
    created_at = me.FloatField()


class Partition(me.Document):
    """One split of a group: claim and status, timings (Unix seconds), progress, metrics and the example-pool history."""

    meta = _meta("partitions", {"fields": ["group_id", "split"], "unique": True})
    id = me.StringField(primary_key=True)
    group_id = me.StringField(required=True)
    split = me.StringField(required=True)
    corpus = me.StringField(required=True)
    order = me.IntField(default=0)
    status = me.StringField(default=PENDING, choices=(PENDING, RUNNING, DONE, FAILED))
    attempts = me.IntField(default=0)
    worker = me.StringField()
    claim = me.StringField()
    attempt_id = me.StringField(db_field="run_id")  # the claim token of the latest attempt (stored under its old name)
    claimed_at = me.FloatField()
    started_at = me.FloatField()
    heartbeat_at = me.FloatField()
    finished_at = me.FloatField()
    turns_total = me.IntField(default=0)
    turns_done = me.IntField(default=0)
    turns_per_s = me.FloatField()
    metrics = me.DictField()
    pool = me.ListField(me.DictField())
    last_error = me.StringField()
    config = me.DictField()


class LabelDoc(me.Document):
    """The label of one turn in one group (``TurnLabel.to_dict`` without its metrics, which sit beside it)."""

    meta = _meta("labels", {"fields": ["group_id", "dialogue_id", "turn_id"], "unique": True}, {"fields": ["group_id", "split"]})
    id = me.StringField(primary_key=True)
    group_id = me.StringField(required=True)
    split = me.StringField(required=True)
    dialogue_id = me.StringField(required=True)
    turn_id = me.IntField(required=True)
    batch = me.IntField(db_field="wave")  # the stored name predates the word batch
    seq = me.IntField()
    attempt_id = me.StringField(db_field="run_id")  # the attempt that wrote it
    label = me.DictField()
    metrics = me.DictField()
    written_at = me.FloatField()
    written_by = me.ListField(me.StringField())  # ATTEMPT/BATCH of every write: more than one entry is a duplicate write
    vectors = me.DictField()  # module -> the example vector its index embedded (ExampleIndex.stored_vectors records)


class ManifestDoc(me.Document):
    """The reference's manifest entry for a completed partition: at most one per (group, split) and per (group, run_id),
    where the reference's ``run_id`` is the attempt that completed the split."""

    meta = _meta(
        "manifest", {"fields": ["group_id", "run_id"], "unique": True}, {"fields": ["group_id", "split"], "unique": True}
    )
    id = me.StringField(primary_key=True)
    group_id = me.StringField(required=True)
    run_id = me.StringField(required=True)
    split = me.StringField(required=True)
    corpus = me.StringField(required=True)
    num_logs = me.IntField(required=True)
    created_at = me.FloatField()


class LaunchDoc(me.Document):
    """A group's latest launch (see :mod:`labelling.fleet.launches`): one document per group, swapped by each new launch."""

    meta = _meta("launches", {"fields": ["group"], "unique": True})
    id = me.StringField(primary_key=True)
    group = me.StringField(required=True)
    run_id = me.StringField(required=True)
    corpus = me.StringField()
    seed_split = me.StringField()
    mode = me.StringField()
    host = me.StringField()
    pid = me.IntField()
    submitted_at = me.FloatField()
    state = me.StringField()
    ended_at = me.FloatField()


class ExampleDoc(me.Document):
    """One turn of a group's seed examples (labelling/examples.py): its text and labels as a turn row, where they came
    from and their provenance (``given``: a person's labels; ``self-labelled``: an earlier export's). Stored when the
    group is created and read by every attempt at every partition, so a resumed run keeps the same examples."""

    meta = _meta("examples", {"fields": ["group_id", "order"], "unique": True})
    id = me.StringField(primary_key=True)
    group_id = me.StringField(required=True)
    dialogue_id = me.StringField(required=True)
    turn_id = me.IntField(required=True)
    order = me.IntField(required=True)
    row = me.DictField()
    provenance = me.StringField(required=True)
    source = me.StringField()
    digest = me.StringField()


DOCUMENTS = (TurnDoc, CorpusDoc, GroupRun, Partition, LabelDoc, ManifestDoc, LaunchDoc, ExampleDoc)


# --- connection ----------------------------------------------------------------------------------------------


@dataclass
class Connection:
    """A handle on the live connection. Only the handle that opened it (``owned``) closes it, and lets go of the
    embedded server (which stops once no command uses it); handles given out for an existing connection close nothing."""

    uri: str
    server: EmbeddedServer | None = None
    owned: bool = True

    @property
    def masked_uri(self) -> str:
        """The URI with any password hidden: the only form to print or log."""
        return mask_uri(self.uri)

    def close(self) -> None:
        """Disconnect and let go of the embedded server; nothing for a borrowed handle."""
        if not self.owned:
            return
        disconnect()
        if self.server is not None:
            self.server.release()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_current: Connection | None = None


def connect(uri: str | None = None, timeout_ms: int | None = None) -> Connection:
    """Connect mongoengine to ``uri``, else ``$LABELLING_MONGODB_URI``, else the embedded server; reuses a live connection.

    Fails with StoreError, naming the masked URI, when the server does not answer within the timeout
    (``$LABELLING_MONGODB_TIMEOUT_MS``, default 5 s) or refuses the credentials.
    """
    global _current
    uri = uri or settings.MONGODB_URI.get()
    if _current is not None and uri in (None, _current.uri):
        return replace(_current, server=None, owned=False)
    server = None
    if uri is None:
        server = ensure_server()
        uri = server.uri
    disconnect()
    try:
        _open(uri, timeout_ms or settings.MONGODB_TIMEOUT_MS.get())
    except BaseException:
        me.disconnect()
        if server is not None:
            server.release()
        raise
    _current = Connection(uri, server)
    return _current


def _open(uri: str, ms: int) -> None:
    """Register the mongoengine connection, check the server answers and accepts us, and create the indexes."""
    options = {"serverSelectionTimeoutMS": ms, "connectTimeoutMS": ms, "uuidRepresentation": "standard"}
    try:
        me.connect(db=_database_name(uri), host=uri, **options)
    except (PyMongoError, ValueError) as e:  # the parser's message may quote the URI, password included: not shown
        hint = f"check {settings.MONGODB_URI.name}; a user name or password must be URL-escaped (urllib.parse.quote_plus)"
        raise StoreError(f"{mask_uri(uri)} is not a usable MongoDB URI ({type(e).__name__})", hint) from None
    _check_server(uri, ms)
    for document in DOCUMENTS:
        document.ensure_indexes()


def disconnect() -> None:
    """Drop the current connection (a forked worker process must reconnect before using the store)."""
    global _current
    me.disconnect()
    _current = None


def _database_name(uri: str) -> str:
    """The database named in the URI's path, else ``labelling`` (parsed by hand: pymongo's parser resolves SRV names)."""
    rest = uri.partition("://")[2].partition("?")[0]
    name = rest.partition("/")[2]
    return name or DEFAULT_DATABASE


def _check_server(uri: str, ms: int) -> None:
    """Ping once, so an unreachable server or refused credentials fail here, with the masked URI, not mid-run."""
    masked = mask_uri(uri)
    try:
        me.get_connection().admin.command("ping")
    except OperationFailure as e:
        if e.code in _AUTH_CODES:
            hint = f"check the user and password in {settings.MONGODB_URI.name}"
            raise StoreError(f"MongoDB at {masked} refused the credentials", hint) from e
        raise StoreError(f"MongoDB at {masked} refused the connection ({e.code}: {e.details})") from e
    except PyMongoError as e:
        raise StoreError(
            f"MongoDB at {masked} is unreachable (no answer within {ms / 1000:g} s)",
            f"start it or fix {settings.MONGODB_URI.name}; leave it unset to use the embedded server",
        ) from e
    except Exception as e:  # pymongo's SCRAM client raises KeyError when a server (nx-27017) cannot authenticate
        raise StoreError(
            f"MongoDB at {masked} failed the authentication handshake ({type(e).__name__}: {e})",
            f"check the credentials in {settings.MONGODB_URI.name}; the embedded nx-27017 server takes none",
        ) from e


# --- small helpers -------------------------------------------------------------------------------------------


def _key(*parts: object) -> str:
    # Only the dialogue id is free text and it never sits at either end, so the joined key is unambiguous.
    return "/".join(str(p) for p in parts)


def _check_name(name: str, kind: str) -> str:
    if len(name or "") > MAX_NAME_LENGTH:
        raise StoreError(
            f"{kind} name {_short(name)!r} is {len(name):,} characters long", f"use at most {MAX_NAME_LENGTH} characters"
        )
    if not _NAME.fullmatch(name or ""):
        raise StoreError(f"{kind} name {name!r} is not valid", "use letters, digits, '_', '-' and '.' (not first)")
    return name


check_name = _check_name


def _short(name: str, keep: int = 40) -> str:
    """A name as messages show it: long ones (stored before names were limited) cut, with their length."""
    return name if len(name) <= keep + 10 else f"{name[:keep]}...({len(name):,} characters)"


def _unknown(kind: str, name: str, known: Iterable[str]) -> StoreError:
    names = [_short(n) for n in known]
    shown = ", ".join(names[:20]) + (f" ... ({len(names)} in all)" if len(names) > 20 else "")
    plural = "corpora" if kind == "corpus" else f"{kind}s"
    return StoreError(f"unknown {kind} {_short(name)!r}", f"existing {plural}: {shown or 'none'}")


def _bulk_upsert(document: type[me.Document], docs: Iterable[dict], add_to_set: Mapping[str, str] | None = None) -> int:
    """Upsert documents by ``_id`` (``$set`` of every other field, ``$addToSet`` of ``add_to_set``) in chunks; returns
    how many were written."""
    collection, count, ops = document._get_collection(), 0, []
    for doc in docs:
        update: dict = {"$set": {k: v for k, v in doc.items() if k != "_id"}}
        if add_to_set:
            update["$addToSet"] = dict(add_to_set)
        ops.append(UpdateOne({"_id": doc["_id"]}, update, upsert=True))
        if len(ops) == _CHUNK:
            count += _write(collection, ops)
            ops = []
    return count + (_write(collection, ops) if ops else 0)


def _write(collection, ops: list[UpdateOne]) -> int:
    try:
        collection.bulk_write(ops, ordered=False)
    except BulkWriteError as e:
        errors = e.details.get("writeErrors") or [{}]
        raise StoreError(f"writing to {collection.name} failed for {len(errors)} documents: {errors[0].get('errmsg', '')}") from e
    return len(ops)


# --- corpus --------------------------------------------------------------------------------------------------


def ingest_corpus(corpus: str, splits: Mapping[str, Sequence[Turn]], schema: Schema) -> int:
    """Write a partitioned corpus as ``corpus``, all or nothing; returns the turn count.

    The turns are written first and the corpus record last: until that switch the corpus is not listed and cannot be
    labelled, so an interrupted ingest leaves no corpus (its turns are cleared by the next ingest or ``corpus rm``).
    Ingesting a complete corpus again changes nothing; a name already holding other turns is refused, since labels
    refer to turns by corpus, split and dialogue. The corpus is claimed for the whole ingest
    (:mod:`labelling.fleet.corpus_claims`), so ``corpus rm`` or a second ingest of it is refused meanwhile.
    """
    _check_name(corpus, "corpus")
    with holding(corpus, INGEST) as claim:
        return _ingest_corpus(corpus, splits, schema, claim)


@retrying
def _ingest_corpus(corpus: str, splits: Mapping[str, Sequence[Turn]], schema: Schema, claim) -> int:
    docs = list(_turn_docs(corpus, splits, schema))
    wanted = {d["_id"] for d in docs}
    existing = _stored_turn_ids(corpus)
    complete = CorpusDoc.objects(id=corpus).first() is not None
    if complete or existing - wanted:
        if existing != wanted:
            raise StoreError(
                f"corpus {corpus!r} already holds a different set of turns ({len(existing)} turns)",
                f"ingest under another --corpus name, or remove it first with `labelling corpus rm {corpus}`",
            )
        if complete:
            return len(docs)
    try:
        _bulk_upsert(TurnDoc, docs)
    except BaseException:
        if not existing:  # best effort: the record was never written, so these turns are invisible either way
            _clear_turns(corpus)
        raise
    if claim.lost():
        raise StoreError(
            f"the ingest of corpus {corpus!r} lost its claim to another command (its heartbeat went stale)",
            "run the same ingest again",
        )
    CorpusDoc(id=corpus, turns=len(docs), splits=len(splits), ingested_at=time.time()).save()
    stored = _count_turns(corpus)
    if stored != len(docs):  # something removed turns under us after all: never report a corpus the store lacks
        CorpusDoc._get_collection().delete_one({"_id": corpus})
        hint = "run the same ingest again"
        raise StoreError(f"corpus {corpus!r} holds {stored} of its {len(docs)} turns after the ingest", hint)
    return len(docs)


def _count_turns(corpus: str) -> int:
    counted = list(TurnDoc._get_collection().aggregate([{"$match": {"corpus": corpus}}, {"$count": "n"}]))
    return counted[0]["n"] if counted else 0


def _stored_turn_ids(corpus: str) -> set[str]:
    return {d["_id"] for d in TurnDoc._get_collection().find({"corpus": corpus}, {"_id": 1})}


def _clear_turns(corpus: str) -> None:
    try:
        TurnDoc._get_collection().delete_many({"corpus": corpus})
    except PyMongoError:
        pass  # the next ingest or `corpus rm` clears them


def remove_corpus(corpus: str) -> int:
    """Delete a corpus (complete, or left by an interrupted ingest); returns the turns removed.

    Refused while a group labels it (the group's labels refer to its turns) and while an ingest of it is live (the
    corpus is claimed for the removal, as an ingest claims it). The record goes first, so an interrupted removal leaves
    a corpus that is no longer listed, and running it again finishes the job.
    """
    with holding(corpus, REMOVAL):
        return _remove_corpus(corpus)


@retrying
def _remove_corpus(corpus: str) -> int:
    users = sorted(GroupRun._get_collection().distinct("group_id", {"corpus": corpus}))
    if users:
        shown = ", ".join(_short(u) for u in users[:10]) + (" ..." if len(users) > 10 else "")
        raise StoreError(
            f"corpus {corpus!r} is labelled by group(s) {shown}",
            "a group's labels refer to its turns: remove the groups first with `labelling group rm NAME`, or keep it",
        )
    record = CorpusDoc._get_collection().delete_one({"_id": corpus}).deleted_count
    removed = TurnDoc._get_collection().delete_many({"corpus": corpus}).deleted_count
    if not record and not removed:
        raise _unknown("corpus", corpus, list_corpora())
    return removed


@retrying
def remove_group(group: str) -> dict[str, int]:
    """Delete a group's labels, manifest entries, partitions and launch record, then its record; returns the counts.

    The record goes last, so an interrupted removal leaves the group listed and running it again finishes the job.
    Callers check first that nothing labels the group (:func:`labelling.fleet.groups.remove_group`).
    """
    group_run(group)
    counts = {
        "labels": LabelDoc._get_collection().delete_many({"group_id": group}).deleted_count,
        "manifest entries": ManifestDoc._get_collection().delete_many({"group_id": group}).deleted_count,
        "partitions": Partition._get_collection().delete_many({"group_id": group}).deleted_count,
    }
    LaunchDoc._get_collection().delete_many({"group": group})
    counts["examples"] = ExampleDoc._get_collection().delete_many({"group_id": group}).deleted_count
    GroupRun._get_collection().delete_one({"_id": group})
    return counts


@retrying
def corpus_overview() -> list[dict]:
    """Every corpus in the store, with its turns, splits, state (complete or incomplete) and the groups labelling it."""
    records = {d["_id"]: d for d in CorpusDoc._get_collection().find()}
    names = sorted(set(records) | set(TurnDoc._get_collection().distinct("corpus")))
    rows = []
    for name in names:
        stored = list(TurnDoc._get_collection().aggregate([{"$match": {"corpus": name}}, {"$count": "n"}]))
        turns = stored[0]["n"] if stored else 0
        record = records.get(name)
        complete = record is not None and record["turns"] == turns
        groups = sorted(GroupRun._get_collection().distinct("group_id", {"corpus": name}))
        splits = record["splits"] if record else None
        rows.append({"corpus": name, "turns": turns, "splits": splits, "complete": complete, "groups": groups})
    return rows


def _turn_docs(corpus: str, splits: Mapping[str, Sequence[Turn]], schema: Schema) -> Iterator[dict]:
    order = 0
    for split, turns in splits.items():
        for turn in turns:
            yield {
                "_id": _key(corpus, split, turn.dialogue_id, turn.turn_id),
                "corpus": corpus,
                "split": split,
                "dialogue_id": turn.dialogue_id,
                "turn_id": turn.turn_id,
                "order": order,
                "row": _sparse_row(turn, schema),
            }
            order += 1


def _sparse_row(turn: Turn, schema: Schema) -> dict:
    """``Turn.to_row`` with blank slots left out of the three states: a third of the size, and ``Turn.from_row`` reads either."""
    row = turn.to_row(schema)
    for name in ("slot_values", "last_slot_values", "turn_slot_values"):
        row[name] = strip_blanks(row[name])
    return row


@retrying
def list_corpora() -> list[str]:
    """Names of the completely ingested corpora."""
    return sorted(d["_id"] for d in CorpusDoc._get_collection().find({}, {"_id": 1}))


@retrying
def corpus_splits(corpus: str) -> dict[str, int]:
    """Split name -> number of turns, in corpus order; StoreError listing the corpora when ``corpus`` is unknown, and
    naming the fix when it is incomplete (an interrupted ingest) or holds fewer turns than were ingested."""
    pipeline = [
        {"$match": {"corpus": corpus}},
        {"$group": {"_id": "$split", "first": {"$min": "$order"}, "turns": {"$sum": 1}}},
        {"$sort": {"first": 1}},
    ]
    splits = {row["_id"]: row["turns"] for row in TurnDoc._get_collection().aggregate(pipeline)}
    record = CorpusDoc._get_collection().find_one({"_id": corpus})
    if not splits and record is None:
        raise _unknown("corpus", corpus, list_corpora())
    if record is None or record["turns"] != sum(splits.values()):
        expected = f" of {record['turns']}" if record is not None else ""
        raise StoreError(
            f"corpus {corpus!r} is incomplete: {sum(splits.values())}{expected} turns (an interrupted ingest or removal)",
            f"ingest it again with `labelling ingest SOURCE --corpus {corpus}`, or remove it with `labelling corpus rm {corpus}`",
        )
    return splits


@retrying
def load_turns(corpus: str, split: str) -> list[Turn]:
    """The turns of one split, in corpus order (gold included when the corpus has it: it is only used for metrics)."""
    rows = TurnDoc._get_collection().find({"corpus": corpus, "split": split}, {"row": 1}).sort("order", 1)
    turns = [Turn.from_row(doc["row"]) for doc in rows]
    if not turns:
        raise _unknown("split", split, corpus_splits(corpus))
    return turns


# --- groups and partitions -----------------------------------------------------------------------------------


@retrying
def create_group(group: str, corpus: str, config: job_config.JobConfig, seed_split: str | None = None) -> list[str]:
    """Record a group over ``corpus`` with one pending partition per split (idempotent); returns the splits in order.

    The seed split (default: the corpus's first) is the one that runs alone before the others. An existing group must
    be asked for with its own corpus, config and seed split (:func:`check_group`).
    """
    _check_name(group, "group")
    splits = corpus_splits(corpus)
    seed = seed_split or next(iter(splits))
    if seed not in splits:
        raise _unknown("split", seed, splits)
    check_group(group, corpus, config, seed_split)
    if config.manifest.group_id not in (job_config.ManifestConfig.group_id, group):
        log.warning("config key manifest.group_id %r is replaced by the group's name %r", config.manifest.group_id, group)
    now = time.time()
    head = {"group_id": group, "corpus": corpus, "config": _group_config(group, config), "seed_split": seed, "created_at": now}
    GroupRun._get_collection().update_one({"_id": group}, {"$setOnInsert": head}, upsert=True)
    partitions = Partition._get_collection()
    for order, (split, turns) in enumerate(splits.items()):
        fresh = {"group_id": group, "split": split, "corpus": corpus, "order": order, "status": PENDING, "attempts": 0}
        fresh.update(turns_total=turns, turns_done=0, metrics={}, pool=[])
        partitions.update_one({"_id": _key(group, split)}, {"$setOnInsert": fresh}, upsert=True)
    return list(splits)


@retrying
def check_group(group: str, corpus: str, config: job_config.JobConfig, seed_split: str | None = None) -> None:
    """Whether ``group`` may be launched (again) over ``corpus`` with ``config``: a new group may; an existing one keeps its
    corpus, job config and seed split, so it is resumed and never silently relabelled. StoreError/ConfigError otherwise."""
    existing = GroupRun.objects(id=group).first()
    if existing is None:
        return
    if existing.corpus != corpus:
        raise StoreError(f"group {group!r} labels corpus {existing.corpus!r}, not {corpus!r}", "choose another group name")
    where = job_config.first_difference(job_config.from_dict(dict(existing.config)).to_dict(), _group_config(group, config))
    if where:
        raise ConfigError(
            f"group {group!r} was created with another job config (first difference: {where})",
            "a group keeps its config: pass the same one, or choose another group name",
        )
    if seed_split and seed_split != existing.seed_split:
        hint = "leave the seed split (--seed-split) out"
        raise ConfigError(f"group {group!r} was seeded with {existing.seed_split!r}, not {seed_split!r}", hint)


def _group_config(group: str, config: job_config.JobConfig) -> dict:
    """The config as a group stores it: the job's, with the manifest's group id set to the group."""
    stored = config.to_dict()
    stored["manifest"]["group_id"] = group
    return stored


@retrying
def list_groups() -> list[str]:
    """Names of the recorded groups."""
    return sorted(doc["_id"] for doc in GroupRun._get_collection().find({}, {"_id": 1}))


@retrying
def group_run(group: str) -> GroupRun:
    """The group's record (corpus, config, seed split); StoreError listing the groups when it is unknown."""
    found = GroupRun.objects(id=group).first()
    if found is None:
        raise _unknown("group", group, list_groups())
    return found


def group_config(group: str) -> job_config.JobConfig:
    """The job config the group was created with."""
    return job_config.from_dict(dict(group_run(group).config))


@retrying
def partitions(group: str) -> list[Partition]:
    """The group's partitions in corpus order."""
    group_run(group)
    return list(Partition.objects(group_id=group).order_by("order"))


@retrying
def partition(group: str, split: str) -> Partition:
    """One partition; StoreError listing the group's splits when it is unknown."""
    found = Partition.objects(id=_key(group, split)).first()
    if found is None:
        raise _unknown("split", split, [p.split for p in partitions(group)])
    return found


@retrying
def done_splits(group: str) -> list[str]:
    """Completed splits of the group, in the order they completed."""
    done = Partition.objects(group_id=group, status=DONE).only("split", "finished_at", "order")
    return [p.split for p in sorted(done, key=lambda p: (p.finished_at or 0.0, p.order))]


# --- claims ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Claim:
    """This run's hold on a partition: every write checks that ``token`` still holds it."""

    group: str
    split: str
    token: str
    worker: str
    corpus: str
    turns_total: int
    pool: list[PoolRefresh]  # what the claimed partition's earlier attempt added to its example pool
    lease_s: float = settings.CLAIM_LEASE_S.default  # the holder must beat more often than this, or another run may take over

    @property
    def attempt_id(self) -> str:
        """The attempt this claim belongs to: its token (labels and the manifest entry, as ``run_id``, name it)."""
        return self.token


def claim_partition(group: str, split: str, worker: str, lease_s: float | None = None) -> Claim | None:
    """Atomically take a pending or failed partition, or a running one whose heartbeat is older than ``lease_s``.

    Returns None when the partition is already done; raises PartitionBusy while a live run holds it.
    """
    lease = claim_lease_s() if lease_s is None else lease_s
    now, token = time.time(), uuid.uuid4().hex[:16]
    doc = _take(group, split, worker, token, now, lease)
    if doc is not None:
        return _claim(group, split, token, worker, doc, lease)
    current = partition(group, split)
    if current.status == DONE:
        return None
    if current.claim == token:  # our take landed but its reply was lost to a reconnect: the retry saw it as taken
        return _claim(group, split, token, worker, current.to_mongo().to_dict(), lease)
    age = now - (current.heartbeat_at or now)
    raise PartitionBusy(
        f"partition {group}/{split} is being labelled by {current.worker} "
        f"(attempt {current.attempt_id}, heartbeat {age:.0f} s ago)",
        f"a claim whose heartbeat is older than {lease:g} s is taken over",
    )


def _claim(group: str, split: str, token: str, worker: str, doc: Mapping, lease: float) -> Claim:
    pool = [PoolRefresh.from_dict(entry) for entry in doc.get("pool") or []]
    return Claim(
        group=group,
        split=split,
        token=token,
        worker=worker,
        corpus=doc["corpus"],
        turns_total=doc.get("turns_total", 0),
        pool=pool,
        lease_s=lease,
    )


def _takeable(now: float, lease: float) -> dict:
    """The query a claim may take: pending or failed, or running with a heartbeat older than the lease."""
    return {"$or": [{"status": {"$in": [PENDING, FAILED]}}, {"status": RUNNING, "heartbeat_at": {"$lt": now - lease}}]}


@retrying
def held_splits(group: str, lease_s: float | None = None) -> list[str]:
    """The group's running splits whose claim is live: exactly those :func:`claim_partition` would refuse to take."""
    lease = claim_lease_s() if lease_s is None else lease_s
    partitions = Partition._get_collection()
    running = {d["split"] for d in partitions.find({"group_id": group, "status": RUNNING}, {"split": 1})}
    stale = {d["split"] for d in partitions.find({"group_id": group, **_takeable(time.time(), lease)}, {"split": 1})}
    return sorted(running - stale)


@retrying
def _take(group: str, split: str, worker: str, token: str, now: float, lease: float) -> dict | None:
    """The atomic step of a claim: the partition's document after ``token`` took it, or None when it was not takeable."""
    takeable = _takeable(now, lease)
    update = {
        "$set": {"status": RUNNING, "claim": token, "run_id": token, "worker": worker, "claimed_at": now, "heartbeat_at": now},
        "$inc": {"attempts": 1},
    }
    return Partition._get_collection().find_one_and_update(
        {"_id": _key(group, split), **takeable}, update, return_document=ReturnDocument.AFTER
    )


_PROGRESS_FIELDS = frozenset({"turns_done", "turns_per_s", "metrics", "pool", "started_at", "config"})


def heartbeat(claim: Claim, **progress: object) -> None:
    """Refresh the claim's heartbeat and record progress fields (turns_done, turns_per_s, metrics, pool, started_at, config).

    Raises ClaimLost when another run has taken the partition over.
    """
    unknown = set(progress) - _PROGRESS_FIELDS
    if unknown:
        raise ValueError(f"not progress fields: {', '.join(sorted(unknown))}")
    if "pool" in progress:
        progress["pool"] = [entry.to_dict() for entry in progress["pool"]]  # type: ignore[union-attr]
    _held(claim, progress)


@retrying
def _held(claim: Claim, fields: Mapping[str, object]) -> None:
    """Set ``fields`` and the heartbeat in one atomic step that only succeeds while ``claim`` still holds the partition."""
    found = Partition._get_collection().find_one_and_update(
        {"_id": _key(claim.group, claim.split), "claim": claim.token, "status": RUNNING},
        {"$set": {"heartbeat_at": time.time(), **fields}},
    )
    if found is None:
        where = f"{claim.group}/{claim.split}"
        hint = "this attempt stops; nothing more is written"
        raise ClaimLost(f"attempt {claim.attempt_id} lost partition {where} to another attempt", hint)


@retrying
def fail_partition(claim: Claim, error: str) -> bool:
    """Mark the partition failed with ``error`` (so it can be claimed again at once); False when the claim was already lost."""
    result = Partition._get_collection().update_one(
        {"_id": _key(claim.group, claim.split), "claim": claim.token},
        {"$set": {"status": FAILED, "last_error": error[-4000:], "claim": None, "heartbeat_at": time.time()}},
    )
    return result.modified_count == 1


# --- labels ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredLabel:
    """A label as stored: the TurnLabel, the batch of the schedule it was produced in and its position in the labelling order."""

    label: TurnLabel
    batch: int
    seq: int
    vectors: dict = field(default_factory=dict)  # module -> stored example vector record


@retrying
def write_labels(
    claim: Claim, labels: Sequence[TurnLabel], batch: int, seq_start: int, vectors: Sequence[dict] | None = None
) -> int:
    """Upsert one batch's labels, only while ``claim`` still holds the partition (else ClaimLost and nothing written).

    Each label records ``ATTEMPT/BATCH`` in ``written_by`` (a set: a retried write adds nothing), so a label written by two
    runs, or in two batches, shows as a duplicate write. ``vectors[i]`` (module -> record) keeps label i's example
    vectors, so seeding a later partition reads them instead of embedding again.
    """
    _held(claim, {})
    now = time.time()
    docs = (_label_doc(claim, lab, batch, seq_start + i, now) for i, lab in enumerate(labels))
    if vectors is not None:
        docs = ({**doc, "vectors": found} for doc, found in zip(docs, vectors, strict=True))
    return _bulk_upsert(LabelDoc, docs, add_to_set={"written_by": f"{claim.attempt_id}/{batch}"})


def _label_doc(claim: Claim, lab: TurnLabel, batch: int, seq: int, now: float) -> dict:
    data = lab.to_dict()
    metrics = data.pop("metrics")
    return {
        "_id": _key(claim.group, lab.dialogue_id, lab.turn_id),
        "group_id": claim.group,
        "split": claim.split,
        "dialogue_id": lab.dialogue_id,
        "turn_id": lab.turn_id,
        "wave": batch,
        "seq": seq,
        "run_id": claim.attempt_id,
        "label": data,
        "metrics": metrics,
        "written_at": now,
    }


@retrying
def load_labels(group: str, split: str) -> list[StoredLabel]:
    """The stored labels of one partition, in labelling order."""
    docs = LabelDoc._get_collection().find({"group_id": group, "split": split}).sort("seq", 1)
    return [
        StoredLabel(TurnLabel.from_dict({**d["label"], "metrics": d["metrics"]}), d["wave"], d["seq"], d.get("vectors") or {})
        for d in docs
    ]


@retrying
def count_labels(group: str, split: str | None = None) -> int:
    """How many labels the group (or one of its partitions) holds."""
    query = {"group_id": group} if split is None else {"group_id": group, "split": split}
    # A $count stage, not count_documents: nx-27017 runs the latter's $group in Python (5 s for 10k labels), this in SQL.
    counted = list(LabelDoc._get_collection().aggregate([{"$match": query}, {"$count": "n"}]))
    return counted[0]["n"] if counted else 0


def labelled_turns(group: str, split: str) -> list[tuple[Turn, StoredLabel]]:
    """Each labelled turn of a partition, in corpus order, as a turn whose label fields hold the predictions.

    The previous turn's predicted acts fill ``last_system_response_acts``, as the reference's ``apply_self_labels`` does.
    """
    stored = {s.label.key: s for s in load_labels(group, split)}
    turns = [t for t in load_turns(group_run(group).corpus, split) if t.key in stored]
    examples = labelled_examples(turns, {key: s.label for key, s in stored.items()})
    return [(example, stored[turn.key]) for example, turn in zip(examples, turns, strict=True)]


def pool_examples(group: str, splits: Sequence[str]) -> list[Turn]:
    """The labels of ``splits`` as retrievable examples, each partition in its labelling order (as it grew its own index)."""
    return pool_examples_and_vectors(group, splits)[0]


def pool_examples_and_vectors(
    group: str, splits: Sequence[str], admit: Callable[[TurnLabel], bool] | None = None
) -> tuple[list[Turn], list[dict]]:
    """:func:`pool_examples` and, for each example, the vectors stored with its label (module -> record); ``admit``
    (e.g. a confidence threshold) leaves out the labels it refuses."""
    pairs = [pair for split in splits for pair in sorted(labelled_turns(group, split), key=lambda pair: pair[1].seq)]
    pairs = [pair for pair in pairs if admit is None or admit(pair[1].label)]
    return [example for example, _ in pairs], [stored.vectors for _, stored in pairs]


# --- completion and the manifest -------------------------------------------------------------------------------


@retrying
def complete_partition(claim: Claim, metrics: Mapping[str, int]) -> dict:
    """Close a fully labelled partition: its manifest entry (at most one per split, even under a race), then status done.

    Returns the manifest entry. The entry is written first: a crash in between leaves a running partition whose
    rerun finds every label stored and finishes at once, never a done partition without an entry.
    """
    if _done_by(claim):  # a retry after the final step landed and only its reply was lost
        return ManifestDoc._get_collection().find_one({"_id": _key(claim.group, claim.split)}, {"_id": 0})
    _held(claim, {})
    written = count_labels(claim.group, claim.split)
    if written != claim.turns_total:
        raise StoreError(f"partition {claim.group}/{claim.split} holds {written} of {claim.turns_total} labels; not complete")
    entry = {"group_id": claim.group, "run_id": claim.attempt_id, "split": claim.split, "corpus": claim.corpus}
    entry.update(num_logs=written, created_at=time.time())
    try:
        ManifestDoc._get_collection().update_one({"_id": _key(claim.group, claim.split)}, {"$setOnInsert": entry}, upsert=True)
    except DuplicateKeyError:
        pass  # a racing completion of the same partition inserted it between our match and our insert
    done = {"status": DONE, "finished_at": time.time(), "metrics": dict(metrics), "turns_done": written, "claim": None}
    _held(claim, done)
    return ManifestDoc._get_collection().find_one({"_id": _key(claim.group, claim.split)}, {"_id": 0})


def _done_by(claim: Claim) -> bool:
    doc = Partition._get_collection().find_one({"_id": _key(claim.group, claim.split)}, {"status": 1, "run_id": 1})
    return bool(doc) and doc.get("status") == DONE and doc.get("run_id") == claim.attempt_id


@retrying
def manifest_entries(group: str) -> list[dict]:
    """The group's manifest entries sorted by run id (the order the reference's DynamoDB manifest returned them in)."""
    return list(ManifestDoc._get_collection().find({"group_id": group}, {"_id": 0}).sort("run_id", 1))


# --- seed examples ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredExamples:
    """A group's seed examples as stored: the turns (labels in the label fields), each one's provenance, and where
    they came from."""

    turns: list[Turn]
    provenance: list[str]
    source: str | None
    digest: str | None

    @property
    def dialogues(self) -> int:
        """How many dialogues the examples hold."""
        return len({t.dialogue_id for t in self.turns})


@retrying
def store_examples(group: str, pool, schema: Schema) -> StoredExamples:
    """Record ``pool`` (an :class:`labelling.examples.ExamplePool`) as the group's seed examples, once: a group that
    has other examples keeps them (returned unchanged), so a resumed or repeated run labels with the same ones. The
    same pool again writes its documents again (idempotent), which completes a write a crash cut short."""
    existing, digest = group_examples(group), pool.digest()
    if existing.turns and existing.digest != digest:
        return existing
    docs = (
        {
            "_id": _key(group, "examples", i),
            "group_id": group,
            "dialogue_id": turn.dialogue_id,
            "turn_id": turn.turn_id,
            "order": i,
            "row": _sparse_row(turn, schema),
            "provenance": kind,
            "source": pool.source,
            "digest": digest,
        }
        for i, (turn, kind) in enumerate(zip(pool.examples, pool.provenance, strict=True))
    )
    _bulk_upsert(ExampleDoc, docs)
    return group_examples(group)


@retrying
def group_examples(group: str) -> StoredExamples:
    """The group's seed examples in the order they were given (none: empty)."""
    docs = list(ExampleDoc._get_collection().find({"group_id": group}).sort("order", 1))
    turns = [Turn.from_row(d["row"]) for d in docs]
    first = docs[0] if docs else {}
    return StoredExamples(turns, [d["provenance"] for d in docs], first.get("source"), first.get("digest"))


@retrying
def corpus_dialogue_ids(corpus: str, limit: int | None = None) -> list[str]:
    """The corpus's dialogue ids in corpus order (the first ``limit`` of them when given)."""
    rows = TurnDoc._get_collection().find({"corpus": corpus, "turn_id": 0}, {"dialogue_id": 1, "order": 1})
    ids = [d["dialogue_id"] for d in sorted(rows, key=lambda d: d["order"])]
    return ids[:limit] if limit is not None else ids
