"""Flower started late: a partition task received before Flower started is still listed with its name and arguments.

Flower names a task from its task-sent or task-received event; a Flower that started later would show ``null``. The
partition task repeats its name and arguments in a ``task-progress`` event after every wave (tasks.partition). Real
RabbitMQ (a vhost of its own), a real `labelling worker` on a tiny random model, the nx-27017 server and a real
`labelling flower`, started only once the store shows the seed partition claimed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest

from labelling.fleet import store
from labelling.fleet.mongo_server import ensure_server
from tests.support.fleet_helpers import LABELLING, ingest_first, save_tiny_model, write_job
from tests.support.fleet_services import Service, free_port, own_broker, until

pytestmark = pytest.mark.integration
TAG = uuid.uuid4().hex[:8]
USER, PASSWORD = "admin", f"pw-{TAG}"
GROUP, CORPUS = f"late-{TAG}", f"late-src-{TAG}"


def _tasks(url: str) -> dict | None:
    """Flower's task list, or None while it does not answer."""
    request = urllib.request.Request(f"{url}/api/tasks")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except (urllib.error.HTTPError, OSError):
        return None


@pytest.fixture
def late_fleet(tmp_path, dev_dialogues, schema, fast_job):
    """A worker and a small corpus whose seed partition takes several waves (long dialogues); all stopped at the end."""
    with own_broker(TAG) as (url, extra), ensure_server(tmp_path / "db") as server:
        store.connect(server.uri)
        longest = sorted(dev_dialogues[:60], key=len)[-4:]  # many turns, so many waves: time for Flower to start
        ingest_first(CORPUS, longest, schema, 4, 2)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "LABELLING_"))}
        env.update(extra, LABELLING_BROKER_URL=url, LABELLING_MONGODB_URI=server.uri, LABELLING_CHORD_POLL_S="1")
        env.update(LABELLING_STATE_DIR=str(tmp_path / "state"), LABELLING_FLOWER_USER=USER, LABELLING_FLOWER_PASSWORD=PASSWORD)
        env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        command = [str(LABELLING), "worker", "--name", f"late-{TAG}@%h", "--threads", "1", "--loglevel", "INFO"]
        services = [Service(command, env, tmp_path / "worker.log")]
        job = write_job(fast_job, save_tiny_model(tmp_path / "tiny-llama"), tmp_path / "job.json")
        try:
            yield {"env": env, "root": tmp_path, "job": job, "services": services}
        finally:
            for service in services:
                service.stop()
            store.disconnect()


def test_a_flower_started_after_the_seed_was_received_names_it(late_fleet):
    env, services = late_fleet["env"], late_fleet["services"]
    submit = [str(LABELLING), "run", "--corpus", CORPUS, "--group", GROUP, "--config", str(late_fleet["job"])]
    done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run_id = re.search(r"^run (\w+) submitted", done.stdout, re.M).group(1)
    seed = store.group_run(GROUP).seed_split

    until(lambda: store.partition(GROUP, seed).status == store.RUNNING, 300, "the seed to be claimed", services)
    port = free_port()
    services.append(Service([str(LABELLING), "flower", "--port", str(port)], env, late_fleet["root"] / "flower.log"))
    flower = f"http://127.0.0.1:{port}"
    until(lambda: _tasks(flower) is not None, 120, "Flower to answer", services)
    assert store.partition(GROUP, seed).status == store.RUNNING, "the seed finished before Flower started: nothing tested"

    until(lambda: all(p.status == store.DONE for p in store.partitions(GROUP)), 600, "every partition done", services)
    seed_id = f"{run_id}-{seed}"
    tasks = until(lambda: (t := _tasks(flower)) and t.get(seed_id, {}).get("state") == "SUCCESS" and t, 60, "the seed", services)
    unnamed = {task_id: task for task_id, task in tasks.items() if not task.get("name")}
    assert not unnamed, unnamed
    seed_task = tasks[seed_id]
    assert seed_task["received"] is None, "Flower saw the seed's task-received event: it was not started late"
    assert seed_task["name"] == "labelling.label_partition"
    assert seed_task["args"] == repr((GROUP, seed))
    partitions = [t for t in tasks.values() if t["name"] == "labelling.label_partition"]
    assert {t["args"] for t in partitions} == {repr((GROUP, p.split)) for p in store.partitions(GROUP)}
