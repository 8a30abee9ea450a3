"""Every input has a bound, checked through the installed ``labelling`` command: job configs whose numbers, paths or
devices a run could not use are refused before anything is written to the store; corpora past the size limits (a zip
bomb, /dev/zero, an utterance too large for a MongoDB document) are refused in one line with small memory; the
``--overwrite`` marker is not trusted blindly; and the small cases of the probe report (read-only --out, leading
whitespace, an empty or 5,000-character name)."""

# ruff: noqa: F811  (pytest fixtures imported from tests.mongo_fixture are parameters of the tests below)
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from labelling import limits
from labelling.fleet import store
from labelling.fleet.launches import current_launch
from labelling.outputs import MARKER
from labelling.schema import Schema
from tests.cli.test_cli_contract import LABELLING, assert_one_line_error, environment
from tests.support.corpus_files import MWZ22
from tests.support.mongo_fixture import connected, mongo_uri, unique  # noqa: F401

MEMORY_CAP = 1 << 30  # address space for commands that must refuse their input without reading it


def labelling(*args, cap: int | None = None, cwd: Path | None = None, prefix: tuple = ()) -> subprocess.CompletedProcess:
    """The console script in a fresh process; ``cap`` limits its address space (going past it fails the command)."""

    def limit() -> None:
        if cap is not None:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    command = [*prefix, str(LABELLING), *map(str, args)]
    return subprocess.run(command, env=environment(), cwd=cwd, capture_output=True, text=True, timeout=300, preexec_fn=limit)


def _sampling(value: dict) -> dict:
    return {"dst": {"generation_cfg": {"sampling_args": value}}}


GREEDY = {"generation_cfg": {"generation_mode": "greedy"}}  # a module the default profile labels by rules names no model
BAD_CONFIGS = {
    "max_new_tokens 1e30": (_sampling({"max_new_tokens": 10**30}), "max_new_tokens: must be between 1 and 4,096"),
    "n 1e9": (_sampling({"n": 10**9}), "sampling_args.n: must be between 1 and 64, got 1,000,000,000"),
    "top_k 1e30": (_sampling({"top_k": 10**30}), "sampling_args.top_k: must be between 0 and 100,000"),
    "temperature 1e-300": (_sampling({"temperature": 1e-300}), "temperature: must be between 0.01 and 100, got 1e-300"),
    "temperature 1e300": (_sampling({"temperature": 1e300}), "temperature: must be between 0.01 and 100, got 1e+300"),
    "best_of 1e6": (_sampling({"best_of": 10**6}), "best_of: must be between 0 and 64"),
    "k_examples 1e21": ({"act_tag": {"retriever": {"k_examples": 10**21}}}, "act_tag.retriever.k_examples: must be between"),
    "max_batch_tokens 1e30": ({"max_batch_tokens": 10**30}, "max_batch_tokens: must be between 256 and 67,108,864"),
    "turns_per_batch 1e12": ({"turns_per_batch": 10**12}, "turns_per_batch: must be between 0 and 100,000"),
    "pool_refresh_batches 1e30": ({"pool_refresh_batches": 10**30}, "pool_refresh_batches: must be between 0 and 100,000"),
    "seed 1e40": ({"seed": 10**40}, "seed: must be between 0 and 4,294,967,295"),
    "split name ../../x": ({"data": {"eval_set_split_name": "../../x"}}, "eval_set_split_name: must be a split name"),
    "schema /dev/zero": ({"schema_path": "/dev/zero"}, "schema_path: /dev/zero: is not a regular file"),
    "schema missing": ({"schema_path": "/nonexistent/schema.json"}, "schema_path: /nonexistent/schema.json: no such file"),
    "schema a folder": ({"schema_path": "/"}, "schema_path: /: is a folder, not a file"),
    "model /dev/zero": ({"dst": {"model": {"model_name_or_path": "/dev/zero"}}}, "model_name_or_path: /dev/zero: is not a model"),
    "model missing": (
        {"act_tag": {"model": {"model_name_or_path": "./no/such/model"}, **GREEDY}},
        "./no/such/model: does not exist here",
    ),
    "embedder missing": ({"dst": {"retriever": {"model_name_or_path": "/no/embedder"}}}, "retriever.model_name_or_path"),
    "gguf missing": (
        {"dst": {"model": {"model_name_or_path": "/tmp/no-such.gguf"}, **GREEDY}},
        "no-such.gguf: does not exist here",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_config_a_run_could_not_use_is_refused_before_anything_is_written(connected, tmp_path, case):
    content, expected = BAD_CONFIGS[case]
    job = tmp_path / "job.json"
    job.write_text(json.dumps(content))
    corpus, group = unique("corpus"), unique("group")
    from labelling.corpus import cut_into_splits, read_corpus

    store.ingest_corpus(corpus, cut_into_splits(read_corpus(MWZ22)[:1], 1), Schema.load())
    done = labelling("run", "--local", "--corpus", corpus, "--group", group, "--config", job)
    assert_one_line_error(done, 2, "error: config key ", expected)
    assert group not in store.list_groups() and current_launch(group) is None
    assert store.Partition.objects(group_id=group).count() == 0 and store.list_corpora().count(corpus) == 1
    assert not [c for c in store.list_corpora() if c.startswith(f"{corpus}.")]  # no slice either


def test_a_device_this_machine_lacks_is_refused_before_the_group_is_written(connected, tmp_path):
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"dst": {"model": {"device": f"cuda:{count}"}}}))
    group = unique("group")
    done = labelling("run", "--local", "--corpus", "any", "--group", group, "--config", job)
    assert_one_line_error(done, 2, f"config key dst.model.device: 'cuda:{count}' is not available here")
    assert group not in store.list_groups() and current_launch(group) is None
    out = labelling("label-split", "--dataset", tmp_path, "--split", "s", "--out", tmp_path / "o.jsonl", "--config", job)
    assert_one_line_error(out, 2, "is not available here")


def test_a_dev_zero_schema_is_refused_unread_by_label_split(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"schema_path": "/dev/zero"}))
    args = ("label-split", "--dataset", tmp_path, "--split", "s", "--out", tmp_path / "o", "--config", job)
    done = labelling(*args, cap=MEMORY_CAP)
    assert_one_line_error(done, 2, "config key schema_path: /dev/zero: is not a regular file")


# --- corpora --------------------------------------------------------------------------------------------------------


def _zip_of(path: Path, head: bytes, filler: bytes, size: int, tail: bytes) -> Path:
    """A zip whose one JSON member expands to about ``size`` bytes of ``filler`` between ``head`` and ``tail``."""
    chunk = filler * (1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z, z.open("val.json", "w", force_zip64=True) as f:
        f.write(head)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(tail)
    return path


def _dialogue_file(path: Path, texts: list[str]) -> Path:
    """A MultiWOZ 2.1 file of one dialogue whose log holds ``texts`` (no gold)."""
    log = [{"text": text, "metadata": {}} for text in texts]
    path.write_text(json.dumps({"SNG99999.json": {"goal": {}, "log": log}}))
    return path


def test_a_zip_bomb_is_refused_unread_with_small_memory(tmp_path):
    size = limits.MAX_CORPUS_BYTES + (64 << 20)
    head, tail = b'{"X1.json": {"goal": {}, "log": [{"text": "', b'"}]}}'
    bomb = _zip_of(tmp_path / "bomb.zip", head, b"a", size, tail)
    assert bomb.stat().st_size < 2 << 20
    done = labelling("ingest", bomb, "--corpus", unique("bomb"), cap=MEMORY_CAP)
    expanded = size + len(head + tail)
    assert_one_line_error(done, 2, f"bomb.zip:val.json: expands to {expanded:,} bytes, over the limit of 536,870,912")


def test_a_device_as_a_corpus_is_refused(tmp_path):
    done = labelling("ingest", "/dev/zero", cap=MEMORY_CAP)
    assert_one_line_error(done, 2, "/dev/zero: is not a regular file")


def test_an_utterance_past_the_limit_is_refused_naming_it(connected, tmp_path):
    corpus = unique("huge")
    big = _dialogue_file(tmp_path / "big.json", ["a" * (limits.MAX_UTTERANCE_BYTES + 1), "ok"])
    done = labelling("ingest", big, "--corpus", corpus)
    line = assert_one_line_error(done, 2, "dialogue SNG99999.json, log entry 0: utterance of 1,048,577 bytes")
    assert "over the limit of 1,048,576 bytes" in line and "16 MB document" in line
    assert corpus not in store.list_corpora() and store.TurnDoc.objects(corpus=corpus).count() == 0
    many = ["é" * (limits.MAX_UTTERANCE_BYTES // 2 - 1)] * 9  # each under the limit, 9 MiB together
    done = labelling("ingest", _dialogue_file(tmp_path / "long.json", many), "--corpus", corpus)
    assert_one_line_error(done, 2, "dialogue SNG99999.json: its utterances add up to", "over the limit of 8,388,608 bytes")
    fine = _dialogue_file(tmp_path / "fine.json", ["a" * limits.MAX_UTTERANCE_BYTES, "ok"])
    assert labelling("ingest", fine, "--corpus", corpus).returncode == 0 and corpus in store.list_corpora()


def test_leading_whitespace_does_not_change_the_error(tmp_path):
    for blanks in (3, 100_000):
        source = tmp_path / f"ws{blanks}.json"
        source.write_text(" " * blanks + "{}")
        assert_one_line_error(labelling("ingest", source), 2, f"ws{blanks}.json: holds no dialogues")


# --- names ------------------------------------------------------------------------------------------------------------


def test_an_empty_corpus_name_and_a_5000_character_group_are_refused(connected, tmp_path):
    assert_one_line_error(labelling("ingest", MWZ22, "--corpus", ""), 2, "corpus name '' is not valid")
    long = "g" * 5000
    done = labelling("run", "--local", "--corpus", "any", "--group", long)
    line = assert_one_line_error(done, 2, "is 5,000 characters long", "use at most 100 characters")
    assert len(line) < 300 and long not in store.list_groups()
    assert_one_line_error(labelling("ingest", MWZ22, "--corpus", "c" * 101), 2, "is 101 characters long")


# --- label-split --out ------------------------------------------------------------------------------------------------


def _without_override() -> tuple:
    """As root, a prefix that drops the capabilities that let root write anywhere (so a read-only folder is one)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root without setpriv writes into read-only folders")
    caps = "-dac_override,-dac_read_search"
    return (setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}")


def test_label_split_into_a_read_only_folder_is_one_line_exit_2(tmp_path):
    dataset = tmp_path / "data"
    assert labelling("ingest", MWZ22, "--out", dataset, "--split-size", "1").returncode == 0
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        done = labelling(
            "label-split", "--dataset", dataset, "--split", "train_0_1", "--out", locked / "x.jsonl", prefix=_without_override()
        )
        assert_one_line_error(done, 2, "x.jsonl: cannot be written", "is not writable")
    finally:
        locked.chmod(0o755)
    assert not list(locked.iterdir())


# --- --overwrite -------------------------------------------------------------------------------------------------------


def test_overwrite_trusts_only_a_marker_listing_what_labelling_writes(tmp_path):
    hidden = tmp_path / "hidden"
    (hidden / ".git").mkdir(parents=True)
    (hidden / MARKER).write_text(json.dumps({"written_by": "labelling", "files": [".git"]}))
    done = labelling("ingest", MWZ22, "--out", hidden, "--overwrite")
    assert_one_line_error(done, 2, "marker lists '.git', which `labelling` never writes")
    assert (hidden / ".git").is_dir()

    ours = tmp_path / "ours"
    assert labelling("ingest", MWZ22, "--out", ours).returncode == 0
    (ours / "train_0_3" / "NOTES.md").write_text("mine")
    assert_one_line_error(labelling("ingest", MWZ22, "--out", ours, "--overwrite"), 2, "it holds train_0_3/NOTES.md")
    assert (ours / "train_0_3" / "NOTES.md").read_text() == "mine"
    (ours / "train_0_3" / "NOTES.md").unlink()
    assert labelling("ingest", MWZ22, "--out", ours, "--overwrite", "--split-size", "1").returncode == 0

    (ours / MARKER).write_text(json.dumps({"written_by": "labelling", "files": "dataset_dict.json"}))
    done = labelling("ingest", MWZ22, "--out", ours, "--overwrite")
    assert_one_line_error(done, 2, '"files" must be a list of names')
    assert "and no .labelling-output.json marker" not in done.stderr  # the message no longer contradicts itself


def test_overwrite_through_a_symlink_replaces_its_target_and_leaves_nothing_behind(tmp_path):
    target, link = tmp_path / "real", tmp_path / "link"
    assert labelling("ingest", MWZ22, "--out", target).returncode == 0
    link.symlink_to(target)
    done = labelling("ingest", MWZ22, "--out", link, "--overwrite", "--split-size", "1")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    assert link.is_symlink() and sorted(p.name for p in target.iterdir()) == [
        MARKER,
        "dataset_dict.json",
        "train_0_1",
        "train_1_2",
        "train_2_3",
    ]
