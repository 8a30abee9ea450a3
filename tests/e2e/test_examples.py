"""Seed examples and confidences through the installed ``labelling`` command: a run started with ``--examples`` in any
format puts them in the pool (stored as ``given``, never labelled, retrieved for the first turns), a bad example
corpus is one error line with exit 2 and nothing written, a resumed run keeps the examples its group started with, and
``export --min-confidence`` keeps each dialogue up to its first doubtful label and says so in the card."""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.mongo_fixture are parameters of the tests below)
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import datasets
import pytest

from labelling.corpus import cut_into_splits, read_corpus, write_dataset
from labelling.fleet import store
from labelling.fleet.export import CONFIDENCE_COLUMN, PROVENANCE_COLUMN
from labelling.schema import Schema
from tests.cli.test_cli_contract import LABELLING, assert_one_line_error, environment, interruptible
from tests.support.corpus_files import DEV_ZIP, MWZ22
from tests.support.mongo_fixture import connected, mongo_uri, unique  # noqa: F401

pytestmark = pytest.mark.slow  # each case starts the command, which loads a (tiny) model


def labelling(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(LABELLING), *map(str, args)], env=environment(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory) -> Path:
    """A job file on the tiny random model: what every run here labels with."""
    from tests.support.fleet_helpers import save_tiny_model, write_job
    from tests.support.partition_worker import tiny_job

    folder = tmp_path_factory.mktemp("tiny")
    return write_job(tiny_job(), save_tiny_model(folder / "model"), folder / "job.json")


@pytest.fixture(scope="module")
def dev() -> list:
    """The bundled dev set's 8 shortest dialogues, shortest first: 2 to label, the others as examples."""
    dialogues = read_corpus(DEV_ZIP, Schema.load())
    return sorted(dialogues, key=lambda d: (len(d), d[0].dialogue_id))[:8]


def corpus_of(dialogues: list, size: int = 1) -> str:
    """``dialogues`` stored as a new corpus in partitions of ``size`` dialogues."""
    name = unique("corpus")
    store.ingest_corpus(name, cut_into_splits(dialogues, size), Schema.load())
    return name


def multiwoz21(dialogues: list, path: Path) -> Path:
    """``dialogues`` of the bundled dev set as a MultiWOZ 2.1 JSON file of their own."""
    ids = {d[0].dialogue_id for d in dialogues}
    with zipfile.ZipFile(DEV_ZIP) as z:
        data = json.loads(z.read("val.json"))
    named = {k: v for k, v in data.items() if (k if k.endswith(".json") else f"{k}.json") in ids}  # as the reader names them
    path.write_text(json.dumps(named))
    return path


def hf_dataset(dialogues: list, path: Path) -> Path:
    """``dialogues`` as a turn-level dataset folder with gold, as `labelling ingest --out` writes one."""
    write_dataset(cut_into_splits(dialogues, 50), path, Schema.load())
    return path


def example_sources(kind: str, dev: list, folder: Path) -> tuple[Path, set[str]]:
    """An example corpus of ``kind`` and the dialogue ids it holds."""
    if kind == "multiwoz22":
        return MWZ22, {d[0].dialogue_id for d in read_corpus(MWZ22, Schema.load())}
    chosen = dev[2:4]
    source = multiwoz21(chosen, folder / "examples.json") if kind == "multiwoz21" else hf_dataset(chosen, folder / "hf")
    return source, {d[0].dialogue_id for d in chosen}


def used_examples(group: str) -> set[str]:
    """The dialogues whose turns were put into any stored label's prompt (DST or acts) as examples."""
    labels = [s.label for p in store.partitions(group) for s in store.load_labels(group, p.split)]
    return {key[0] for lab in labels for module in (lab.dst, lab.act) for key in module.examples}


def labelled_dialogues(group: str) -> set[str]:
    return {s.label.dialogue_id for p in store.partitions(group) for s in store.load_labels(group, p.split)}


@pytest.mark.parametrize("kind", ["multiwoz21", "multiwoz22", "hf"])
def test_run_with_examples_in_each_format_stores_them_as_given_and_retrieves_them(connected, tiny_job, dev, tmp_path, kind):
    source, ids = example_sources(kind, dev, tmp_path)
    corpus, group = corpus_of(dev[:2]), unique("g")
    done = labelling("run", "--local", "--corpus", corpus, "--group", group, "--config", tiny_job, "--examples", source)
    assert done.returncode == 0, done.stderr
    stored = store.group_examples(group)
    assert {t.dialogue_id for t in stored.turns} == ids and set(stored.provenance) == {"given"}
    assert f"examples: {len(ids)} dialogues, {len(stored.turns)} turns ({len(stored.turns)} given" in done.stderr
    assert used_examples(group) & ids, "the examples were never retrieved"
    assert not labelled_dialogues(group) & ids, "an example was labelled"
    assert all(s.label.dst.confidence is not None for s in store.load_labels(group, store.partitions(group)[0].split))


def test_examples_the_corpus_also_holds_are_skipped_in_one_line(connected, tiny_job, dev, tmp_path):
    source = multiwoz21(dev[:3], tmp_path / "examples.json")  # dev[0] and dev[1] are labelled as well
    corpus, group = corpus_of(dev[:2]), unique("g")
    args = ("run", "--local", "--corpus", corpus, "--group", group, "--config", tiny_job, "--examples", source)
    done = labelling(*args, "--examples-dialogues", "1")
    assert done.returncode == 0, done.stderr
    skipped = [line for line in done.stderr.splitlines() if "examples: skipped 2 dialogues" in line]
    assert len(skipped) == 1 and dev[0][0].dialogue_id in skipped[0], done.stderr
    assert {t.dialogue_id for t in store.group_examples(group).turns} == {dev[2][0].dialogue_id}


def _no_gold(dev: list, folder: Path) -> Path:
    return hf_dataset([[t.without_gold() for t in d] for d in dev[2:3]], folder / "nogold")


def _other_services(dev: list, folder: Path) -> Path:
    copy = folder / "mwz22"
    shutil.copytree(MWZ22, copy)
    for path in copy.glob("dialogues_*.json"):
        path.write_text(path.read_text().replace('"hotel-', '"spaceship-'))
    return copy


def _empty(dev: list, folder: Path) -> Path:
    path = folder / "empty.json"
    path.write_text("{}")
    return path


BAD = {
    "without gold": (_no_gold, "turns have no gold state"),
    "another schema's services": (_other_services, "unknown slot 'spaceship-"),
    "empty": (_empty, "holds no dialogues"),
    "missing": (lambda dev, folder: folder / "nothing-here.json", "no such file or folder"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_example_corpus_is_one_error_line_exit_2_and_nothing_written(connected, tiny_job, dev, tmp_path, case):
    make, fragment = BAD[case]
    source = make(dev, tmp_path)
    corpus, group = corpus_of(dev[:1]), unique("g")
    done = labelling("run", "--local", "--corpus", corpus, "--group", group, "--config", tiny_job, "--examples", source)
    assert_one_line_error(done, 2, "error: --examples", fragment)
    assert group not in store.list_groups() and not store.group_examples(group).turns
    out = tmp_path / "labels.jsonl"
    dataset = hf_dataset(dev[:1], tmp_path / "to-label")
    args = ("label-split", "--dataset", dataset, "--split", "train_0_1", "--out", out, "--config", tiny_job)
    assert_one_line_error(labelling(*args, "--examples", source), 2, "error: --examples", fragment)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_label_split_takes_examples_from_an_earlier_export_and_export_abstains(connected, tiny_job, dev, tmp_path):
    # A group labelled with given examples, exported: its rows say which labels were given and how sure the rest are.
    examples = multiwoz21(dev[4:5], tmp_path / "given.json")
    corpus, group = corpus_of(dev[2:4]), unique("g")
    # Greedy: the random model's token log-probs differ from turn to turn (its samples, all "no change", would agree).
    job = json.loads(tiny_job.read_text())
    for module in ("dst", "act_tag"):
        job[module]["generation_cfg"]["generation_mode"] = "greedy"
    greedy = tmp_path / "greedy.json"
    greedy.write_text(json.dumps(job))
    args = ("run", "--local", "--corpus", corpus, "--group", group, "--config", greedy, "--examples", examples)
    assert labelling(*args).returncode == 0
    first = tmp_path / "first"
    assert labelling("export", "--group", group, "--out", first).returncode == 0
    rows = datasets.load_from_disk(str(first))["train"]
    given = [r for r in rows if r[PROVENANCE_COLUMN] == "given"]
    assert {r["dialogue_id"] for r in given} == {dev[4][0].dialogue_id} and all(r[CONFIDENCE_COLUMN] is None for r in given)
    own = [r for r in rows if r[PROVENANCE_COLUMN] == "self-labelled"]
    assert own and all(0.0 <= r[CONFIDENCE_COLUMN] <= 1.0 for r in own)
    card = (first / "README.md").read_text()
    assert "seed examples: 1 dialogues" in card and "`given`" in card

    # That export as examples of label-split: its rows keep their provenance.
    dataset = hf_dataset(dev[:1], tmp_path / "to-label")
    out = tmp_path / "labels.jsonl"
    split = ("label-split", "--dataset", dataset, "--split", "train_0_1", "--out", out, "--config", tiny_job)
    done = labelling(*split, "--examples", first)
    assert done.returncode == 0, done.stderr
    assert f"({len(given)} given, {len(own)} self-labelled)" in done.stderr
    labels = [json.loads(line) for line in out.read_text().splitlines()]
    pool = {r["dialogue_id"] for r in rows} | {dev[0][0].dialogue_id}  # the export, then the split's own labels
    assert {key[0] for lab in labels for key in lab["dst"]["examples"]} <= pool
    assert all(lab["dst"]["confidence"] is not None for lab in labels)

    # --min-confidence: each dialogue up to its first label below X, and the card says how many turns were kept.
    sure = sorted({r[CONFIDENCE_COLUMN] for r in own})
    assert len(sure) > 1, "every label had the same confidence: nothing to abstain on"
    threshold = sure[-1]  # only the surest labels pass: every dialogue with a less sure turn is cut there
    cut = tmp_path / "cut"
    done = labelling("export", "--group", group, "--out", cut, "--min-confidence", threshold)
    assert done.returncode == 0, done.stderr
    kept = datasets.load_from_disk(str(cut))["train"]
    expected = []
    for dialogue in dict.fromkeys(r["dialogue_id"] for r in own):
        turns = sorted((r for r in own if r["dialogue_id"] == dialogue), key=lambda r: r["turn_id"])
        doubt = next((i for i, r in enumerate(turns) if r[CONFIDENCE_COLUMN] < threshold), len(turns))
        expected += [(dialogue, r["turn_id"]) for r in turns[:doubt]]
    got = [(r["dialogue_id"], r["turn_id"]) for r in kept if r[PROVENANCE_COLUMN] == "self-labelled"]
    assert sorted(got) == sorted(expected) and len(got) < len(own)
    assert sum(r[PROVENANCE_COLUMN] == "given" for r in kept) == len(given)
    assert (
        f"min confidence {threshold:g}: kept {len(expected)} of {len(own)} self-labelled turns" in (cut / "README.md").read_text()
    )


def test_a_resumed_run_keeps_the_examples_its_group_started_with(connected, tiny_job, dev, tmp_path):
    source = multiwoz21(dev[6:7], tmp_path / "examples.json")
    corpus, group = corpus_of(dev[:6]), unique("g")
    args = ("run", "--local", "--corpus", corpus, "--group", group, "--config", tiny_job, "--examples", source)
    process = interruptible([str(LABELLING), *map(str, args)])
    deadline = time.monotonic() + 300
    while store.count_labels(group) == 0:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before a label was stored"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    before = store.group_examples(group)
    assert {t.dialogue_id for t in before.turns} == {dev[6][0].dialogue_id}
    assert any(p.status != store.DONE for p in store.partitions(group)), "nothing was left to resume"

    multiwoz21(dev[7:8], source)  # the file changes under the same name: the group keeps what it was given
    done = labelling(*args)
    assert done.returncode == 0, done.stderr
    after = store.group_examples(group)
    assert after.digest == before.digest and [t.key for t in after.turns] == [t.key for t in before.turns]
    assert dev[7][0].dialogue_id not in used_examples(group) and dev[6][0].dialogue_id in used_examples(group)


def test_demo_refuses_a_bad_example_corpus_before_writing_anything(connected, tmp_path):
    out = tmp_path / "export"
    done = labelling("demo", "--out", out, "--group", unique("demo"), "--examples", _empty([], tmp_path))
    assert_one_line_error(done, 2, "error: --examples", "holds no dialogues")
    assert "demo" not in store.list_corpora() and not out.exists()
