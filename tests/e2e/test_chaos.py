"""Fault injection on the real fleet: RabbitMQ (a vhost of this run's own), worker processes on a tiny random model and
the nx-27017 server. Each scenario labels a small corpus, injects one fault, and checks the store: every expected turn
labelled exactly once, nothing lost. The table (also in .state/chaos/report.md) ends the run.

Recovery is measured from the end of the fault (the kill, or the service back) until labelling progressed again: a
label written, or for the broker, the chord body dispatching the dependents. Claims are leased for 10 s here (15 min
by default), which bounds how long a killed worker's partition waits before another worker takes it over.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest

from labelling.fleet import store
from tests.support.chaos_fleet import (
    OUTCOMES,
    POISON_FILE_ENV,
    ChaosFleet,
    Outcome,
    first_label_after,
    ingest,
    poisoned,
    table,
    tally,
    task_results,
    write_report,
    written_by,
)
from tests.support.fleet_helpers import save_tiny_model, write_job
from tests.support.fleet_services import own_broker, rabbitmqctl
from tests.support.partition_worker import tiny_job

pytestmark = pytest.mark.chaos
TAG = uuid.uuid4().hex[:8]
LEASE_S, MAX_RETRIES = 10, 2
SHORT_CONSUMER_TIMEOUT_MS = 4000
needs_rabbitmqctl = pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl on the broker's host")


# --- fixtures ------------------------------------------------------------------------------------------------------


class _Summary:
    """A pytest plugin that prints the chaos table in the terminal summary."""

    @staticmethod
    def pytest_terminal_summary(terminalreporter) -> None:
        if OUTCOMES:
            terminalreporter.write_sep("=", "fault injection")
            terminalreporter.write_line(table(sorted(OUTCOMES, key=lambda o: o.scenario)))


@pytest.fixture(scope="module", autouse=True)
def report(request):
    """Collect each scenario's row; at the end, write the table to .state/chaos/report.md and print it."""
    OUTCOMES.clear()
    request.config.pluginmanager.register(_Summary(), f"chaos-summary-{TAG}")
    yield
    if OUTCOMES:
        write_report(sorted(OUTCOMES, key=lambda o: o.scenario))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """nx-27017, a vhost and two workers (a, b) on the tiny model; short leases and retry delays so faults heal in
    seconds. Everything is stopped at the end."""
    root = tmp_path_factory.mktemp("chaos")
    with own_broker(TAG) as (url, extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELLING_", "FLOWER_"))}
        env.update(extra, LABELLING_STATE_DIR=str(root / "state"), LABELLING_CHORD_POLL_S="1", LABELLING_TORCH_THREADS="1")
        env.update(LABELLING_CLAIM_LEASE_S=str(LEASE_S), LABELLING_TASK_MAX_RETRIES=str(MAX_RETRIES))
        env.update(LABELLING_TASK_RETRY_DELAY_S="1", LABELLING_MONGODB_TIMEOUT_MS="2000", HF_HUB_OFFLINE="1")
        env.update(TOKENIZERS_PARALLELISM="false", **{POISON_FILE_ENV: str(root / "poison")})
        chaos = ChaosFleet(root, url, env, TAG)
        try:
            store.connect(chaos.uri)
            chaos.start_worker("a")
            chaos.start_worker("b")
            chaos.wait_ready("a", "b")
            yield chaos
        finally:
            chaos.stop()
            store.disconnect()


@pytest.fixture(scope="module")
def job(fleet) -> Path:
    """A job file on a tiny random Llama saved as a model folder: short samples, so a turn takes a fraction of a second."""
    return write_job(tiny_job(), save_tiny_model(fleet.root / "tiny-llama"), fleet.root / "job.json")


@pytest.fixture(scope="module")
def by_length(dev_dialogues):
    """Dialogues of the bundled dev set by number of turns."""

    def pick(turns: int, count: int, skip: int = 0) -> list:
        found = [d for d in dev_dialogues if len(d) == turns][skip : skip + count]
        assert len(found) == count
        return found

    return pick


def _record(scenario: str, fault: str, group: str, started: float, recovery: float | None) -> Outcome:
    """Add the scenario's row to the table, then check it: every expected turn labelled once, none lost."""
    counts = tally(group)
    wall = time.time() - started
    outcome = Outcome(scenario, fault, counts.expected, counts.labelled, counts.duplicates, counts.lost, wall, recovery)
    OUTCOMES.append(outcome)
    assert (counts.labelled, counts.duplicates, counts.lost) == (counts.expected, 0, 0), outcome
    return outcome


def _since(moment: float | None, start: float) -> float | None:
    return None if moment is None else moment - start


# --- 1, 2: workers killed --------------------------------------------------------------------------------------------


def test_1_a_killed_worker_s_partition_resumes_elsewhere_from_its_checkpoint(fleet, job, by_length, schema):
    group, corpus = f"kill-one-{TAG}", f"kill-one-{TAG}"
    seed = ingest(corpus, by_length(6, 4), 2, schema)[0]
    started = time.time()
    fleet.submit(group, corpus, job)
    part = fleet.wait_for(lambda: fleet.running(group, seed, min_done=2), 120, "the seed to checkpoint a wave")
    victim = fleet.worker_of(part.worker)
    fleet.kill_worker(victim)
    killed_at = time.time()
    before = {key: who for key, (who, seq) in written_by(group, seed).items() if seq < part.turns_done}  # whole waves
    taken = fleet.wait_for(lambda: (p := store.partition(group, seed)).attempt_id != part.attempt_id and p, 120, "a takeover")
    fleet.restart_worker(victim)  # only now, so the partition had to move to the other worker
    fleet.wait_done(group)
    recovered = first_label_after(group, killed_at, seed)

    after = written_by(group, seed)
    assert before and all(after[key][0] == who for key, who in before.items())  # resumed: nothing before the kill rewritten
    assert fleet.worker_of(taken.worker) != victim and store.partition(group, seed).attempts == 2
    resumed_writes = [key for key, (who, _) in after.items() if who[0].startswith(taken.attempt_id)]
    assert len(resumed_writes) == len(after) - len(before)
    fault = f"SIGKILL worker {victim} after {part.turns_done}/{part.turns_total} seed turns"
    _record("1 kill one worker", fault, group, started, _since(recovered, killed_at))
    fleet.wait_ready(victim)


def test_2_every_worker_killed_then_restarted_the_run_completes(fleet, job, by_length, schema):
    group, corpus = f"kill-all-{TAG}", f"kill-all-{TAG}"
    splits = ingest(corpus, by_length(6, 6), 2, schema)
    started = time.time()
    fleet.submit(group, corpus, job)
    fleet.wait_for(lambda: any(fleet.running(group, s) for s in splits[1:]), 150, "a dependent to checkpoint a wave")
    done_before = sum(p.turns_done for p in store.partitions(group))
    for name in list(fleet.workers):
        fleet.kill_worker(name)
    time.sleep(1)
    for name in list(fleet.workers):
        fleet.restart_worker(name)
    back = time.time()
    fleet.wait_done(group, 180)
    fault = f"SIGKILL workers {', '.join(sorted(fleet.workers))} at {done_before} turns done, restart after 1 s"
    _record("2 kill every worker", fault, group, started, _since(first_label_after(group, back), back))
    fleet.wait_ready(*fleet.workers)


# --- 3, 4: the broker and the database go away --------------------------------------------------------------------


@needs_rabbitmqctl
def test_3_broker_stopped_and_started_mid_run_the_chord_body_still_fires(fleet, job, by_length, schema):
    group, corpus = f"broker-{TAG}", f"broker-{TAG}"
    splits = ingest(corpus, by_length(8, 6), 2, schema)
    started = time.time()
    fleet.submit(group, corpus, job)
    fleet.wait_for(lambda: fleet.running(group, splits[0]), 120, "the seed to checkpoint a wave")
    down = time.time()
    stopped = rabbitmqctl("stop_app")
    try:
        assert stopped is not None and stopped.returncode == 0, stopped
        assert store.partition(group, splits[0]).status == store.RUNNING  # the broker went away under the seed
        time.sleep(3)
    finally:  # the broker is shared with everything else on this machine: always bring it back
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    back = time.time()
    fleet.wait_done(group, 180)

    seed, *dependents = store.partitions(group)
    assert seed.split == splits[0] and all(p.claimed_at >= seed.finished_at for p in dependents)
    dispatched = min(p.claimed_at for p in dependents)
    fault = f"RabbitMQ stop_app / start_app during the seed, down {back - down:.0f} s"
    _record("3 broker restart", fault, group, started, dispatched - max(back, seed.finished_at))


def test_4_database_killed_and_restarted_writes_retry_and_no_wave_is_lost_or_doubled(fleet, job, by_length, schema):
    group, corpus = f"mongo-{TAG}", f"mongo-{TAG}"
    splits = ingest(corpus, by_length(6, 6, skip=12), 2, schema)
    started = time.time()
    fleet.submit(group, corpus, job)
    fleet.wait_for(lambda: any(fleet.running(group, s) for s in splits[1:]), 150, "a dependent to checkpoint a wave")
    logged = {name: len(w.output()) for name, w in fleet.workers.items()}
    fleet.kill_mongo()
    time.sleep(6)  # longer than the workers' 2 s server-selection timeout: their operations must retry
    fleet.restart_mongo()
    back = time.time()
    fleet.wait_done(group, 180)

    retried = [n for n, w in fleet.workers.items() if "MongoDB unreachable during" in w.output()[logged[n] :]]
    assert retried, "no worker logged a retried store operation"
    fault = f"SIGKILL nx-27017 for 6 s mid-run; retries logged by {', '.join(retried)}"
    _record("4 database restart", fault, group, started, _since(first_label_after(group, back), back))


# --- 5: RabbitMQ's consumer timeout shorter than a partition -----------------------------------------------------


def _rabbit_env(key: str) -> str:
    done = rabbitmqctl("eval", f"application:get_env(rabbit, {key}).")
    return done.stdout.strip() if done is not None else "undefined"


def _set_rabbit_env(key: str, value: str) -> None:
    """Set (or, for ``undefined``, unset) one of RabbitMQ's application settings; ``value`` as get_env printed it."""
    found = re.fullmatch(r"\{ok,(\d+)\}", value)
    expression = f"application:set_env(rabbit, {key}, {found.group(1)})." if found else f"application:unset_env(rabbit, {key})."
    rabbitmqctl("eval", expression)


@needs_rabbitmqctl
def test_5_a_partition_longer_than_the_consumer_timeout_is_labelled_once(fleet, job, by_length, schema):
    group, corpus = f"timeout-{TAG}", f"timeout-{TAG}"
    seed = ingest(corpus, by_length(8, 4), 4, schema)[0]  # a seed partition of 4 dialogues: well past the 4 s timeout
    prefix = f"chaos5-{TAG}"  # queues of its own: only the two workers started with the short timeout consume them
    queues = {"LABELLING_QUEUE_PREFIX": prefix, "LABELLING_CONSUMER_TIMEOUT_MS": "0"}
    saved = {key: _rabbit_env(key) for key in ("consumer_timeout", "channel_tick_interval")}
    # A channel reads consumer_timeout when it opens, so the short value is set only while the two workers start (the
    # broker is shared). It checks the timeout on each tick, re-armed from channel_tick_interval: 1 s until the end.
    try:
        rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 1000).")
        rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {SHORT_CONSUMER_TIMEOUT_MS}).")
        try:
            fleet.start_worker("c1", **queues)
            fleet.start_worker("c2", **queues)
            fleet.wait_ready("c1", "c2")
        finally:
            _set_rabbit_env("consumer_timeout", saved["consumer_timeout"])
        started = time.time()
        fleet.submit(group, corpus, job, **queues)
        fleet.wait_done(group)
    finally:
        _set_rabbit_env("channel_tick_interval", saved["channel_tick_interval"])
    part = store.partition(group, seed)
    ran = part.finished_at - part.claimed_at
    assert ran * 1000 > SHORT_CONSUMER_TIMEOUT_MS + 1000  # the partition outlived the timeout and a tick

    logs = [fleet.workers[name] for name in ("c1", "c2")]
    received = sum(w.output().count(f"label_partition[{_task(part)}] received") for w in logs)
    if received > 1:  # redelivered while its first run was alive: a copy must find it done and write nothing
        fleet.wait_for(lambda: any("already_done" in w.output() for w in logs), 90, "a redelivered copy to finish", poll_s=1)
    timed_out = any("PRECONDITION_FAILED" in w.output() for w in logs)
    fault = f"consumer_timeout {SHORT_CONSUMER_TIMEOUT_MS / 1000:g} s, partition {ran:.0f} s: "
    fault += f"channel closed {'yes' if timed_out else 'no'}, {received} deliveries"
    _record("5 consumer timeout", fault, group, started, None)
    assert store.partition(group, seed).attempts == 1  # no copy ever took the partition from its live run
    for name in ("c1", "c2"):
        fleet.workers.pop(name).stop()


def _task(part: store.Partition) -> str:
    """The id of the task that labelled ``part`` (the launch's run id and the split)."""
    runs = {task.rsplit("-", 1)[0] for task, result in task_results(part.group_id) if result.get("split") == part.split}
    assert len(runs) == 1, runs
    return f"{runs.pop()}-{part.split}"


# --- 6: a poison partition -------------------------------------------------------------------------------------------


def test_6_a_poison_partition_fails_after_bounded_retries_and_retry_failed_finishes_it(fleet, job, by_length, schema):
    group, corpus = f"poison-{TAG}", f"poison-{TAG}"
    dialogues = by_length(4, 6, skip=0)
    dialogues[4] = poisoned(dialogues[4], 1)  # the third partition's first dialogue, second turn
    splits = ingest(corpus, dialogues, 2, schema)
    flag = Path(fleet.env[POISON_FILE_ENV])
    flag.touch()
    started = time.time()
    fleet.submit(group, corpus, job)

    def failed_for_good():
        part = store.partition(group, splits[2])
        others = [store.partition(group, s).status for s in splits[:2]]
        return part.status == store.FAILED and part.attempts == 1 + MAX_RETRIES and others == [store.DONE] * 2 and part

    part = fleet.wait_for(failed_for_good, 150, f"{splits[2]} to fail {1 + MAX_RETRIES} times")
    time.sleep(4)  # longer than the retry delays: a further attempt would show by now
    again = store.partition(group, splits[2])
    assert (again.status, again.attempts) == (store.FAILED, 1 + MAX_RETRIES)
    assert "chaos: the model step fails" in again.last_error
    kept = written_by(group, splits[2])
    assert kept  # the waves before the poison turn stay stored

    flag.unlink()  # the cause is fixed
    cured = time.time()
    retried = fleet.labelling("run", "--group", group, "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert f"retrying the failed partitions of {group}: {splits[2]}" in retried.stderr and " submitted: " in retried.stdout
    finished = fleet.wait_done(group)
    assert all(written_by(group, splits[2])[key][0] == who for key, (who, _) in kept.items())
    fault = f"model step raises on one turn of {splits[2]}: failed after {part.attempts} attempts, then --retry-failed"
    _record("6 poison partition", fault, group, started, finished - cured)


# --- 7: two launches at once ------------------------------------------------------------------------------------------


def test_7_two_simultaneous_runs_of_one_group_submit_once(fleet, job, by_length, schema):
    group, corpus = f"race-{TAG}", f"race-{TAG}"
    ingest(corpus, by_length(4, 4, skip=6), 2, schema)
    started = time.time()
    launches = [fleet.launch("run", "--corpus", corpus, "--group", group, "--config", str(job)) for _ in range(2)]
    outputs = [(p.wait(120), *p.communicate()) for p in launches]
    winners = [out for code, out, _ in outputs if code == 0 and " submitted: group " in out]
    losers = [err for code, out, err in outputs if code != 0 and "submitted" not in out]
    assert len(winners) == 1 and len(losers) == 1, outputs
    refusal = re.search(r"already being labelled by run|launched group .* at the same moment", losers[0])
    assert refusal, losers[0]
    run_id = re.match(r"run (\w+) submitted", winners[0]).group(1)
    fleet.wait_done(group)
    runs = {task.rsplit("-", 1)[0] for task, _ in task_results(group)}
    assert runs == {run_id}  # every task that ran for the group belongs to the winner's run
    fault = f"two `labelling run` for one group at once: one submitted, the other refused ({refusal.group(0)})"
    _record("7 two launches at once", fault, group, started, None)
