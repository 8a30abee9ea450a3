"""The fleet layer without a fleet: settings from the environment, `labelling run` refusing bad input before it submits
anything, one launch per group, and the embedded mode's chord (seed first) on a tiny model and the MongoDB-wire server."""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

import celeryconfig
from labelling import config as job_config
from labelling.errors import ConfigError, FleetError, StoreError
from labelling.fleet import store
from labelling.fleet.groups import first_difference, load_jobs, prepare_group
from labelling.fleet.launches import FLEET, LOCAL, claim_launch, current_launch, end_launch, is_live
from labelling.fleet.mongo_server import ensure_server
from tasks.partition import busy_retry_s
from tests.support.cli_helpers import run_cli
from tests.support.fleet_helpers import LABELLING, ingest_first, save_tiny_model, shortest, write_job

SETTINGS_ENV = (
    "LABELLING_BROKER_URL",
    "LABELLING_RESULT_BACKEND",
    "LABELLING_MONGODB_URI",
    "LABELLING_QUEUE_PREFIX",
    "LABELLING_TASK_SOFT_TIME_LIMIT_S",
    "LABELLING_TASK_TIME_LIMIT_S",
    "LABELLING_CONSUMER_TIMEOUT_MS",
)


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mongo(tmp_path_factory):
    """An nx-27017 server of this module's own, stopped at the end."""
    with ensure_server(tmp_path_factory.mktemp("state")) as server:
        yield server.uri
    store.disconnect()


@pytest.fixture
def env(monkeypatch, mongo, tmp_path):
    """No broker, the module's store, nothing inherited from the shell that could reach a real service."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LABELLING_MONGODB_URI", mongo)
    monkeypatch.setenv("LABELLING_STATE_DIR", str(tmp_path / "state"))
    store.connect()
    yield monkeypatch
    store.disconnect()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def _settings(monkeypatch, **env: str):
    with monkeypatch.context() as patch:
        for name in SETTINGS_ENV:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        settings = importlib.reload(celeryconfig)
        values = {k: getattr(settings, k) for k in dir(settings) if not k.startswith("_")}
    importlib.reload(celeryconfig)  # back to the environment the other tests run in
    return values


# --- settings ----------------------------------------------------------------------------------------------------


def test_settings_defaults_are_safe_for_hours_long_tasks(monkeypatch):
    s = _settings(monkeypatch)
    assert s["broker_url"] is None and s["result_backend"] is None  # local mode; the store's MongoDB is bound at start
    assert s["task_acks_late"] and s["task_reject_on_worker_lost"] and s["worker_prefetch_multiplier"] == 1
    assert s["task_serializer"] == s["result_serializer"] == "json" and s["accept_content"] == ["json"]
    assert s["task_soft_time_limit"] == 86400 and s["task_time_limit"] == 86400 + 900
    assert s["broker_transport_options"]["visibility_timeout"] > s["task_time_limit"]
    queues = {q.name: q for q in s["task_queues"]}
    assert set(queues) == {"labelling.partitions", "labelling.control"}
    assert queues["labelling.partitions"].queue_arguments == {"x-consumer-timeout": 48 * 3600 * 1000}
    assert s["task_routes"]["labelling.label_partition"]["queue"] == "labelling.partitions"
    assert s["task_routes"]["celery.chord_unlock"]["queue"] == s["task_default_queue"] == "labelling.control"


def test_settings_follow_the_environment(monkeypatch):
    s = _settings(
        monkeypatch,
        LABELLING_BROKER_URL="amqp://u:p@broker:5672/v",
        LABELLING_MONGODB_URI="mongodb://db:27017/lab",
        LABELLING_QUEUE_PREFIX="night",
        LABELLING_TASK_SOFT_TIME_LIMIT_S="7200",
        LABELLING_CONSUMER_TIMEOUT_MS="0",
    )
    assert s["broker_url"] == "amqp://u:p@broker:5672/v"
    assert s["result_backend"] == "mongodb://db:27017/lab"
    assert {q.name for q in s["task_queues"]} == {"night.partitions", "night.control"}
    assert all(q.queue_arguments == {} for q in s["task_queues"])  # 0 leaves the argument out
    assert s["task_soft_time_limit"] == 7200 and s["task_time_limit"] == 8100
    assert _settings(monkeypatch, LABELLING_RESULT_BACKEND="redis://r:6379/1")["result_backend"] == "redis://r:6379/1"


def test_a_bad_number_names_its_variable(monkeypatch):
    with pytest.raises(ValueError, match="LABELLING_TASK_TIME_LIMIT_S"):
        _settings(monkeypatch, LABELLING_TASK_TIME_LIMIT_S="two hours")


# --- job configs -------------------------------------------------------------------------------------------------


def test_per_partition_job_files_merge_and_must_agree(fast_job, tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    for split in ("train_0_2", "train_2_4"):
        write_job(fast_job, Path("/models/tiny"), folder / f"{split}.json", split)
    job, named = load_jobs([folder], None)
    assert named == ["train_0_2", "train_2_4"] and job.data.eval_set_split_name is None
    assert job.dst.model.model_name_or_path == "/models/tiny"

    fast_job.act_tag.generation_cfg.sampling_args.n = 7
    odd = write_job(fast_job, Path("/models/tiny"), tmp_path / "odd.json", "train_4_6")
    with pytest.raises(ConfigError, match=r"odd.json differs from .* at act_tag.generation_cfg.sampling_args.n"):
        load_jobs([folder, odd], None)


def test_first_difference_walks_nested_keys():
    assert first_difference({"a": {"b": 1, "c": [1]}}, {"a": {"b": 1, "c": [1]}}) is None
    assert first_difference({"a": {"b": 1}}, {"a": {"b": 2}}) == "a.b"
    assert first_difference({"a": 1}, {"a": 1, "z": 0}) == "z"


# --- `labelling run` refuses before it submits ------------------------------------------------------------------


def _nothing_recorded(group: str) -> bool:
    store.connect()
    return group not in store.list_groups() and current_launch(group) is None


def test_run_refuses_a_config_with_an_unknown_key(env, capsys, tmp_path):
    bad = tmp_path / "job.json"
    bad.write_text(json.dumps({"dst": {"modle": {"model_name_or_path": "x"}}}))
    code, out, err = run_cli(env, capsys, "run", "--corpus", "any", "--group", "g-bad-key", "--config", bad)
    assert code == 2
    assert err.strip().splitlines() == ["error: config key dst.modle: unknown key (did you mean 'model'?)"]
    assert _nothing_recorded("g-bad-key")


def test_run_refuses_a_missing_corpus(env, capsys, dev_dialogues, schema):
    ingest_first("known-corpus", dev_dialogues, schema, 2, 1)
    code, _, err = run_cli(env, capsys, "run", "--corpus", "no-such-corpus", "--group", "g-no-corpus", "--local")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "unknown corpus 'no-such-corpus'" in err and "known-corpus" in err
    assert _nothing_recorded("g-no-corpus")


def test_run_refuses_a_broker_that_is_down_without_showing_its_password(env, capsys, dev_dialogues, schema):
    ingest_first("small", dev_dialogues, schema, 2, 1)
    env.setenv("LABELLING_BROKER_URL", "amqp://guest:s3cret@127.0.0.1:1//")
    code, out, err = run_cli(env, capsys, "run", "--corpus", "small", "--group", "g-no-broker")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "error: the broker at amqp://guest:***@127.0.0.1:1// is unreachable" in err
    assert "s3cret" not in out + err
    assert _nothing_recorded("g-no-broker")


def test_retry_failed_needs_a_known_group_with_failed_partitions(env, capsys, fast_job, dev_dialogues, schema):
    code, _, err = run_cli(env, capsys, "run", "--group", "g-never-made", "--retry-failed", "--local")
    assert code == 2 and "unknown group 'g-never-made'" in err
    ingest_first("retry-src", dev_dialogues, schema, 2, 1)
    store.create_group("g-nothing-failed", "retry-src", fast_job)
    code, _, err = run_cli(env, capsys, "run", "--group", "g-nothing-failed", "--retry-failed", "--local")
    assert code == 2 and "group 'g-nothing-failed' has no failed partitions" in err
    assert current_launch("g-nothing-failed") is None


def test_worker_and_flower_say_what_they_need(env, capsys):
    code, _, err = run_cli(env, capsys, "worker", "--gpu", "0")
    assert code == 2 and "labelling worker needs a broker, and LABELLING_BROKER_URL is not set" in err
    env.setenv("LABELLING_BROKER_URL", "amqp://guest:guest@127.0.0.1:1//")
    env.delenv("FLOWER_BASIC_AUTH", raising=False)
    code, _, err = run_cli(env, capsys, "flower")
    assert code == 2 and "Flower would start without authentication" in err and "--insecure" in err
    env.setenv("LABELLING_FLOWER_USER", "admin")
    code, _, err = run_cli(env, capsys, "flower")
    assert code == 2 and "set both LABELLING_FLOWER_USER and LABELLING_FLOWER_PASSWORD" in err


# --- the group lifecycle (library) -------------------------------------------------------------------------------


def test_a_group_keeps_its_corpus_config_and_seed_for_the_library_and_the_cli_alike(env, fast_job, dev_dialogues, schema):
    ingest_first("keep", dev_dialogues, schema, 2, 1)
    assert prepare_group("keep", "g-keep", fast_job) == ("keep", "train_0_1")
    other = job_config.from_dict(fast_job.to_dict())
    other.seed += 1
    changed = "'g-keep' was created with another job config \\(first difference: seed\\)"
    with pytest.raises(ConfigError, match=changed):
        store.create_group("g-keep", "keep", other)  # the store's own entry point refuses too (it used to keep the old one)
    with pytest.raises(ConfigError, match=changed):
        prepare_group("keep", "g-keep", other)
    with pytest.raises(ConfigError, match="'g-keep' was seeded with 'train_0_1', not 'train_1_2'"):
        prepare_group("keep", "g-keep", fast_job, seed_split="train_1_2")
    with pytest.raises(StoreError, match="'g-keep' labels corpus 'keep', not 'keep.by1'"):
        prepare_group("keep", "g-keep", fast_job, size=1)
    assert "keep.by1" not in store.list_corpora()  # refused before the slice was cut
    assert prepare_group("keep", "g-keep", fast_job) == ("keep", "train_0_1")  # the same request resumes the group


# --- one launch per group ---------------------------------------------------------------------------------------------


def test_only_one_of_many_simultaneous_launches_wins(env, fast_job, dev_dialogues, schema):
    ingest_first("race", dev_dialogues, schema, 2, 1)
    store.create_group("g-race", "race", fast_job)
    outcomes: list[object] = []

    def launch() -> None:
        try:
            outcomes.append(claim_launch("g-race", "race", "train_0_1", FLEET))
        except FleetError as e:
            outcomes.append(e)

    threads = [threading.Thread(target=launch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if not isinstance(o, FleetError)]
    assert len(winners) == 1 and current_launch("g-race").run_id == winners[0].run_id
    with pytest.raises(FleetError, match=f"already being labelled by run {winners[0].run_id}"):
        claim_launch("g-race", "race", "train_0_1", LOCAL)
    assert claim_launch("g-race", "race", "train_0_1", FLEET, resubmit=True).run_id != winners[0].run_id


def test_an_ended_or_dead_local_launch_does_not_block_the_group(env, fast_job, dev_dialogues, schema):
    ingest_first("ended", dev_dialogues, schema, 2, 1)
    store.create_group("g-ended", "ended", fast_job)
    first = claim_launch("g-ended", "ended", "train_0_1", LOCAL)
    assert is_live(current_launch("g-ended"))
    end_launch(first)
    assert not is_live(current_launch("g-ended"))
    second = claim_launch("g-ended", "ended", "train_0_1", LOCAL)
    store.connect()
    import mongoengine

    mongoengine.get_db()["launches"].update_one({"_id": "g-ended"}, {"$set": {"pid": 2**22 + 12345}})  # no such process
    assert not is_live(current_launch("g-ended"))
    assert claim_launch("g-ended", "ended", "train_0_1", LOCAL).run_id != second.run_id


# --- the embedded mode ----------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread(env):
    """LABELLING_TORCH_THREADS=1 for the run (it shares 2 cores with other jobs), torch's setting restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    env.setenv("LABELLING_TORCH_THREADS", "1")
    yield env
    torch.set_num_threads(threads)


def test_local_run_labels_the_seed_first_then_resumes_nothing(
    one_thread, capsys, fast_job, tiny_model_dir, tmp_path, dev_dialogues, schema
):
    ingest_first("local-src", shortest(dev_dialogues, 3), schema, 3, 3)
    job = write_job(fast_job, tiny_model_dir, tmp_path / "job.json")
    args = ("run", "--corpus", "local-src", "--group", "g-local", "--config", job, "--limit-dialogues", "2", "--split-size", "1")
    code, out, err = run_cli(one_thread, capsys, *args)
    assert code == 0, err
    assert "labelled in this process" in out and "export:  labelling export --group g-local" in out

    store.connect()
    seed, dependent = store.partitions("g-local")
    assert store.group_run("g-local").corpus == "local-src.first2.by1"
    assert [seed.status, dependent.status] == [store.DONE, store.DONE]
    assert seed.finished_at <= dependent.claimed_at
    assert dependent.pool[0]["splits"] == [seed.split] and seed.pool[0]["splits"] == []
    assert len(store.manifest_entries("g-local")) == 2
    assert store.count_labels("g-local") == seed.turns_total + dependent.turns_total

    code, out, _ = run_cli(one_thread, capsys, *args)
    assert code == 0 and "group g-local is complete: nothing to label" in out
    code, out, _ = run_cli(one_thread, capsys, "status", "--group", "g-local")
    assert code == 0 and f"{seed.split} (seed)" in out and f"{dependent.turns_total}/{dependent.turns_total}" in out


def test_a_duplicate_delivery_waits_out_the_holders_lease(env, fast_job, dev_dialogues, schema):
    ingest_first("busy", dev_dialogues, schema, 1, 1)
    store.create_group("g-busy", "busy", fast_job)
    env.setenv("LABELLING_CLAIM_LEASE_S", "600")
    claim = store.claim_partition("g-busy", "train_0_1", "w1@host")
    with pytest.raises(store.PartitionBusy):
        store.claim_partition("g-busy", "train_0_1", "w2@host")
    assert 590 <= busy_retry_s("g-busy", "train_0_1") <= 600  # a live holder: retry once its lease could have run out
    store.heartbeat(claim)
    env.setenv("LABELLING_CLAIM_LEASE_S", "0.5")
    time.sleep(0.6)
    assert busy_retry_s("g-busy", "train_0_1") == 0.5  # stale already: retry at once, capped by the lease


@pytest.mark.slow
def test_demo_labels_evaluates_and_exports_with_nothing_configured(tmp_path):
    """`labelling demo` as on a fresh clone (about 3 minutes on 2 cores): exit 0, a dataset load_from_disk reads, and
    labels that beat nothing: non-zero exact JGA, slot F1 and act F1."""
    import subprocess

    import datasets

    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLING_")}
    done = subprocess.run([str(LABELLING), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "demo finished in" in done.stdout
    assert done.stderr.count("store: ") == 1, done.stderr[-3000:]  # one store, named once
    page = tmp_path / ".state" / "demo" / "report" / "report.html"
    assert f"HTML report: {page}" in done.stdout and (page.parent / "quality.png").is_file()
    assert done.stdout.index("JGA (exact)") > done.stdout.index("dataset:")  # it ends on its quality table
    for noise in ("it/s]", "Loading weights", "Saving the dataset", "Retrying in", "Warning"):  # third-party output
        assert noise not in done.stderr, done.stderr[-3000:]
    exported = datasets.load_from_disk(str(tmp_path / ".state" / "demo" / "export"))
    assert exported["train"].num_rows == 28 and set(exported) == {"train", "train_minus_64", "valid_64"}
    # The default profile labels some whole states right and finds state slots (SmolLM2 scored 0.000 JGA here).
    scored = subprocess.run(
        [str(LABELLING), "evaluate", "--group", "demo", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    overall = json.loads(scored.stdout)["overall"]
    assert overall["jga"] > 0 and overall["state_f1"] > 0 and overall["acts_f1"] > 0, overall
