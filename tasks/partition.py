"""The fleet's tasks and the run chord: ``label_partition`` for one split, ``dispatch_dependents`` once the seed is done.

A run is the chord header=[label_partition(seed)], body=dispatch_dependents, which sends one label_partition per
remaining split. Tasks may be delivered more than once (late acks, a worker lost, RabbitMQ's consumer timeout): a
delivery that finds its partition held by a live run retries after the holder's lease would expire, and by then either
finds it done or takes over a dead run's claim. Nothing is written twice (see ``labelling.fleet.runner``).

A partition whose labelling raises is retried ``celeryconfig.TASK_MAX_RETRIES`` times (each attempt resumes from the
last checkpoint) and then stays failed, with its error on the partition; the other partitions go on.

Which launch may submit a group's chord is decided in the library (:mod:`labelling.fleet.launches`), not here.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable

from celery import chord
from celery import group as celery_group
from celery.result import AsyncResult
from celery.signals import task_prerun, worker_process_init
from celery.utils.saferepr import saferepr

import celeryconfig
from labelling import settings
from labelling.fleet import leases, runner, store
from tasks.app import app

PROGRESS = "PROGRESS"
PROGRESS_EVENT = "task-progress"  # Celery's event states follow the type: Flower shows these tasks as PROGRESS
MIN_RETRY_S = 10.0
Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


# --- the work, without Celery (shared with tasks.local) ---------------------------------------------------------


def label_one(group: str, split: str, worker: str, on_progress: Progress | None = None) -> dict:
    """Label one partition to completion (or find it done) and summarise it as JSON: the body of label_partition."""
    result = runner.run_partition(group, split, worker=worker, on_progress=on_progress)
    pool = result.pool[0].splits if result.pool else []
    rate = result.new_turns / result.seconds if result.seconds else None
    summary = {"group": group, "split": split, "status": result.status, "attempt_id": result.attempt_id, "turns": result.turns}
    return {**summary, "new_turns": result.new_turns, "seconds": result.seconds, "turns_per_s": rate, "pool": pool}


def dependents(group: str, seed_split: str) -> list[str]:
    """The splits that run after the seed, in corpus order: every one not done yet (failed ones get another try)."""
    store.connect()
    return [p.split for p in store.partitions(group) if p.split != seed_split and p.status != store.DONE]


def busy_retry_s(group: str, split: str) -> float:
    """Seconds until the claim on a busy partition could go stale; retrying sooner would only find it busy again."""
    lease = leases.claim_lease_s()
    held = store.partition(group, split)
    age = time.time() - (held.heartbeat_at or time.time())
    return min(lease, max(MIN_RETRY_S, lease - age + 5.0))


def limit_threads() -> None:
    """Cap torch's CPU threads at ``$LABELLING_TORCH_THREADS`` when set: processes that share cores and each spin up a
    thread per core slow each other down badly (measured here: a tiny-model partition took 48 s with 2 threads and 9 s
    with 1 while other jobs shared the 2 cores)."""
    threads = settings.TORCH_THREADS.get()
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def task_id(run_id: str, split: str) -> str:
    """A readable task id (visible in Flower): the run and the split it labels."""
    return f"{run_id}-{split}"


def announce(task, **progress: int) -> None:
    """Send a ``task-progress`` event with the task's name and arguments, and any progress fields (best effort).

    Flower learns a task's name and arguments only from its task-sent and task-received events, so a Flower started
    after a task was received would list it as ``null``. Every task announces itself when it starts (it may have
    waited in a worker since before Flower started: a chord's unlock, a prefetched partition) and a partition task
    again after every batch, so Flower names it from then on and shows it in state PROGRESS, as the result backend does.
    """
    request = task.request
    if request.is_eager or request.called_directly:  # not run by a worker: there is no monitor to tell
        return
    fields = {"name": task.name, "args": getattr(request, "argsrepr", None) or saferepr(request.args or ())}
    fields["kwargs"] = getattr(request, "kwargsrepr", None) or saferepr(request.kwargs or {})
    try:
        task.send_event(PROGRESS_EVENT, retry=False, **fields, **progress)
    except Exception:  # monitoring must never cost a partition; the next batch sends another
        log.debug("could not send %s for %s", PROGRESS_EVENT, request.id, exc_info=True)


# --- the Celery tasks -----------------------------------------------------------------------------------------


@worker_process_init.connect
def _fresh_process(**_: object) -> None:
    """Drop any store connection inherited over a fork; the models load lazily in this process, after the fork,
    because CUDA state does not survive one (labelling.method.build caches them for every later task)."""
    store.disconnect()
    limit_threads()


@task_prerun.connect
def _announce_start(task=None, **_: object) -> None:
    if task is not None and task.app is app:
        announce(task)


@app.task(bind=True, name="labelling.label_partition", max_retries=None)
def label_partition(self, group: str, split: str, failures: int = 0) -> dict:
    """Label one partition of ``group``, reporting turns done through the task state (and on the partition itself).

    ``failures`` counts this delivery chain's failed attempts: waiting for another run is retried without bound, a
    failure only ``celeryconfig.TASK_MAX_RETRIES`` times.
    """

    def progress(done: int, total: int) -> None:
        self.update_state(state=PROGRESS, meta={"group": group, "split": split, "turns_done": done, "turns_total": total})
        announce(self, turns_done=done, turns_total=total)

    try:
        return label_one(group, split, self.request.hostname or socket.gethostname(), progress)
    except (store.PartitionBusy, store.ClaimLost) as e:
        # Another live run holds the partition (a duplicate delivery, or a run that took over a stale claim).
        raise self.retry(exc=e, countdown=busy_retry_s(group, split), kwargs={"failures": failures}) from e
    except Exception as e:  # the partition is already marked failed with this error (labelling.fleet.runner)
        if failures >= celeryconfig.TASK_MAX_RETRIES:
            raise
        delay = celeryconfig.TASK_RETRY_DELAY_S * (failures + 1)
        raise self.retry(exc=e, countdown=delay, kwargs={"failures": failures + 1}) from e


@app.task(name="labelling.dispatch_dependents")
def dispatch_dependents(seed_result: dict | list[dict], group: str, run_id: str | None = None) -> dict:
    """The chord's body: with the seed done, send one label_partition per remaining split of ``group``."""
    seed = seed_result[0] if isinstance(seed_result, list) else seed_result
    run_id = run_id or uuid.uuid4().hex[:12]
    splits = dependents(group, seed["split"])
    if splits:
        celery_group(label_partition.si(group, s).set(task_id=task_id(run_id, s)) for s in splits).apply_async()
    return {"group": group, "seed": seed["split"], "dispatched": splits}


def submit_run(group: str, seed_split: str, run_id: str) -> AsyncResult:
    """Send a run's chord: header = [label_partition(seed)], body = dispatch_dependents; returns the body's result."""
    header = [label_partition.si(group, seed_split).set(task_id=task_id(run_id, seed_split))]
    body = dispatch_dependents.s(group, run_id=run_id)
    return chord(header, body).apply_async(task_id=f"{run_id}-dispatch", interval=celeryconfig.CHORD_POLL_S)


def seed_task(run_id: str, seed_split: str) -> AsyncResult:
    """The Celery result of a run's seed task (to notice a seed that failed before it could claim its partition)."""
    return app.AsyncResult(task_id(run_id, seed_split))
