"""Label one partition of a group against the store: claim it, seed the example pool, resume, checkpoint, complete.

``run_partition`` may run more than once for the same partition (at-least-once delivery, crashes, a duplicate task):
a done partition returns at once, a resumed one replays its stored labels, and a run that loses its claim stops
before writing anything more. With the same seed and pool, a resumed run ends with the labels an uninterrupted run
would have produced: batches are replayed whole, and pool refreshes recorded before the crash are replayed at the same
batch boundaries.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

from labelling.config import JobConfig
from labelling.fleet import store
from labelling.fleet.leases import beating
from labelling.method.labeller import PartitionLabeller, admitted, schedule
from labelling.records import PoolRefresh, TurnLabel
from labelling.schema import Schema

LabellerFactory = Callable[[JobConfig, Schema], PartitionLabeller]
ProgressHook = Callable[[int, int], None]
log = logging.getLogger(__name__)


class Outcome(str, Enum):
    """What a call of :func:`run_partition` found: a partition it labelled now, or one done before."""

    DONE = "done"
    ALREADY_DONE = "already_done"

    __str__ = str.__str__  # the plain value in logs and task results
    __format__ = str.__format__


@dataclass(kw_only=True)
class PartitionResult:
    """What a call of :func:`run_partition` did: ``status`` is ``done`` (labelled now) or ``already_done``.

    ``new_turns`` were labelled by this call (the rest replayed from the store) in ``seconds`` (models already loaded);
    ``pool`` lists, for the start (batch 0) and each refresh, the partitions added to the example indexes.
    """

    group: str
    split: str
    status: Outcome
    attempt_id: str | None  # the claim token of the attempt that labelled it (the manifest's run_id)
    turns: int
    new_turns: int = 0
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)
    pool: list[PoolRefresh] = field(default_factory=list)
    manifest: dict | None = None


def run_partition(
    group: str,
    split: str,
    worker: str = "local",
    config: JobConfig | None = None,
    on_progress: ProgressHook | None = None,
    labeller_factory: LabellerFactory | None = None,
    lease_s: float | None = None,
) -> PartitionResult:
    """Label ``split`` of ``group`` to completion and return what happened; idempotent (see the module docstring).

    ``config`` defaults to the group's; ``on_progress(turns_done, turns_total)`` runs after every batch;
    ``labeller_factory(config, schema)`` defaults to :func:`labelling.method.build.build_labeller` (models loaded once per
    process). Raises PartitionBusy while another live run holds the partition, ClaimLost if one takes it over.
    """
    store.connect()
    claim = store.claim_partition(group, split, worker, lease_s)
    if claim is None:
        return _already_done(group, split)
    try:
        # The pulse starts before the models load: a first download can outlast the lease many times over.
        with pulse(claim):
            return _PartitionJob(claim, config or store.group_config(group), labeller_factory, on_progress).run()
    except store.ClaimLost:
        raise  # the partition belongs to another run now: recording a failure would overwrite its state
    except BaseException as e:  # interrupted or crashed: free the partition for the next attempt right away
        _record_failure(claim, e)
        raise


def _record_failure(claim: store.Claim, error: BaseException) -> None:
    try:
        store.fail_partition(claim, "".join(traceback.format_exception_only(type(error), error)).strip())
    except Exception:  # the store itself may be what failed; the original error is the one worth raising
        log.warning("could not mark %s/%s failed", claim.group, claim.split, exc_info=True)


def _already_done(group: str, split: str) -> PartitionResult:
    done = store.partition(group, split)
    entry = next((e for e in store.manifest_entries(group) if e["split"] == split), None)
    return PartitionResult(
        group=group,
        split=split,
        status=Outcome.ALREADY_DONE,
        attempt_id=done.attempt_id,
        turns=done.turns_total,
        metrics=dict(done.metrics),
        pool=[PoolRefresh.from_dict(entry) for entry in done.pool],
        manifest=entry,
    )


def _default_factory() -> LabellerFactory:
    from labelling.method.build import build_labeller  # loads torch and the models: only when labelling really happens

    return build_labeller


@contextmanager
def pulse(claim: store.Claim, beats_per_lease: int = 6) -> Iterator[None]:
    """Beat the claim's heartbeat from a background thread while the block runs.

    A batch can outlast the lease on a slow model, so per-batch heartbeats alone would force a long lease, and a dead
    worker's partition would wait that long before another could take it over.
    """
    with beating(lambda: _beat(claim), claim.lease_s / beats_per_lease, f"{claim.group}/{claim.split}"):
        yield


def _beat(claim: store.Claim) -> bool:
    """One heartbeat of a partition claim; False once it is lost."""
    try:
        store.heartbeat(claim)
    except store.ClaimLost:
        return False
    return True


class _PartitionJob:
    """One attempt at one partition: the state the labeller's callbacks share."""

    def __init__(self, claim: store.Claim, config: JobConfig, factory: LabellerFactory | None, on_progress: ProgressHook | None):
        self.claim = claim
        self.config = config
        self.on_progress = on_progress
        self.turns = store.load_turns(claim.corpus, claim.split)
        schema = config.load_schema()
        self.labeller = (factory or _default_factory())(config, schema)
        self.schedule = schedule(self.turns, config)  # the labeller labels in this same order (resume boundaries)
        self.batches_done = self.turns_done = self.new_turns = 0
        self.pool: list[PoolRefresh] = []
        self.pooled: set[str] = set()
        self.replayed_batches = 0
        self.recorded_refreshes: dict[int, list[str]] = {}  # batch -> splits the interrupted attempt added there
        self.started = time.time()

    def run(self) -> PartitionResult:
        """Resume, seed, label with a checkpoint per batch, and complete the partition."""
        done = self._resume()
        self._fill_indexes()
        self.started = time.time()
        store.heartbeat(self.claim, started_at=self.started, config=self.config.to_dict(), pool=self.pool, turns_done=0)
        labels = self.labeller.label(self.turns, done=done, on_batch=self._checkpoint, progress=self._after_batch)
        if len(labels) != len(self.turns):
            raise store.StoreError(f"labelled {len(labels)} of {len(self.turns)} turns of {self.claim.group}/{self.claim.split}")
        metrics = self.labeller.metrics.to_dict()
        entry = store.complete_partition(self.claim, metrics)
        return PartitionResult(
            group=self.claim.group,
            split=self.claim.split,
            status=Outcome.DONE,
            attempt_id=self.claim.attempt_id,
            turns=len(labels),
            new_turns=self.new_turns,
            seconds=self._seconds(),
            metrics=metrics,
            pool=self.pool,
            manifest=entry,
        )

    # --- start: resume and fill the indexes ------------------------------------------------------------------

    def _resume(self) -> list[TurnLabel]:
        """The stored labels of the leading complete batches; a batch cut short by a crash is relabelled whole."""
        stored = {s.label.key: s for s in store.load_labels(self.claim.group, self.claim.split)}
        for index, batch in enumerate(self.schedule):
            if any(t.key not in stored or stored[t.key].batch != index for t in batch):
                break
            self.replayed_batches = index + 1
        return [stored[t.key].label for batch in self.schedule[: self.replayed_batches] for t in batch]

    def _fill_indexes(self) -> None:
        """Fill the example indexes: the group's seed examples first (every attempt, from the store), then the pool the
        interrupted attempt recorded, else every partition completed so far.

        A recorded pool only matters when labels made with it are replayed; with none, the freshest pool is better.
        """
        examples = store.group_examples(self.claim.group).turns
        if examples:
            self.labeller.add_examples(examples)
        kept = [e for e in self.claim.pool if e.batch <= self.replayed_batches] if self.replayed_batches else []
        if kept:
            self.pool = kept
            self.recorded_refreshes = {e.batch: e.splits for e in kept[1:]}
            self._load_pool(kept[0].splits)
            return
        initial = [s for s in store.done_splits(self.claim.group) if s != self.claim.split]
        self._record_pool(0, initial if self.config.manifest.seed_retrievers_from_manifest else [])

    def _load_pool(self, splits: Sequence[str]) -> int:
        """Add the labels of ``splits`` to both indexes; returns how many examples that was."""
        threshold = self.config.pool_min_confidence
        examples, vectors = store.pool_examples_and_vectors(self.claim.group, splits, lambda lab: admitted(lab, threshold))
        self.labeller.add_examples(examples, vectors)
        self.pooled.update(splits)
        return len(examples)

    def _record_pool(self, batch: int, splits: Sequence[str]) -> None:
        examples = self._load_pool(splits)
        self.pool.append(PoolRefresh(batch=batch, splits=list(splits), examples=examples, at=time.time()))

    # --- per batch -----------------------------------------------------------------------------------------

    def _checkpoint(self, labels: list[TurnLabel]) -> None:
        vectors = self._vectors(labels)
        store.write_labels(self.claim, labels, batch=self.batches_done, seq_start=self.turns_done, vectors=vectors)
        self.new_turns += len(labels)

    def _vectors(self, labels: list[TurnLabel]) -> list[dict]:
        """Each label's example vectors, per module, as its index embedded them (the batch joined the indexes already)."""
        out: list[dict] = [{} for _ in labels]
        for module in self.labeller.modules:
            if module.index is not None:
                for found, record in zip(out, module.index.stored_vectors([lab.key for lab in labels]), strict=True):
                    if record is not None:
                        found[module.name] = record
        return out

    def _after_batch(self, size: int) -> None:
        self.batches_done += 1
        self.turns_done += size
        pooled = len(self.pool)
        self._refresh()
        progress = {"turns_done": self.turns_done, "metrics": self.labeller.metrics.to_dict()}
        if self.new_turns:
            progress["turns_per_s"] = self.new_turns / max(self._seconds(), 1e-9)
        if len(self.pool) != pooled:
            progress["pool"] = self.pool
        store.heartbeat(self.claim, **progress)
        if self.on_progress is not None:
            self.on_progress(self.turns_done, len(self.turns))

    def _refresh(self) -> None:
        """Every ``pool_refresh_batches`` batches, add partitions completed meanwhile; on resume, replay the recorded ones."""
        every, batch = self.config.pool_refresh_batches, self.batches_done
        if not every or batch % every or batch >= len(self.schedule) or not self.config.manifest.seed_retrievers_from_manifest:
            return
        if batch in self.recorded_refreshes:
            self._load_pool(self.recorded_refreshes[batch])
        elif batch >= self.replayed_batches:  # before, the interrupted attempt found nothing new (empty refreshes go unrecorded)
            fresh = [s for s in store.done_splits(self.claim.group) if s != self.claim.split and s not in self.pooled]
            if fresh:
                self._record_pool(batch, fresh)

    def _seconds(self) -> float:
        return time.time() - self.started
