"""The MongoDB store and the embedded server, against a real nx-27017: ingest, names, claims, checkpoints, connection errors."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from labelling import redact, settings
from labelling.corpus import cut_into_splits
from labelling.errors import StoreError
from labelling.fleet import mongo_server, store
from tests.support.mongo_fixture import (
    complete_with_scripted_labels,
    ingest_small,
    new_group,
    scripted_labels,
    short_dialogues,
    unique,
)
from tests.support.partition_worker import tiny_job


@pytest.fixture(scope="module")
def small(mongo_uri, dev_dialogues, schema):
    """A corpus of two splits of one 3-turn dialogue each."""
    return ingest_small(short_dialogues(dev_dialogues, 2, 3), schema, split_size=1)


# --- corpus and names ----------------------------------------------------------------------------------------


def test_ingesting_the_bundled_corpus_twice_leaves_exactly_7365_turns(connected, dev_dialogues, schema):
    corpus, splits = unique("dev"), cut_into_splits(dev_dialogues)
    assert store.ingest_corpus(corpus, splits, schema) == 7365
    assert store.ingest_corpus(corpus, splits, schema) == 7365
    assert store.corpus_splits(corpus) == {name: len(turns) for name, turns in splits.items()}
    assert sum(store.corpus_splits(corpus).values()) == 7365
    assert store.load_turns(corpus, "train_950_999") == splits["train_950_999"]  # gold included, in corpus order


def test_a_corpus_name_holding_other_turns_is_refused(connected, small, dev_dialogues, schema):
    corpus, _ = small
    with pytest.raises(StoreError, match="already holds a different set of turns"):
        store.ingest_corpus(corpus, cut_into_splits(short_dialogues(dev_dialogues, 2, 4), 1), schema)


def test_unknown_names_are_errors_that_list_the_existing_ones(connected, small):
    corpus, splits = small
    group = new_group(corpus, tiny_job())
    with pytest.raises(StoreError, match=f"unknown corpus 'nope' \\(existing corpora: .*{corpus}"):
        store.corpus_splits("nope")
    with pytest.raises(StoreError, match=f"unknown group 'nope' \\(existing groups: .*{group}"):
        store.partitions("nope")
    with pytest.raises(StoreError, match=f"unknown split 'nope' \\(existing splits: {splits[0]}, {splits[1]}\\)"):
        store.claim_partition(group, "nope", "w")
    with pytest.raises(StoreError, match="group name 'a/b' is not valid"):
        store.create_group("a/b", corpus, tiny_job())


# --- claims and checkpoints ----------------------------------------------------------------------------------


def test_a_claim_guards_every_write_and_a_stale_one_is_taken_over(connected, small):
    corpus, splits = small
    group = new_group(corpus, tiny_job())
    assert store.create_group(group, corpus, tiny_job()) == splits  # idempotent
    first = store.claim_partition(group, splits[0], "w1")
    with pytest.raises(store.PartitionBusy, match="being labelled by w1"):
        store.claim_partition(group, splits[0], "w2")
    second = store.claim_partition(group, splits[0], "w2", lease_s=0)  # w1's heartbeat is older than a zero lease
    labels, metrics = scripted_labels(store.load_turns(corpus, splits[0]))

    with pytest.raises(store.ClaimLost):
        store.write_labels(first, labels, batch=0, seq_start=0)
    assert store.count_labels(group) == 0  # the run that lost its claim wrote nothing
    store.write_labels(second, labels[:2], batch=0, seq_start=0)
    store.write_labels(second, labels, batch=0, seq_start=0)  # a repeated write is an upsert
    assert store.count_labels(group, splits[0]) == len(labels)
    assert [s.label for s in store.load_labels(group, splits[0])] == labels
    store.heartbeat(second, turns_done=len(labels), metrics=metrics.to_dict())
    with pytest.raises(store.ClaimLost):
        store.complete_partition(first, metrics.to_dict())

    entry = store.complete_partition(second, metrics.to_dict())
    assert entry | {"created_at": 0} == {
        "group_id": group,
        "run_id": second.attempt_id,
        "split": splits[0],
        "corpus": corpus,
        "num_logs": len(labels),
        "created_at": 0,
    }
    assert store.claim_partition(group, splits[0], "w3") is None  # done
    done = store.partition(group, splits[0])
    assert (done.status, done.attempts, done.worker, done.claim, done.metrics) == (store.DONE, 2, "w2", None, metrics.to_dict())
    assert store.manifest_entries(group) == [entry]


def test_an_incomplete_partition_cannot_complete_and_a_failed_one_is_claimable(connected, small):
    corpus, splits = small
    group = new_group(corpus, tiny_job())
    claim = store.claim_partition(group, splits[1], "w1")
    labels, metrics = scripted_labels(store.load_turns(corpus, splits[1]))
    store.write_labels(claim, labels[:1], batch=0, seq_start=0)
    with pytest.raises(StoreError, match=f"holds 1 of {len(labels)} labels"):
        store.complete_partition(claim, metrics.to_dict())
    assert store.fail_partition(claim, "RuntimeError: out of memory")
    failed = store.partition(group, splits[1])
    assert (failed.status, failed.last_error) == (store.FAILED, "RuntimeError: out of memory")
    again = store.claim_partition(group, splits[1], "w2")
    assert [s.label for s in store.load_labels(group, splits[1])] == labels[:1]  # kept for the resume
    assert not store.fail_partition(claim, "late")  # the old claim no longer owns anything
    assert store.partition(group, splits[1]).claim == again.token


def test_pool_examples_carry_the_predictions_and_the_previous_turns_acts(connected, small):
    corpus, splits = small
    group = new_group(corpus, tiny_job())
    complete_with_scripted_labels(group, splits[0])
    assert store.done_splits(group) == [splits[0]]
    labels = [s.label for s in store.load_labels(group, splits[0])]
    examples = store.pool_examples(group, [splits[0]])
    assert [(e.dialogue_id, e.turn_id) for e in examples] == [lab.key for lab in labels]
    for i, (example, label) in enumerate(zip(examples, labels, strict=True)):
        assert (example.slot_values, example.last_slot_values, example.turn_slot_values) == (
            label.state,
            label.prior_state,
            label.delta,
        )
        assert example.system_response_acts == label.acts
        assert example.last_system_response_acts == (labels[i - 1].acts if i else [])
        assert example.domains == ["taxi"]  # from the predictions, never gold


# --- connection ----------------------------------------------------------------------------------------------


def _closed_port() -> int:
    return mongo_server._free_port()  # nothing listens there once the probe socket is closed


def test_an_unreachable_server_is_a_store_error_within_10_s_naming_the_masked_uri(connected):
    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.connect(f"mongodb://labeller:s3cret@127.0.0.1:{port}/labels")
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert f"mongodb://labeller:***@127.0.0.1:{port}/labels is unreachable" in message and "s3cret" not in message


def test_an_operation_retries_a_lost_server_with_backoff_then_gives_up(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(settings.MONGODB_RETRY_S.name, "4")
    with mongo_server.ensure_server(tmp_path) as server:
        store.connect(server.uri, timeout_ms=200)
        assert server.stop()  # `labelling server stop --force`: under a command that uses it
    start = time.monotonic()  # the server is gone: every attempt fails
    with caplog.at_level("WARNING", logger="labelling.fleet.store"):
        with pytest.raises(StoreError, match="unreachable for 4 s during list_corpora"):
            store.list_corpora()
    store.disconnect()
    pauses = [float(re.search(r"retrying in ([\d.]+) s", r.getMessage()).group(1)) for r in caplog.records]
    assert len(pauses) >= 2 and pauses[0] == 0.5  # then doubling, the last one cut to what is left of the 4 s
    assert all(later <= 2 * earlier for earlier, later in zip(pauses, pauses[1:], strict=False))
    assert 4 <= time.monotonic() - start < 10


def test_a_malformed_uri_is_a_store_error_that_hides_the_password(connected):
    with pytest.raises(StoreError, match=r"mongodb://u:\*\*\*@h:notaport/x is not a usable MongoDB URI") as caught:
        store.connect("mongodb://u:Zq9secret@h:notaport/x")
    assert "Zq9secret" not in str(caught.value)


def test_credentials_the_server_refuses_are_a_store_error(connected):
    host = connected.partition("://")[2].partition("/")[0]
    with pytest.raises(StoreError, match=f"mongodb://someone:\\*\\*\\*@{host}/x .*authentication"):
        store.connect(f"mongodb://someone:wrong@{host}/x")


def test_without_a_uri_the_embedded_server_starts_and_stops_once_no_one_uses_it(connected, monkeypatch, tmp_path):
    monkeypatch.delenv(settings.MONGODB_URI.name)
    monkeypatch.setenv(settings.STATE_DIR.name, str(tmp_path))
    monkeypatch.setenv(settings.SERVER_IDLE_S.name, "0.5")
    store.disconnect()
    with store.connect() as conn:
        assert conn.server is not None and conn.server.started
        assert str(conn.server.folder) == str(tmp_path / "mongo")
        assert store.connect().owned is False  # a borrowed handle: closing it closes nothing
        assert store.list_corpora() == []
        time.sleep(2)  # held: idle time does not count
        assert mongo_server.ping(conn.uri, 0.5)
    assert mongo_server.wait_until(lambda: not mongo_server.ping(conn.uri, 0.2), 15)


def test_mask_uri_hides_passwords_only():
    assert redact.mask_uri("mongodb://u:p@ss@h1:1,h2:2/db?authSource=admin&password=x") == (
        "mongodb://u:***@h1:1,h2:2/db?authSource=admin&password=***"
    )
    assert redact.mask_uri("mongodb+srv://user@cluster.example/db") == "mongodb+srv://user@cluster.example/db"


# --- the embedded server -------------------------------------------------------------------------------------


def test_a_running_server_is_reused_and_stops_only_after_its_last_user(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.SERVER_IDLE_S.name, "0.5")
    with mongo_server.ensure_server(tmp_path) as started:
        reused = mongo_server.ensure_server(tmp_path)
        assert (started.started, reused.started, reused.uri, reused.pid) == (True, False, started.uri, started.pid)
    time.sleep(2)  # the first handle let go, the second still holds it
    assert mongo_server.ping(started.uri)
    reused.release()
    assert mongo_server.wait_until(lambda: not mongo_server.ping(started.uri, 0.2), 15)
    folder = tmp_path / "mongo"
    assert mongo_server.wait_until(lambda: not (folder / "port").exists() and not (folder / "keeper.pid").exists(), 5)
    assert not (folder / "nx-27017.pid").exists()


@pytest.mark.parametrize("owner", ["dead process", "unrelated live process"])
def test_a_stale_pid_file_is_replaced(tmp_path, owner):
    folder = tmp_path / "mongo"
    folder.mkdir()
    other = subprocess.Popen(["true"] if owner == "dead process" else ["sleep", "30"])
    if owner == "dead process":
        other.wait()
    (folder / "nx-27017.pid").write_text(str(other.pid))
    (folder / "port").write_text(str(_closed_port()))
    try:
        with mongo_server.ensure_server(tmp_path) as server:
            assert server.started and server.pid != other.pid and mongo_server.ping(server.uri)
    finally:
        other.kill()
        other.wait()
