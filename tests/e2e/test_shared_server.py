"""Many commands, one state folder: the embedded nx-27017 server is shared by every command that uses the folder, never
stopped under one of them, started once when several start together, and gone (with its keeper) once the last has
left. Everything runs through the installed ``labelling`` console script in fresh processes, on the real nx-27017 server,
with no LABELLING_MONGODB_URI: each command finds or starts the embedded server itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from labelling.fleet import mongo_server, store
from labelling.fleet.corpus_claims import CorpusClaimDoc
from labelling.fleet.groups import load_jobs
from tests.cli.test_cli_contract import LABELLING, assert_one_line_error, environment
from tests.support.corpus_files import DEV_ZIP

IDLE_S = 2  # LABELLING_SERVER_IDLE_S for these tests: the server stops this long after its last command
DEV_TURNS = 7365


def env_for(state: Path, **extra: str) -> dict[str, str]:
    """The contract tests' environment, without a MongoDB URI (so the embedded server is used) and with ``state``."""
    env = {k: v for k, v in environment().items() if k != "LABELLING_MONGODB_URI"}
    ours = {"LABELLING_STATE_DIR": str(state), "LABELLING_SERVER_IDLE_S": str(IDLE_S), "LABELLING_TORCH_THREADS": "1"}
    return {**env, **ours, **extra}


class Command:
    """One ``labelling`` command in the background, its output in files (a watch writes many frames)."""

    def __init__(self, name: str, args: list, env: dict, logs: Path):
        self.name = name
        self.out, self.err = logs / f"{name}.out", logs / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen([str(LABELLING), *map(str, args)], env=env, stdout=out, stderr=err)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def describe(self) -> str:
        out, err = self.out.read_text()[-2000:], self.err.read_text()[-3000:]
        return f"{self.name} rc={self.process.returncode}\nstdout: {out}\nstderr: {err}"


def server_processes(state: Path) -> tuple[list[int], list[int]]:
    """(keeper pids, nx-27017 pids) serving ``state``, from /proc: what is really running, whatever the files say."""
    folder = str(mongo_server.server_folder(state))
    keepers, servers = [], []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            zombie = (entry / "stat").read_text().split(")")[-1].split()[0] == "Z"
        except (OSError, IndexError):
            continue
        if zombie or folder not in cmdline:
            continue
        if mongo_server.KEEPER_MODULE in cmdline:
            keepers.append(int(entry.name))
        elif "nx-27017" in cmdline or "nx_27017" in cmdline:
            servers.append(int(entry.name))
    return keepers, servers


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


class Watcher:
    """Samples the state folder's server processes while commands run: the most seen at once."""

    def __init__(self, state: Path):
        self.state, self.most_keepers, self.most_servers, self.samples = state, 0, 0, 0

    def sample(self) -> None:
        keepers, servers = server_processes(self.state)
        self.most_keepers, self.most_servers = max(self.most_keepers, len(keepers)), max(self.most_servers, len(servers))
        self.samples += 1

    def until_done(self, commands: list[Command], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(c.process.poll() is None for c in commands):
            self.sample()
            if time.monotonic() > deadline:
                for c in commands:
                    c.process.kill()
                pytest.fail("commands still running: " + "; ".join(c.name for c in commands if c.process.poll() is None))
            time.sleep(0.2)


def small_corpus(path: Path, count: int = 2) -> Path:
    """The ``count`` shortest dialogues of the bundled dev set as a MultiWOZ 2.1 JSON file (a group labels it quickly)."""
    with zipfile.ZipFile(DEV_ZIP) as z:
        data = json.loads(z.read("val.json"))
    chosen = sorted(data, key=lambda k: (len(data[k]["log"]), k))[:count]
    path.write_text(json.dumps({k: data[k] for k in chosen}))
    return path


def stored(state: Path, read):
    """``read()`` over a store connection to the state folder's server, held only while it reads."""
    with mongo_server.ensure_server(state) as server:
        store.connect(server.uri)
        try:
            return read()
        finally:
            store.disconnect()


def corpus_turns(state: Path, name: str) -> tuple[int, bool]:
    """(stored turns, complete?) of a corpus."""
    rows = {r["corpus"]: r for r in stored(state, store.corpus_overview)}
    row = rows.get(name)
    return (row["turns"], row["complete"]) if row else (0, False)


def group_states(state: Path, group: str) -> set[str]:
    return stored(state, lambda: {str(p.status) for p in store.partitions(group)})


def no_server_left(state: Path) -> None:
    wait_for(lambda: server_processes(state) == ([], []), IDLE_S + 20, "the server and its keeper to stop once idle")
    assert not (mongo_server.server_folder(state) / mongo_server.PORT_FILE).exists()


@pytest.fixture
def project(tmp_path):
    """A state folder holding a two-dialogue corpus and three groups over it on a tiny model, with no server running."""
    from tests.support.fleet_helpers import save_tiny_model, write_job
    from tests.support.partition_worker import tiny_job

    state = tmp_path / "state"
    job = write_job(tiny_job(), save_tiny_model(tmp_path / "tiny-llama"), tmp_path / "job.json")
    done = subprocess.run(
        [str(LABELLING), "ingest", small_corpus(tmp_path / "small.json"), "--corpus", "small", "--split-size", "1"],
        env=env_for(state),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    config, _ = load_jobs([job], None)  # the config `run --config job.json` computes, so the run resumes these groups
    stored(state, lambda: [store.create_group(g, "small", config) for g in ("g1", "g2", "g3")])
    no_server_left(state)
    yield state, job
    mongo_server.stop_server(state, force=True)  # only if a failed assertion left one


@pytest.mark.integration
def test_four_commands_share_one_server_and_a_killed_one_harms_no_other(project, tmp_path):
    state, job = project
    env = env_for(state, LABELLING_CLAIM_LEASE_S="6")  # a killed run's partition is taken over 6 s after its last beat
    logs = tmp_path / "logs"
    logs.mkdir()

    # 1. Four commands at the same moment in a folder with no server running: one server, every command exits 0.
    watcher = Watcher(state)
    four = [
        Command("ingest-a", ["ingest", DEV_ZIP, "--corpus", "a"], env, logs),
        Command("ingest-b", ["ingest", DEV_ZIP, "--corpus", "b"], env, logs),
        Command("run-g1", ["run", "--local", "--corpus", "small", "--group", "g1", "--config", job], env, logs),
        Command("watch-g1", ["status", "--group", "g1", "--watch", "--interval", "0.5"], env, logs),
    ]
    watcher.until_done(four, timeout_s=900)
    for command in four:
        assert command.process.returncode == 0, command.describe()
    assert watcher.most_servers == 1 and watcher.most_keepers == 1, (watcher.most_servers, watcher.most_keepers)
    assert "done" in (logs / "watch-g1.out").read_text()
    assert corpus_turns(state, "a") == (DEV_TURNS, True) and corpus_turns(state, "b") == (DEV_TURNS, True)
    assert group_states(state, "g1") == {"done"}
    no_server_left(state)  # the last command out: the keeper stopped the server IDLE_S later

    # 2. kill -9 of the command that started the server (a run, mid-partition) and of an ingest mid-write: the others
    # finish as if nothing happened, and the killed ingest's advice, the same command again, works at once.
    watcher = Watcher(state)
    starter = Command("run-g2", ["run", "--local", "--corpus", "small", "--group", "g2", "--config", job], env, logs)
    wait_for(lambda: mongo_server.server_state(state).uri is not None, 120, "the first command to start the server")
    uri = mongo_server.server_state(state).uri
    others = [
        Command("ingest-d", ["ingest", DEV_ZIP, "--corpus", "d"], env, logs),
        Command("run-g3", ["run", "--local", "--corpus", "small", "--group", "g3", "--config", job], env, logs),
    ]
    victim = Command("ingest-e", ["ingest", DEV_ZIP, "--corpus", "e"], env, logs)
    from pymongo import MongoClient

    client = MongoClient(uri, serverSelectionTimeoutMS=5000)  # a plain client: it holds no lease
    database = client[store.DEFAULT_DATABASE]
    try:

        def writing(corpus: str) -> bool:
            watcher.sample()
            return database[store.TurnDoc._meta["collection"]].find_one({"corpus": corpus}, {"_id": 1}) is not None

        def labelling(group: str) -> bool:
            watcher.sample()
            return database[store.Partition._meta["collection"]].find_one({"group_id": group, "status": "running"}) is not None

        wait_for(lambda: writing("e") and labelling("g2"), 300, "ingest e to write turns and run g2 to label")
        assert starter.process.poll() is None and victim.process.poll() is None, starter.describe() + victim.describe()
        assert database[CorpusClaimDoc._meta["collection"]].find_one({"_id": "e"}) is not None  # the ingest's claim
        for command in (starter, victim):
            os.kill(command.process.pid, signal.SIGKILL)
        assert starter.wait(30) == victim.wait(30) == -signal.SIGKILL
    finally:
        client.close()
    watcher.until_done(others, timeout_s=900)
    for command in others:
        assert command.process.returncode == 0, command.describe()
    assert corpus_turns(state, "d") == (DEV_TURNS, True) and group_states(state, "g3") == {"done"}
    assert watcher.most_servers == 1 and watcher.most_keepers == 1, (watcher.most_servers, watcher.most_keepers)
    assert corpus_turns(state, "e")[1] is False  # killed mid-write: not a corpus (yet)

    again = Command("ingest-e-again", ["ingest", DEV_ZIP, "--corpus", "e"], env, logs)
    assert again.wait(300) == 0, again.describe()  # no wait for the killed ingest's claim: its process is gone
    assert corpus_turns(state, "e") == (DEV_TURNS, True)
    rerun = Command("run-g2-again", ["run", "--local", "--corpus", "small", "--group", "g2", "--config", job], env, logs)
    assert rerun.wait(600) == 0, rerun.describe()  # the killed run's partition is taken over once its lease expired
    assert group_states(state, "g2") == {"done"}
    no_server_left(state)


@pytest.mark.integration
def test_corpus_rm_during_an_ingest_is_refused_in_one_line_and_the_ingest_completes(tmp_path):
    state = tmp_path / "state"
    env = env_for(state)
    logs = tmp_path / "logs"
    logs.mkdir()
    ingest = Command("ingest", ["ingest", DEV_ZIP, "--corpus", "race"], env, logs)
    refusals = 0
    try:
        while ingest.process.poll() is None and not refusals:  # a removal once the ingest has ended would be right
            done = subprocess.run([str(LABELLING), "corpus", "rm", "race"], env=env, capture_output=True, text=True, timeout=120)
            if done.returncode == 2 and "is being ingested right now" in done.stderr:
                assert_one_line_error(done, 2, "corpus 'race' is being ingested right now", "wait for it to end")
                refusals += 1
            else:  # before the ingest claimed it: nothing to remove yet
                assert_one_line_error(done, 2, "unknown corpus 'race'")
    finally:
        ingest.wait(600)
    assert ingest.process.returncode == 0, ingest.describe()
    assert refusals >= 1, "no corpus rm ran while the ingest held the corpus"
    assert f"corpus race ({DEV_TURNS:,} turns)" in " ".join(ingest.out.read_text().split())
    assert corpus_turns(state, "race") == (DEV_TURNS, True)
    done = subprocess.run([str(LABELLING), "corpus", "rm", "race"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"corpus race removed ({DEV_TURNS:,} turns)" in done.stdout, done.stderr
    no_server_left(state)


@pytest.mark.integration
def test_server_status_and_stop_and_stale_files(tmp_path):
    state = tmp_path / "state"
    env = env_for(state, LABELLING_SERVER_IDLE_S="60")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(LABELLING), *args], env=env, capture_output=True, text=True, timeout=120)

    assert "no embedded server runs for" in cli("server", "status").stdout
    folder = mongo_server.server_folder(state)
    folder.mkdir(parents=True)
    squatter = subprocess.Popen(["sleep", "60"])  # a live process that is not ours, named by stale pid files
    try:
        for name in (mongo_server.KEEPER_PID, mongo_server.SERVER_PID):
            (folder / name).write_text(str(squatter.pid))
        (folder / mongo_server.PORT_FILE).write_text(str(mongo_server.free_port()))
        assert cli("corpus", "ls").returncode == 0  # the stale files are replaced by a server of its own
        assert squatter.poll() is None  # and the unrelated process was left alone
    finally:
        squatter.kill()
        squatter.wait()
    shown = " ".join(cli("server", "status").stdout.split())
    assert "embedded server for" in shown and "idle: it stops 60 s after its last command" in shown, shown
    keepers, servers = server_processes(state)
    assert len(keepers) == len(servers) == 1

    with mongo_server.ensure_server(state):  # this test process now uses it, as a running command would
        shown = " ".join(cli("server", "status").stdout.split())
        assert f"in use by 1 command(s) (pids {os.getpid()})" in shown, shown
        assert_one_line_error(cli("server", "stop"), 2, "is in use by 1 command(s)", f"pids {os.getpid()}", "--force")
        assert server_processes(state) == (keepers, servers)
    done = cli("server", "stop")
    assert done.returncode == 0 and "stopped the embedded server" in done.stdout, done.stderr
    assert server_processes(state) == ([], [])
    assert sorted(p.name for p in folder.iterdir()) == ["data", "lease", "nx-27017.log", "start.lock"]
    assert "no embedded server runs" in cli("server", "stop").stdout
