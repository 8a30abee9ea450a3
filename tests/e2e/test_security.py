"""Security: a planted password never reaches output, logs or files; services listen on loopback only; Flower wants
credentials; and model text is parsed, never run.

Flower refusing to start without credentials is in test_fleet.py, and its 401 on a live fleet in
test_fleet_integration.py; here Flower is started on its own (integration marker: it needs RabbitMQ).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from cli import worker
from cli.app import main
from labelling import settings
from labelling.errors import LabellingError
from labelling.fleet import mongo_server
from labelling.method.canonical import Canonicaliser
from tests.support.cli_helpers import run_cli
from tests.support.corpus_files import MWZ22
from tests.support.fleet_helpers import LABELLING, save_tiny_model, write_job
from tests.support.fleet_services import Service, free_port, rabbitmqctl

SECRET = f"Pw{uuid.uuid4().hex[:12]}"  # distinctive and per run, so a hit can only come from this module's settings
LOOPBACK = "127.0.0.1"


# --- passwords ---------------------------------------------------------------------------------------------------


def _files_holding(root: Path, needle: str, skip: Path | None = None) -> list[str]:
    """Every file under ``root`` (not under ``skip``) whose bytes contain ``needle``: datasets, cards, JSONL, logs."""
    hits = []
    for path in root.rglob("*"):
        if skip is not None and path.is_relative_to(skip):
            continue
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path))
    return hits


@pytest.fixture
def planted(monkeypatch, connected):
    """Every secret setting holds SECRET: broker, result backend, Flower's auth and the hub token. The store is the
    session's nx-27017, which takes no credentials, so its own password is planted in the failing commands below."""
    monkeypatch.setenv("LABELLING_BROKER_URL", f"amqp://guest:{SECRET}@127.0.0.1:5672//")
    monkeypatch.setenv("LABELLING_RESULT_BACKEND", f"mongodb://results:{SECRET}@127.0.0.1:1/results")
    monkeypatch.setenv("LABELLING_FLOWER_USER", "admin")
    monkeypatch.setenv("LABELLING_FLOWER_PASSWORD", SECRET)
    monkeypatch.setenv("FLOWER_BASIC_AUTH", f"admin:{SECRET}")
    monkeypatch.setenv("HF_TOKEN", f"hf_{SECRET}")
    return monkeypatch


def test_a_planted_password_appears_in_no_output_log_or_file(planted, capsys, caplog, tmp_path, fast_job):
    """The whole local workflow (ingest, label-partition, run, status, evaluate, export with its card) and the commands
    that fail on a refused password, with every secret setting planted; then every byte they printed, logged or wrote."""
    caplog.set_level(logging.DEBUG)  # what --debug would show, from every library
    (tmp_path / "inputs").mkdir()
    job = write_job(fast_job, save_tiny_model(tmp_path / "tiny"), tmp_path / "inputs" / "job.json")
    data = json.loads(job.read_text())
    data["manifest"]["manifest_path"] = f"mongodb://me:{SECRET}@db.example/labels"  # a reference key: warned and dropped
    job.write_text(json.dumps(data))
    corpus, group = f"sec-{SECRET[-6:]}", f"sec-{SECRET[-6:]}"
    outputs: list[str] = []

    def cli(*args, expect: int = 0) -> None:
        code, out, err = run_cli(planted, capsys, *args)
        assert code == expect, f"{args}: {err}"
        outputs.append(out + err)

    source = _short_corpus(tmp_path / "corpus", user_turns=2)
    dataset = tmp_path / "dataset"
    cli("ingest", source, "--out", dataset, "--corpus", corpus, "--split-size", "1")
    cli("label-partition", "--dataset", dataset, "--split", "train_0_1", "--out", tmp_path / "l.jsonl", "--config", job)
    cli("run", "--corpus", corpus, "--group", group, "--config", job, "--local")
    cli("--debug", "status", "--group", group)
    cli("evaluate", "--group", group, "--json")
    cli("export", "--group", group, "--out", tmp_path / "export")
    assert (tmp_path / "export" / "README.md").is_file()

    # Commands that fail on a password the service refuses, or cannot reach it: the messages name the masked URI.
    cli("run", "--corpus", corpus, "--group", f"{group}-fleet", expect=2)  # RabbitMQ refuses guest:SECRET
    cli("worker", expect=2)
    planted.setenv(settings.MONGODB_URI.name, f"mongodb://labeller:{SECRET}@{_store_host()}/labels")  # refused: no users
    cli("status", "--group", group, expect=2)
    cli("ingest", source, "--corpus", corpus, expect=2)
    planted.setattr(sys, "argv", ["labelling", "--debug", "evaluate", "--group", group])
    with pytest.raises(LabellingError) as caught:  # --debug: the traceback, with its chained causes, instead of the line
        main()
    outputs.append("".join(traceback.format_exception(caught.value)) + capsys.readouterr().err)
    planted.setenv(settings.MONGODB_URI.name, f"mongodb://labeller:{SECRET}@127.0.0.1:{free_port()}/labels")
    planted.setenv("LABELLING_MONGODB_TIMEOUT_MS", "500")
    cli("status", "--group", group, expect=2)
    assert any("labeller:***@" in text for text in outputs)  # the failures did name the store, masked

    assert not [text for text in outputs if SECRET in text]
    assert SECRET not in caplog.text
    assert _files_holding(tmp_path / "inputs", SECRET)  # the one file that should hold it: the job config we wrote
    assert not _files_holding(tmp_path, SECRET, skip=tmp_path / "inputs")


def _short_corpus(folder: Path, user_turns: int) -> Path:
    """The 2.2 fixture's first file with each dialogue cut to ``user_turns`` exchanges: the whole path, in seconds."""
    dialogues = json.loads((MWZ22 / "dialogues_001.json").read_text())
    for dialogue in dialogues:
        dialogue["turns"] = dialogue["turns"][: 2 * user_turns]
    folder.mkdir()
    (folder / "dialogues_001.json").write_text(json.dumps(dialogues))
    return folder


def _store_host() -> str:
    """host:port of the session's nx-27017, from the URI the fixture exported."""
    return os.environ[settings.MONGODB_URI.name].partition("://")[2].partition("/")[0]


def test_a_uri_given_where_a_path_belongs_is_echoed_with_its_password_masked(monkeypatch, capsys, tmp_path):
    """A user who passes the store's URI as the corpus, or a job file by URL, sees their input in the error, masked."""
    code, _, err = run_cli(monkeypatch, capsys, "ingest", f"mongodb://labeller:{SECRET}@db.example:27017/labels")
    assert code == 2 and "labeller:***@db.example:27017/labels: no such file or folder" in err and SECRET not in err
    job = f"https://me:{SECRET}@example.org/job.json"
    code, _, err = run_cli(
        monkeypatch, capsys, "label-partition", "--dataset", tmp_path, "--split", "s", "--out", "o", "--config", job
    )
    assert code == 2 and "me:***@example.org/job.json: cannot read job config" in err and SECRET not in err


def test_the_embedded_servers_log_holds_no_password(tmp_path, capsys, monkeypatch):
    """A client that offers a password to nx-27017 is refused; the server's own log must not record what it was sent."""
    with mongo_server.ensure_server(tmp_path) as server:
        host = server.uri.partition("://")[2]
        monkeypatch.setenv(settings.MONGODB_URI.name, f"mongodb://labeller:{SECRET}@{host}/labels")
        code, out, err = run_cli(monkeypatch, capsys, "status", "--group", "g")
        assert code == 2 and SECRET not in out + err
    assert list(tmp_path.rglob("nx-27017.log")) and not _files_holding(tmp_path, SECRET)


# --- loopback ---------------------------------------------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local addresses of sockets listening on ``port`` (IPv4 and IPv6), read from /proc/net."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(_address(address, width))
    return found


def _address(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return ".".join(str(b) for b in reversed(raw))  # little-endian IPv4
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    return ":".join(b"".join(words)[i : i + 2].hex() for i in range(0, 16, 2))


def test_the_embedded_mongodb_server_listens_on_loopback_only(tmp_path):
    with mongo_server.ensure_server(tmp_path) as server:
        port = int(server.uri.rpartition(":")[2])
        assert listening_addresses(port) == {LOOPBACK}


def test_flower_defaults_to_loopback():
    address = inspect.signature(worker.flower).parameters["address"].default  # typer's OptionInfo
    assert address.default == LOOPBACK and "loopback" in address.help


@pytest.mark.integration
def test_flower_listens_on_loopback_and_answers_only_with_credentials(tmp_path):
    """Flower as `labelling flower` starts it, against the real RabbitMQ, with a planted password."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "LABELLING_"))}
    env.update(LABELLING_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//", LABELLING_FLOWER_USER="admin")
    env.update(LABELLING_FLOWER_PASSWORD=SECRET, LABELLING_STATE_DIR=str(tmp_path / "state"))
    log = tmp_path / "flower.log"
    with log.open("wb") as out:
        flower = subprocess.Popen([str(LABELLING), "flower", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not listening_addresses(port) and time.monotonic() < deadline and flower.poll() is None:
            time.sleep(0.5)
        assert listening_addresses(port) == {LOOPBACK}, log.read_text()
        assert _status(f"http://127.0.0.1:{port}/api/workers") == 401
        assert _status(f"http://127.0.0.1:{port}/api/workers", ("admin", "wrong")) == 401
        assert _status(f"http://127.0.0.1:{port}/api/workers", ("admin", SECRET)) == 200
    finally:
        flower.terminate()
        flower.wait(30)
    assert SECRET not in log.read_text()


def _status(url: str, auth: tuple[str, str] | None = None) -> int:
    import base64

    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


# --- model text is data ------------------------------------------------------------------------------------------------


def _payloads(marker: Path) -> list[str]:
    """Completions that would touch ``marker`` (or hang, or exhaust memory) if any part of them were evaluated."""
    touch = f"__import__('os').system('touch {marker}')"
    return [
        touch,
        f"find_hotel(area={touch})]",
        f'find_hotel(area=eval("{touch}"))]',
        f"find_hotel(area=exec({touch!r}))]",
        f'find_hotel(area=f"{{{touch}}}")]',
        f"find_hotel(area=(lambda: {touch})())]",
        f"find_hotel(area=open('{marker}', 'w').name)]",
        f"find_hotel(area=[x for x in ().__class__.__base__.__subclasses__() if x.__name__ == 'Popen'][0]('touch {marker}'))]",
        f"find_hotel(area=getattr(__builtins__, 'exec')({touch!r}))]",
        f"find_hotel(area=(t := {touch}))]",
        "find_hotel(area='a' * 10 ** 10)]",  # only a real evaluation would build this string
        "find_hotel(stars=10 ** 10 ** 10)]",
        "find_hotel(area=" + "-" * 5000 + "1)]",  # the parser recurses past its limit
        "find_hotel(area=" + "not " * 5000 + "1)]",
        "find_hotel(area=" + "[" * 1000 + ")]",
        "find_hotel(area=b'east', stars={4}, name={'x': 1}, type=1j)]",  # literals, but no label value is bytes or a set
        f"no_change()]\n{touch}\n",
    ]


def _act_payload(text: str) -> str:
    return text.replace("find_hotel(", "Inform(entity=Hotel(").replace(")]", "))]")


def test_model_text_is_parsed_never_executed(schema, tmp_path):
    marker = tmp_path / "pwned"
    canon, prior = Canonicaliser(schema), {"hotel": {"area": "east", "stars": "4"}}
    for payload in _payloads(marker):
        dst = canon.dst(payload, prior, ["a hotel in the east please"])
        assert dst.state == prior and dst.delta == {}, payload[:80]  # nothing evaluated can change the state
        assert dst.failed or dst.errors or payload.startswith("no_change"), payload[:80]
        acts = canon.acts(_act_payload(payload))
        assert not acts.acts or acts.errors, payload[:80]  # whatever survives is a plain act, and the rest is reported
        assert not any(word in acts.text for word in ("import", "touch", "open", "eval", "exec")), acts.text
    assert not marker.exists()


@pytest.mark.integration
def test_a_fleet_run_with_a_planted_broker_password_leaks_it_nowhere(tmp_path, fast_job):
    """A RabbitMQ user whose password is SECRET, a worker logging at DEBUG, `run --wait`, status and export: the
    password is in the environment of every process and in none of their output, logs or files."""
    user = vhost = f"labelling-sec-{SECRET[-8:]}"
    steps = (("add_vhost", vhost), ("add_user", user, SECRET), ("set_permissions", "-p", vhost, user, ".*", ".*", ".*"))
    if not all(_rabbitmqctl(*step) for step in steps):
        _rabbitmqctl("delete_user", user)
        _rabbitmqctl("delete_vhost", vhost)
        pytest.skip("rabbitmqctl cannot add a vhost and a user here")
    server = mongo_server.ensure_server(tmp_path / "db")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "LABELLING_"))}
    env.update(LABELLING_BROKER_URL=f"amqp://{user}:{SECRET}@127.0.0.1:5672/{vhost}", LABELLING_MONGODB_URI=server.uri)
    env.update(LABELLING_STATE_DIR=str(tmp_path / "state"), LABELLING_CHORD_POLL_S="1", HF_HUB_OFFLINE="1")
    worker = Service(
        [str(LABELLING), "worker", "--name", f"sec@{vhost}", "--threads", "1", "--loglevel", "DEBUG"],
        env,
        tmp_path / "worker.log",
    )
    job = write_job(fast_job, save_tiny_model(tmp_path / "tiny"), tmp_path / "job.json")
    source = _short_corpus(tmp_path / "corpus", user_turns=2)
    commands = [
        ["ingest", str(source), "--corpus", "sec", "--split-size", "1"],
        ["run", "--corpus", "sec", "--group", "sec", "--config", str(job), "--wait"],
        ["status", "--group", "sec"],
        ["export", "--group", "sec", "--out", str(tmp_path / "export")],
    ]
    printed = []
    try:
        for command in commands:
            done = subprocess.run([str(LABELLING), *command], env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}\n{worker.tail()}"
            printed.append(done.stdout + done.stderr)
    finally:
        worker.stop()
        server.stop()
        _rabbitmqctl("delete_user", user)
        _rabbitmqctl("delete_vhost", vhost)
    assert "Connected to amqp://" in worker.log.read_text() and "***@127.0.0.1:5672" in printed[1]
    assert not [text for text in printed if SECRET in text]
    assert not _files_holding(tmp_path, SECRET)  # the worker's log, the server's log, the export and its card


def _rabbitmqctl(*args: str) -> bool:
    done = rabbitmqctl(*args)
    return done is not None and done.returncode == 0
