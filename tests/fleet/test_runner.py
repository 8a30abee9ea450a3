"""run_partition against a real nx-27017 with the tiny LM: crash and resume, racing processes, the growing example pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labelling.fleet import store
from labelling.fleet.runner import pulse, run_partition
from tests.support.mongo_fixture import ingest_small, new_group, short_dialogues
from tests.support.partition_worker import label, tiny_job, tiny_labeller_factory

ROOT = Path(__file__).resolve().parents[2]
TURNS = 3  # a partition is one 3-turn dialogue: three waves of one turn


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread here and in the children: on two shared cores, spinning worker threads made runs ten times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def factory():
    return tiny_labeller_factory()


@pytest.fixture(scope="module")
def corpus(mongo_uri, dev_dialogues, schema):
    """Three splits of one 3-turn dialogue each."""
    return ingest_small(short_dialogues(dev_dialogues, 3, TURNS), schema, split_size=1)


@pytest.fixture(scope="module")
def job():
    """The tiny-model settings (noisy channel: a resumed run must also reproduce the candidates' scores), with the
    example pool refreshed after every wave."""
    config = tiny_job()
    config.pool_refresh_batches = 1
    return config


@pytest.fixture(scope="module")
def seeded(corpus, job, factory):
    """A group whose first split was labelled in one uninterrupted run: the reference for resumes, the seed for dependents."""
    group = new_group(corpus[0], job)
    result = run_partition(group, corpus[1][0], labeller_factory=factory)
    assert result.status == "done" and result.new_turns == result.turns == TURNS
    assert [(e.batch, e.splits, e.examples) for e in result.pool] == [(0, [], 0)]
    return group


def _worker(group: str, split: str, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.support.partition_worker", group, split, *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _labels(group: str, split: str) -> dict:
    return {s.label.key: s.label.to_dict() for s in store.load_labels(group, split)}


def test_a_run_killed_after_two_waves_resumes_to_the_labels_of_an_uninterrupted_run(connected, corpus, job, seeded, factory):
    name, splits = corpus
    crashed = new_group(name, job)
    child = _worker(crashed, splits[0], "--kill-after-waves", "2")
    _, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err
    assert store.count_labels(crashed, splits[0]) == 2  # two waves of one turn were checkpointed
    assert store.partition(crashed, splits[0]).status == store.RUNNING  # nobody could release the claim

    resumed = run_partition(crashed, splits[0], labeller_factory=factory, lease_s=0)
    assert resumed.status == "done" and resumed.new_turns == TURNS - 2
    assert store.count_labels(crashed, splits[0]) == TURNS
    assert _labels(crashed, splits[0]) == _labels(seeded, splits[0])
    assert store.partition(crashed, splits[0]).attempts == 2
    assert [e["split"] for e in store.manifest_entries(crashed)] == [splits[0]]


def test_two_processes_racing_on_one_partition_leave_one_entry_and_no_duplicate(connected, corpus, job, factory):
    name, splits = corpus
    group = new_group(name, job)
    # A child starts labelling; once it has checkpointed a wave, this process takes the partition over (zero lease)
    # while the child is still running. The child must then stop without writing; this process finishes the job.
    child = _worker(group, splits[1])
    deadline = time.monotonic() + 120
    while store.count_labels(group, splits[1]) == 0 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    here = label(group, splits[1], factory, lease_s=0)
    out, err = child.communicate(timeout=180)
    assert child.returncode == 0, err
    outcomes = [here, out.strip().splitlines()[-1]]
    assert outcomes.count("done") == 1 and set(outcomes) <= {"done", "already_done", "claim_lost", "busy"}, outcomes
    assert store.partition(group, splits[1]).status == store.DONE
    assert store.count_labels(group, splits[1]) == TURNS
    assert [e["split"] for e in store.manifest_entries(group)] == [splits[1]]


def test_dependents_seed_from_completed_partitions_and_refresh_from_ones_completed_meanwhile(connected, corpus, seeded, factory):
    (seed, dependent, other), group = corpus[1], seeded
    assert store.claim_partition(group, other, "elsewhere") is not None  # `other` is running when `dependent` starts

    def finish_other_meanwhile(done: int, total: int) -> None:
        if store.partition(group, other).status != store.DONE:
            result = run_partition(group, other, labeller_factory=factory, lease_s=0)
            assert [e.splits for e in result.pool] == [[seed]]

    result = run_partition(group, dependent, on_progress=finish_other_meanwhile, labeller_factory=factory)
    # The refresh after wave 1 ran before `other` finished (in the progress hook); the one after wave 2 found it.
    assert [(e.batch, e.splits, e.examples) for e in result.pool] == [(0, [seed], TURNS), (2, [other], TURNS)]
    assert store.partition(group, dependent).pool == [e.to_dict() for e in result.pool]

    again = run_partition(group, dependent, labeller_factory=factory)
    assert again.status == "already_done" and again.pool == result.pool
    assert store.partition(group, dependent).attempts == 1


def test_a_crashing_labeller_marks_the_partition_failed_and_claimable(connected, corpus, job):
    name, splits = corpus
    group = new_group(name, job)

    def broken(config, schema):
        raise RuntimeError("GPU fell off the bus")

    with pytest.raises(RuntimeError):
        run_partition(group, splits[2], labeller_factory=broken)
    failed = store.partition(group, splits[2])
    assert failed.status == store.FAILED and "GPU fell off the bus" in failed.last_error and failed.claim is None
    assert store.claim_partition(group, splits[2], "next") is not None


def test_the_pulse_keeps_a_claim_alive_through_a_wave_longer_than_the_lease(connected, corpus, job):
    name, splits = corpus
    group = new_group(name, job)
    claim = store.claim_partition(group, splits[2], "slow-worker", lease_s=1.0)
    with pulse(claim):
        time.sleep(2.5)  # one long wave: no per-wave heartbeat in this time
        with pytest.raises(store.PartitionBusy):
            store.claim_partition(group, splits[2], "other-worker", lease_s=1.0)
    time.sleep(1.5)  # without the pulse the same claim goes stale and is taken over
    taken = store.claim_partition(group, splits[2], "other-worker", lease_s=1.0)
    assert taken is not None and taken.token != claim.token
    with pytest.raises(store.ClaimLost):
        store.heartbeat(claim)


def test_labels_keep_their_example_vectors_and_seeding_reads_them(connected, corpus, job, seeded, factory, schema):
    """Seeding from stored vectors embeds nothing and retrieves exactly what re-embedding the pool retrieves."""
    (seed, dependent, _), group = corpus[1], seeded
    stored = store.load_labels(group, seed)
    assert len(stored) == TURNS and all(set(s.vectors) == {"dst", "act"} for s in stored)
    assert {s.vectors["dst"]["embedder"] for s in stored} == {job.dst.retriever.model_name_or_path}
    examples, vectors = store.pool_examples_and_vectors(group, [seed])
    assert examples == store.pool_examples(group, [seed])
    from_store, from_text = factory(job, schema), factory(job, schema)
    assert from_store.add_examples(examples, vectors) == 0
    assert from_text.add_examples(examples) == 2 * TURNS
    queries = store.load_turns(corpus[0], dependent)
    for name in ("dst", "act"):
        found = getattr(from_store, name).index.search_batch(queries)
        assert found == getattr(from_text, name).index.search_batch(queries) and any(found)
