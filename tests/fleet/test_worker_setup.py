"""`labelling worker` before its pool starts: which GPU it sees, pool warnings, and the start-up check that fails at once,
naming the fix, for a model this machine cannot load (a missing folder, a hub id it cannot reach or has no token for)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from labelling.errors import LabellingError, ModelError
from labelling.fleet import store
from labelling.fleet.worker_setup import check_models, live_group_models, pool_warnings, visible_devices
from tests.support.mongo_fixture import ingest_small, new_group, short_dialogues
from tests.support.partition_worker import tiny_job

LABELLING = Path(sys.executable).with_name("labelling")
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
START_S = 30  # a one-line failure, counting the interpreter's and the CLI's imports on a busy 2-core machine


def test_without_gpu_the_worker_hides_every_gpu():
    assert visible_devices(None, None) == "" and visible_devices(None, "0,1") == ""


def test_gpu_indexes_into_an_inherited_list():
    assert visible_devices(1, None) == "1"
    assert visible_devices(1, "4,6") == "6"
    assert visible_devices(0, "GPU-3f2a, GPU-77b1") == "GPU-3f2a"  # a scheduler's UUIDs
    with pytest.raises(LabellingError, match=r"--gpu 2, but CUDA_VISIBLE_DEVICES='4,6' lists 2 GPU\(s\)") as err:
        visible_devices(2, "4,6")
    assert "use 0 to 1" in str(err.value)
    with pytest.raises(LabellingError, match="may use no GPU"):
        visible_devices(0, "")


def test_several_pool_processes_on_one_gpu_warn():
    assert pool_warnings(0, "prefork", 1) == [] and pool_warnings(None, "prefork", 4) == []
    assert pool_warnings(0, "threads", 4) == []  # threads share one copy, loaded once under a lock
    (warning,) = pool_warnings(3, "prefork", 2)
    assert "2 pool processes on GPU 3 each load their own copy" in warning


def test_hub_check_fails_at_once_without_the_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing downloaded before
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    started = time.monotonic()
    with pytest.raises(ModelError, match="cannot reach the Hugging Face hub to check model bigcode/starcoder") as err:
        check_models([("bigcode/starcoder", False)])
    assert "hf download bigcode/starcoder" in str(err.value) and time.monotonic() - started < 10
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="not in the hub cache .* HF_HUB_OFFLINE is set"):
        check_models([("sentence-transformers/all-mpnet-base-v2", True)])


def test_local_models_are_checked_without_loading(tmp_path):
    check_models([("smollm2", False), ("minilm", True)])  # the embedded ones: found, not converted
    with pytest.raises(ModelError, match="model folder not found"):
        check_models([(str(tmp_path / "no" / "model"), False)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model folder"):
        check_models([(str(tmp_path / "empty"), False)])
    with pytest.raises(ModelError, match="GGUF file not found"):
        check_models([(str(tmp_path / "missing.gguf"), False)])


MISSING_MODEL = "/models/not-on-this-machine"


@pytest.fixture
def own_database(mongo_uri):
    """A database of its own on the session's server: the groups other tests left live are not this test's, and the
    groups made here are not theirs. The store is pointed back at the session's database afterwards."""
    uri = f"{mongo_uri.rsplit('/', 1)[0]}/worker_{uuid.uuid4().hex[:8]}"
    store.connect(uri)
    yield uri
    store.connect(mongo_uri)


@pytest.fixture
def live_group_on_a_missing_model(own_database, dev_dialogues, schema):
    """A group with work left whose job names a model folder this machine lacks."""
    job = tiny_job()
    job.dst.model.model_name_or_path = job.act_tag.model.model_name_or_path = MISSING_MODEL
    corpus, _ = ingest_small(short_dialogues(dev_dialogues, 1, 3), schema, split_size=1)
    return new_group(corpus, job)


def test_live_groups_name_their_models(live_group_on_a_missing_model):
    assert live_group_models() == [(MISSING_MODEL, False), ("minilm", True)]


# -- the command itself, in a subprocess ------------------------------------------------------------------------------


def _worker(mongo: str, *args: str, **env: str) -> subprocess.Popen:
    environ = {
        **os.environ,
        "LABELLING_BROKER_URL": BROKER,
        "LABELLING_MONGODB_URI": mongo,
        "LABELLING_QUEUE_PREFIX": f"test-worker-{uuid.uuid4().hex[:8]}",  # never takes another test's tasks
        **env,
    }
    return subprocess.Popen([LABELLING, "worker", *args], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.integration
def test_worker_fails_at_start_naming_the_fix(own_database, tmp_path):
    started = time.monotonic()
    child = _worker(own_database, "--model", "bigcode/starcoder", HF_HOME=str(tmp_path / "hf"))
    _, err = child.communicate(timeout=START_S * 2)
    assert child.returncode == 2 and time.monotonic() - started < START_S, err
    assert "error: cannot reach the Hugging Face hub to check model bigcode/starcoder" in err and "hf download" in err

    child = _worker(own_database, "--model", str(tmp_path / "missing-model"))
    _, err = child.communicate(timeout=START_S * 2)
    assert child.returncode == 2 and "error: model folder not found" in err, err


@pytest.mark.integration
def test_worker_checks_the_models_of_groups_with_work_left(own_database, live_group_on_a_missing_model):
    child = _worker(own_database, "--gpu", "0")
    _, err = child.communicate(timeout=START_S * 2)
    assert child.returncode == 2 and f"model folder not found: {MISSING_MODEL}" in err, err


@pytest.mark.integration
def test_worker_without_gpu_says_cpu_and_starts(own_database, tmp_path):
    model_dir = tmp_path / "model"
    from tests.support.fleet_helpers import save_tiny_model

    save_tiny_model(model_dir)
    wide = {**os.environ, "COLUMNS": "300"}  # rich boxes the help: one option per line at this width
    help_text = subprocess.run([LABELLING, "worker", "--help"], capture_output=True, text=True, timeout=60, env=wide).stdout
    assert "left out: CPU, GPUs hidden" in help_text
    child = _worker(own_database, "--model", str(model_dir), "--pool", "solo")
    try:
        deadline, err = time.monotonic() + START_S * 2, ""
        while "models run on" not in err and time.monotonic() < deadline and child.poll() is None:
            err += child.stderr.readline()
        assert "models run on CPU (GPUs hidden)" in err, err
    finally:
        child.terminate()
        child.wait(timeout=30)
