"""The fault-injection harness: a fleet of real worker processes on a tiny model, a RabbitMQ vhost of its own and an
nx-27017 server it can kill and restart on the same port and data, plus the store checks and the report table.

Run as ``python -m tests.support.chaos_fleet worker ...`` it is ``labelling worker ...`` with one test-only hook: the LM step
raises on any prompt that holds :data:`POISON` while the file named by ``$LABELLING_CHAOS_POISON_FILE`` exists, so a
test can plant a poison turn in a corpus and later cure it by deleting the file. Nothing in the package knows of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from labelling.corpus import cut_into_splits
from labelling.fleet import mongo_server, store
from tests.support.fleet_services import REPO, Service, free_port, until

POISON = "chaos-poison-turn"
POISON_FILE_ENV = "LABELLING_CHAOS_POISON_FILE"
LABELLING = Path(sys.executable).with_name("labelling")
REPORT = REPO / ".state" / "chaos" / "report.md"
COLUMNS = ("scenario", "fault", "expected", "labelled", "duplicates", "lost", "wall s", "recovery s")


# --- the worker's poison hook --------------------------------------------------------------------------------------


def install_poison() -> None:
    """Make ``LanguageModel.sample`` raise on a prompt holding POISON while the poison file exists (before the fork,
    so every pool process inherits it)."""
    from labelling.engine.lm import LanguageModel

    original = LanguageModel.sample
    flag = os.environ.get(POISON_FILE_ENV)

    def sample(self, prompts, params):
        if flag and Path(flag).exists() and any(POISON in p.body for p in prompts):
            raise RuntimeError(f"chaos: the model step fails on the turn that says {POISON}")
        return original(self, prompts, params)

    LanguageModel.sample = sample


def poisoned(dialogue: list, turn: int) -> list:
    """``dialogue`` with POISON appended to the last user utterance of turn ``turn`` (only that turn's record)."""
    hit = dialogue[turn]
    utterances = [*hit.user_utterances[:-1], f"{hit.user_utterances[-1]} {POISON}"]
    return [replace(t, user_utterances=utterances) if t is hit else t for t in dialogue]


# --- outcomes and the table ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One scenario's row: turns expected, labelled, written twice and missing, wall time and recovery time."""

    scenario: str
    fault: str
    expected: int
    labelled: int
    duplicates: int
    lost: int
    wall_s: float
    recovery_s: float | None

    def cells(self) -> list[str]:
        """The row as table cells."""
        recovery = "-" if self.recovery_s is None else f"{self.recovery_s:.1f}"
        counts = [str(n) for n in (self.expected, self.labelled, self.duplicates, self.lost)]
        return [self.scenario, self.fault, *counts, f"{self.wall_s:.1f}", recovery]


OUTCOMES: list[Outcome] = []


def table(outcomes: Sequence[Outcome]) -> str:
    """The outcomes as a Markdown table."""
    rows = [list(COLUMNS), ["---"] * len(COLUMNS), *(o.cells() for o in outcomes)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def write_report(outcomes: Sequence[Outcome]) -> Path:
    """Write the table to .state/chaos/report.md; returns the path."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(f"# Fault injection ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})\n\n{table(outcomes)}\n")
    return REPORT


# --- store checks ---------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the store holds for a group against what its corpus asked for."""

    expected: int
    labelled: int
    duplicates: int
    lost: int


def tally(group: str) -> Tally:
    """Count the group's labels: expected turns, labelled ones, duplicates (a label written by more than one run or
    wave, a key stored twice, more than one manifest entry per split) and lost turns (expected but unlabelled)."""
    corpus = store.group_run(group).corpus
    expected = {t.key for split in store.corpus_splits(corpus) for t in store.load_turns(corpus, split)}
    docs = list(store.LabelDoc._get_collection().find({"group_id": group}, {"dialogue_id": 1, "turn_id": 1, "written_by": 1}))
    keys = [(d["dialogue_id"], d["turn_id"]) for d in docs]
    manifest = [e["split"] for e in store.manifest_entries(group)]
    rewritten = sum(len(d.get("written_by") or []) > 1 for d in docs)
    duplicates = rewritten + len(keys) - len(set(keys)) + len(manifest) - len(set(manifest))
    return Tally(len(expected), len(expected & set(keys)), duplicates, len(expected - set(keys)))


def written_by(group: str, split: str) -> dict[tuple[str, int], tuple[list[str], int]]:
    """Each label of a partition: who wrote it (RUN/WAVE entries) and its position in the labelling order."""
    docs = store.LabelDoc._get_collection().find({"group_id": group, "split": split})
    return {(d["dialogue_id"], d["turn_id"]): (list(d.get("written_by") or []), d["seq"]) for d in docs}


def first_label_after(group: str, since: float, split: str | None = None) -> float | None:
    """When the group (or one split) got its first label written after ``since``; None when none was."""
    query: dict = {"group_id": group, "written_at": {"$gt": since}}
    if split:
        query["split"] = split
    found = [d["written_at"] for d in store.LabelDoc._get_collection().find(query, {"written_at": 1})]
    return min(found, default=None)


def task_results(group: str) -> list[tuple[str, dict]]:
    """(task id, result) of every finished fleet task whose result names ``group`` (label_partition, dispatch)."""
    import mongoengine

    out = []
    for doc in mongoengine.get_db()["celery_taskmeta"].find({}, {"result": 1}):
        result = doc.get("result")
        if isinstance(result, str):
            try:
                result = json.loads(result)
            except ValueError:
                continue
        if isinstance(result, dict) and result.get("group") == group:
            out.append((doc["_id"], result))
    return out


# --- the fleet -------------------------------------------------------------------------------------------------------


def ingest(corpus: str, dialogues: Sequence[list], size: int, schema) -> list[str]:
    """Store ``dialogues`` as ``corpus`` in partitions of ``size``; returns the split names (the first seeds the run)."""
    splits = cut_into_splits(list(dialogues), size)
    store.ingest_corpus(corpus, splits, schema)
    return list(splits)


class ChaosFleet:
    """The services one chaos run uses, and the faults it can inject into them."""

    def __init__(self, root: Path, broker: str, env: dict, tag: str):
        self.root, self.tag = root, tag
        self.port, self.data = free_port(), root / "db"
        self.data.mkdir(parents=True, exist_ok=True)
        self.mongo = self._start_mongo()
        self.uri = f"mongodb://127.0.0.1:{self.port}"
        self.env = {**env, "LABELLING_BROKER_URL": broker, "LABELLING_MONGODB_URI": self.uri}
        self.workers: dict[str, Service] = {}
        until(lambda: mongo_server.ping(self.uri), 30, "nx-27017 to answer", [self.mongo], poll_s=0.2)

    @property
    def services(self) -> list[Service]:
        """Every service, for failure messages."""
        return [self.mongo, *self.workers.values()]

    # --- the MongoDB-wire server ------------------------------------------------------------------------------

    def _start_mongo(self) -> Service:
        command = [shutil.which("nx-27017") or str(LABELLING.with_name("nx-27017")), "--host", "127.0.0.1"]
        command += ["-p", str(self.port), "--data-dir", str(self.data), "--log-file", os.devnull]
        return Service(command, dict(os.environ), self.root / "nx-27017.log")

    def kill_mongo(self) -> None:
        """SIGKILL the server: it gets no chance to finish a write or close a connection."""
        self.mongo.kill()

    def restart_mongo(self) -> None:
        """Start the server again on the same port and data folder, and wait until it answers."""
        self.mongo = self.mongo.restart()
        until(lambda: mongo_server.ping(self.uri), 30, "nx-27017 to answer again", [self.mongo], poll_s=0.2)

    # --- workers ---------------------------------------------------------------------------------------------

    def start_worker(self, name: str, **env: str) -> Service:
        """Start ``labelling worker`` (with the poison hook) as node NAME-TAG@host, one pool process, one torch thread."""
        command = [sys.executable, "-m", "tests.support.chaos_fleet", "worker", "--name", f"{name}-{self.tag}@%h"]
        command += ["--threads", "1", "--loglevel", "INFO"]
        self.workers[name] = Service(command, {**self.env, **env}, self.root / f"{name}.log")
        return self.workers[name]

    def wait_ready(self, *names: str, timeout_s: float = 180) -> None:
        """Wait until each named worker has logged that it is ready to consume."""

        def ready() -> bool:
            return all(" ready." in self.workers[n].output() for n in names)

        until(ready, timeout_s, f"workers {', '.join(names)} to be ready", self.services, poll_s=0.5)

    def worker_of(self, node: str | None) -> str:
        """The worker name of a node name recorded on a partition (``NAME-TAG@host``)."""
        assert node, "the partition records no worker"
        return node.split("@")[0].removesuffix(f"-{self.tag}")

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker and its pool processes; its log stays, for a restart to append to."""
        self.workers[name].kill()

    def restart_worker(self, name: str) -> Service:
        """Start a killed worker again under the same name."""
        self.workers[name] = self.workers[name].restart()
        return self.workers[name]

    def stop(self) -> None:
        """Stop every worker, then the server."""
        for worker in self.workers.values():
            worker.stop()
        self.mongo.stop()

    # --- commands and waiting ---------------------------------------------------------------------------------

    def labelling(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """Run a ``labelling`` command against the fleet's broker and store."""
        return subprocess.run(
            [str(LABELLING), *args], env={**self.env, **env}, cwd=REPO, capture_output=True, text=True, timeout=300
        )

    def launch(self, *args: str, **env: str) -> subprocess.Popen:
        """Start a ``labelling`` command without waiting for it."""
        command = [str(LABELLING), *args]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        return subprocess.Popen(command, env={**self.env, **env}, cwd=REPO, **pipes)

    def submit(self, group: str, corpus: str, job: Path, **env: str) -> str:
        """``labelling run`` for ``group`` (no --wait: the test watches the store itself); returns its stdout."""
        done = self.labelling("run", "--corpus", corpus, "--group", group, "--config", str(job), **env)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        assert " submitted: group " in done.stdout
        return done.stdout

    def wait_for(self, condition, timeout_s: float, what: str, poll_s: float = 0.2):
        """Poll the store until ``condition()`` is true (a store error counts as not yet); fail with the logs."""

        def safe():
            try:
                return condition()
            except store.StoreError:
                return None

        return until(safe, timeout_s, what, self.services, poll_s=poll_s)

    def running(self, group: str, split: str, min_done: int = 1) -> store.Partition | None:
        """The partition while it runs with at least ``min_done`` turns checkpointed and some left; else None."""
        part = store.partition(group, split)
        return part if part.status == store.RUNNING and min_done <= part.turns_done < part.turns_total else None

    def wait_done(self, group: str, timeout_s: float = 150) -> float:
        """Wait until every partition of ``group`` is done; returns when that was seen."""
        self.wait_for(lambda: all(p.status == store.DONE for p in store.partitions(group)), timeout_s, f"group {group} done")
        return time.time()


def main() -> None:
    """``labelling`` with the poison hook installed: ``python -m tests.support.chaos_fleet worker ...``."""
    install_poison()
    from cli.app import main as labelling_main

    sys.argv = [str(LABELLING), *sys.argv[1:]]
    labelling_main()


if __name__ == "__main__":
    main()
