"""The fleet for real: RabbitMQ on this machine, two `labelling worker` processes on a tiny random model, the nx-27017
MongoDB-wire server and Flower. Four partitions of 2 dialogues are labelled, the seed strictly before the others, and
the result exports; Flower lists both workers and the tasks, and refuses requests without credentials.

Each run gets its own RabbitMQ vhost (through rabbitmqctl), or its own queue names where rabbitmqctl is unavailable,
so messages left by other runs never reach these workers.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from labelling.fleet import store
from labelling.fleet.mongo_server import ensure_server
from tests.support.fleet_helpers import LABELLING, ingest_first, save_tiny_model, shortest, write_job
from tests.support.fleet_services import Service, free_port, own_broker, until

pytestmark = pytest.mark.integration
TAG = uuid.uuid4().hex[:8]
WORKERS = (f"w1-{TAG}", f"w2-{TAG}")
FLOWER_USER, FLOWER_PASSWORD = "admin", f"pw-{TAG}"
GROUP, CORPUS = f"fleet-{TAG}", f"itest-{TAG}"


# --- services ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker():
    """A broker URL no other run shares (see tests.support.fleet_services.own_broker)."""
    with own_broker(TAG) as found:
        yield found


def _get(url: str, auth: bool = True) -> tuple[int, object]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:  # not listening yet
        return 0, None


@pytest.fixture(scope="module")
def fleet(broker, tmp_path_factory, dev_dialogues, schema):
    """The MongoDB-wire server with a small corpus, Flower, and two workers on the tiny model: all stopped at the end."""
    url, extra = broker
    root = tmp_path_factory.mktemp("fleet")
    server = ensure_server(root / "db")
    store.connect(server.uri)
    ingest_first(CORPUS, shortest(dev_dialogues, 10), schema, 10, 5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    env.update(extra, LABELLING_BROKER_URL=url, LABELLING_MONGODB_URI=server.uri, LABELLING_STATE_DIR=str(root / "state"))
    env.update(LABELLING_CHORD_POLL_S="1", LABELLING_FLOWER_USER=FLOWER_USER, LABELLING_FLOWER_PASSWORD=FLOWER_PASSWORD)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    port = free_port()
    services = [Service([str(LABELLING), "flower", "--port", str(port)], env, root / "flower.log")]
    for name in WORKERS:  # one pool thread each: the two workers share this machine's 2 cores
        command = [str(LABELLING), "worker", "--name", f"{name}@%h", "--threads", "1", "--loglevel", "INFO"]
        services.append(Service(command, env, root / f"{name}.log"))
    try:
        yield {"env": env, "root": root, "flower": f"http://127.0.0.1:{port}", "services": services}
    finally:
        for service in services:
            service.stop()
        store.disconnect()
        server.stop()


@pytest.fixture(scope="module")
def labelled(fleet, tiny_job):
    """Both workers online in Flower, then `labelling run --wait` over 4 partitions of 2 dialogues; its completed process."""
    flower, services = fleet["flower"], fleet["services"]
    until(lambda: _get(f"{flower}/api/workers", auth=False)[0] == 401, 120, "Flower to answer", services)

    def both_online():
        code, workers = _get(f"{flower}/api/workers?refresh=1")
        return code == 200 and all(any(w.startswith(f"{name}@") for w in workers) for name in WORKERS) and workers

    until(both_online, 180, "both workers to report to Flower", services)
    job = write_job(tiny_job, save_tiny_model(fleet["root"] / "tiny-llama"), fleet["root"] / "job.json")
    command = [str(LABELLING), "run", "--corpus", CORPUS, "--group", GROUP, "--config", str(job)]
    command += ["--limit-dialogues", "8", "--split-size", "2", "--wait"]
    started = time.monotonic()
    done = subprocess.run(command, env=fleet["env"], capture_output=True, text=True, timeout=900)
    logs = "\n\n".join(f"--- {s.log.name}\n{s.tail()}" for s in services)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
    print(f"\nlabelling run --wait took {time.monotonic() - started:.1f} s")
    return done


@pytest.fixture(scope="module")
def tiny_job():
    """The cpu-small settings, decoding as the reference does, with short samples: a random model never stops on its own."""
    from labelling import config as job_config

    job = job_config.with_reference_decoding(job_config.load(profile="cpu-small"))
    for module in (job.dst, job.act_tag):
        module.generation_cfg.sampling_args.max_new_tokens = 8
    return job


# --- the run ------------------------------------------------------------------------------------------------------


def test_run_prints_its_id_and_how_to_watch_and_export(labelled):
    out = labelled.stdout
    assert " submitted: group " in out and out.startswith("run ")
    assert f"labelling status --group {GROUP} --watch" in out and "labelling flower" in out
    assert f"labelling export --group {GROUP} --out DIR" in out
    assert "guest:guest" not in out + labelled.stderr


def test_every_partition_is_labelled_and_the_seed_ran_alone_first(labelled, fleet):
    store.connect(fleet["env"]["LABELLING_MONGODB_URI"])  # the fleet's server, whatever another module exported
    parts = store.partitions(GROUP)
    seed = store.group_run(GROUP).seed_split
    assert [p.split for p in parts] == ["train_0_2", "train_2_4", "train_4_6", "train_6_8"]
    assert all(p.status == store.DONE for p in parts)
    assert all(store.count_labels(GROUP, p.split) == p.turns_total > 0 for p in parts)
    assert len(store.manifest_entries(GROUP)) == 4
    first = next(p for p in parts if p.split == seed)
    dependents = [p for p in parts if p.split != seed]
    assert all(first.finished_at < p.claimed_at <= p.started_at for p in dependents)
    assert all(seed in p.pool[0]["splits"] for p in dependents)
    assert {p.worker.split("@")[0] for p in parts} <= set(WORKERS)
    for p in parts:
        print(f"{p.split}: {p.turns_total} turns, {p.turns_per_s:.2f} turns/s on {p.worker}")


def test_running_it_again_submits_nothing(labelled, fleet):
    again = [str(LABELLING), "run", "--corpus", CORPUS, "--group", GROUP, "--limit-dialogues", "8", "--split-size", "2"]
    config = ["--config", str(fleet["root"] / "job.json")]
    done = subprocess.run(again + config, env=fleet["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"group {GROUP} is complete: nothing to label" in done.stdout


def test_the_group_exports_as_a_dataset(labelled, fleet):
    import datasets

    from labelling.fleet.export import export_group

    store.connect(fleet["env"]["LABELLING_MONGODB_URI"])
    result = export_group(GROUP, fleet["root"] / "export")
    loaded = datasets.load_from_disk(str(fleet["root"] / "export"))
    assert loaded["train"].num_rows == result.num_turns == sum(p.turns_total for p in store.partitions(GROUP))
    assert result.num_dialogues == 8


# --- Flower ----------------------------------------------------------------------------------------------------------


def test_flower_lists_both_workers_and_the_partition_tasks(labelled, fleet):
    code, workers = _get(f"{fleet['flower']}/api/workers")
    assert code == 200 and all(any(w.startswith(f"{name}@") for w in workers) for name in WORKERS)
    code, tasks = _get(f"{fleet['flower']}/api/tasks")
    assert code == 200
    labelled_tasks = [t for t in tasks.values() if t.get("name") == "labelling.label_partition"]
    assert len(labelled_tasks) >= 4 and all(t["state"] == "SUCCESS" for t in labelled_tasks)
    assert any(t.get("name") == "labelling.dispatch_dependents" for t in tasks.values())


def test_flower_refuses_requests_without_credentials(labelled, fleet):
    assert _get(f"{fleet['flower']}/api/workers", auth=False)[0] == 401
    assert _get(f"{fleet['flower']}/api/tasks", auth=False)[0] == 401


# --- exit codes ------------------------------------------------------------------------------------------------------


def test_a_waited_run_whose_seed_fails_exits_1_naming_what_is_not_done(labelled, fleet):
    from labelling import config as job_config

    broken = fleet["root"] / "not-a-model"  # a folder with no weights: the worker claims the seed, then fails to load
    broken.mkdir(exist_ok=True)
    job = write_job(job_config.load(profile="cpu-qwen"), broken, fleet["root"] / "broken.json")
    command = [str(LABELLING), "run", "--corpus", CORPUS, "--group", f"broken-{TAG}", "--config", str(job)]
    command += ["--limit-dialogues", "2", "--split-size", "1", "--wait"]
    done = subprocess.run(command, env=fleet["env"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, f"{done.stdout}\n{done.stderr}"
    assert "not done: train_0_1, train_1_2; `labelling run` again resumes them" in done.stdout
