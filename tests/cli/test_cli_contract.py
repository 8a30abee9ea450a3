"""The command line's promises, checked through the installed ``labelling`` console script in a subprocess (exit code,
stderr, files on disk), as a user's shell or scheduler sees them: one line and exit 2 for usage and input errors, no
traceback without --debug, 130 and a line saying what was kept after Ctrl-C, ``--overwrite`` replacing only a folder
this tool wrote, an interrupted ingest leaving no corpus, and exports that load."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from cli.label import load_split, partial_header
from labelling import config as job_config
from labelling.corpus import cut_into_splits
from labelling.errors import ConfigError, PartitionBusy, StoreError
from labelling.fleet import store
from labelling.outputs import MARKER
from tests.support.corpus_files import DEV_ZIP, MWZ22
from tests.support.mongo_fixture import complete_with_scripted_labels, unique

LABELLING = Path(sys.executable).with_name("labelling")
SETTINGS = ("LABELLING_BROKER_URL", "FLOWER_BASIC_AUTH", "LABELLING_FLOWER_USER", "LABELLING_FLOWER_PASSWORD")

# Each command's bare form is a usage error, except those that have work to do without arguments: bench, quality and demo
# (they label the bundled corpus), corpus ls (lists), and worker and flower, which are input errors with no broker set.
BARE = [
    [],
    ["ingest"],
    ["label-split"],
    ["label-partition"],
    ["export"],
    ["evaluate"],
    ["run"],
    ["status"],
    ["corpus"],
    ["corpus", "rm"],
    ["group"],
    ["group", "rm"],
    ["server"],
]
BARE += [["worker"], ["flower"]]
COMMANDS = ["ingest", "label-split", "label-partition", "export", "evaluate", "bench", "run", "status", "worker", "flower"]
COMMANDS += ["demo", "quality"]
SUBCOMMANDS = {"corpus": ["ls", "rm"], "group": ["rm"], "server": ["status", "stop"]}
BAD_VALUES = [["ingest", str(MWZ22), "--split-size", "0"], ["run", "--group", "g", "--limit-dialogues", "-1"], ["nosuch"]]
BAD_VALUES += [["status", "--group", "g", "--interval", "fast"], ["ingest", str(MWZ22), "--format", "csv"]]


def interruptible(command: list[str]) -> subprocess.Popen:
    """The command started as from a terminal, where Ctrl-C reaches it.

    A suite started in the background (``nohup make test &`` from a script) can inherit SIGINT ignored, and so do its
    children; Python then installs no KeyboardInterrupt handler, so the signal was dropped and the command ran to the
    end. The default disposition is restored, as a terminal gives it.
    """
    return subprocess.Popen(
        command,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without a broker or Flower credentials, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def labelling(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the console script and wait for it."""
    command = [str(LABELLING), *map(str, args)]
    return subprocess.run(command, env=env or environment(), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(done: subprocess.CompletedProcess, code: int = 2, *fragments: str) -> str:
    """Exit ``code``, exactly one line on stderr, starting ``error:``, no traceback; returns the line."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), (done.args, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_every_command_bare_or_with_an_unknown_option_is_one_line_and_exit_2():
    from cli.app import _register, app

    _register()
    registered = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert registered == set(COMMANDS) | set(SUBCOMMANDS), "a new command must join this test"
    unknown = [[name, "--no-such-option"] for name in COMMANDS]
    unknown += [[group, name, "--no-such-option"] for group, names in SUBCOMMANDS.items() for name in names]
    invocations = BARE + unknown + BAD_VALUES
    # All at once: each is a fresh interpreter, and they only parse their arguments.
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    running = [subprocess.Popen([str(LABELLING), *args], env=environment(), **pipes) for args in invocations]
    for args, process in zip(invocations, running, strict=True):
        out, err = process.communicate(timeout=120)
        line = assert_one_line_error(subprocess.CompletedProcess(args, process.returncode, out, err))
        if args[-1:] == ["--no-such-option"]:
            assert "No such option: --no-such-option" in line and f"labelling {' '.join(args[:-1])} --help" in line


def test_labelling_alone_prints_the_help_on_stdout_and_one_line_naming_the_commands():
    done = labelling()
    line = assert_one_line_error(done, 2, "`labelling` needs a command (", "run", "corpus", "see `labelling --help`")
    assert "Usage" in done.stdout and line


def test_debug_keeps_the_traceback_for_an_input_error(tmp_path):
    done = labelling("--debug", "ingest", tmp_path / "missing.json")
    assert done.returncode != 0 and "Traceback" in done.stderr and "CorpusError" in done.stderr


# --- --overwrite -----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # several fresh processes
def test_overwrite_refuses_foreign_content_and_replaces_only_a_folder_labelling_wrote(tmp_path):
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "notes.md").write_text("mine")
    done = labelling("ingest", MWZ22, "--out", project, "--overwrite")
    assert_one_line_error(done, 2, "--overwrite refused: it holds .git, notes.md and no .labelling-output.json marker")
    assert (project / "notes.md").read_text() == "mine" and (project / ".git").is_dir()
    for here in (".", str(tmp_path.anchor)):
        assert_one_line_error(labelling("ingest", MWZ22, "--out", here, "--overwrite", cwd=project), 2, "current folder")
    assert (project / "notes.md").read_text() == "mine"

    ours = tmp_path / "ours"
    assert labelling("ingest", MWZ22, "--out", ours).returncode == 0
    assert (ours / MARKER).exists()
    done = labelling("ingest", MWZ22, "--out", ours, "--overwrite", "--split-size", "1")
    assert done.returncode == 0, done.stderr
    assert list(datasets.load_from_disk(str(ours))) == ["train_0_1", "train_1_2", "train_2_3"]
    (ours / "my-analysis.ipynb").write_text("{}")
    assert_one_line_error(
        labelling("ingest", MWZ22, "--out", ours, "--overwrite"), 2, "it holds my-analysis.ipynb, which `labelling` did not write"
    )
    assert (ours / "my-analysis.ipynb").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ours", "project"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_parent_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_one_line_error(labelling("ingest", MWZ22, "--out", locked / "out"), 2, "is not writable")
    finally:
        locked.chmod(0o700)


# --- exports that load -----------------------------------------------------------------------------------------------


def _group_of(dialogues: int, split_size: int, schema) -> tuple[str, list[str]]:
    from labelling.corpus import read_corpus

    corpus = unique("corpus")
    splits = cut_into_splits(read_corpus(MWZ22, schema)[:dialogues], split_size)
    store.ingest_corpus(corpus, splits, schema)
    group = unique("group")
    store.create_group(group, corpus, job_config.load())
    return group, list(splits)


def test_a_one_dialogue_group_exports_a_dataset_that_loads(connected, schema, tmp_path):
    group, splits = _group_of(1, 1, schema)
    complete_with_scripted_labels(group, splits[0])
    done = labelling("export", "--group", group, "--out", tmp_path / "export")
    assert done.returncode == 0, done.stderr
    assert "valid_64" in done.stdout and "left out" in done.stdout
    data = datasets.load_from_disk(str(tmp_path / "export"))
    assert set(data) == {"train", "train_minus_64"} and data["train"].num_rows == data["train_minus_64"].num_rows > 0
    assert "`valid_64`: left out: a group of one dialogue has none to hold out" in (tmp_path / "export" / "README.md").read_text()


@pytest.mark.slow  # several fresh processes
def test_a_partial_export_of_the_seed_alone_loads(connected, schema, tmp_path):
    group, splits = _group_of(3, 1, schema)
    complete_with_scripted_labels(group, splits[0])
    assert labelling("export", "--group", group, "--out", tmp_path / "x").returncode == 2  # incomplete, not allowed
    done = labelling("export", "--group", group, "--out", tmp_path / "x", "--allow-partial")
    assert done.returncode == 0, done.stderr
    assert datasets.load_from_disk(str(tmp_path / "x"))["train"].num_rows == store.partition(group, splits[0]).turns_total


def test_evaluate_json_gives_null_scores_for_a_group_with_no_labels(connected, schema):
    group, _ = _group_of(1, 1, schema)
    done = labelling("evaluate", "--group", group, "--json")
    assert done.returncode == 0, done.stderr
    overall = json.loads(done.stdout)["overall"]
    assert overall["jga"] is None and overall["acts_f1"] is None and overall["n_dst"] == 0


# --- the store's corpora ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # several fresh processes
def test_corpus_rm_refuses_a_corpus_a_group_labels_and_removes_one_no_group_uses(connected, schema):
    group, _ = _group_of(1, 1, schema)
    corpus = store.group_run(group).corpus
    assert_one_line_error(labelling("corpus", "rm", corpus), 2, f"corpus {corpus!r} is labelled by group(s) {group}")
    assert corpus in store.list_corpora()
    from labelling.corpus import read_corpus

    lone = unique("corpus")
    store.ingest_corpus(lone, cut_into_splits(read_corpus(MWZ22, schema), 2), schema)
    listing = labelling("corpus", "ls")
    assert listing.returncode == 0 and lone in listing.stdout and group in listing.stdout
    done = labelling("corpus", "rm", lone)
    assert done.returncode == 0 and "removed" in done.stdout
    assert lone not in store.list_corpora()
    assert_one_line_error(labelling("corpus", "rm", lone), 2, f"unknown corpus {lone!r}")


def test_held_splits_are_exactly_the_claims_claim_partition_refuses(connected, schema):
    group, splits = _group_of(2, 1, schema)
    store.claim_partition(group, splits[0], "a")
    assert store.held_splits(group) == [splits[0]]
    with pytest.raises(PartitionBusy):
        store.claim_partition(group, splits[0], "b")
    assert store.held_splits(group, lease_s=-1) == []  # every heartbeat is older than a negative lease: all stale
    assert store.claim_partition(group, splits[0], "b", lease_s=-1) is not None


@pytest.mark.slow  # several fresh processes
def test_group_rm_refuses_a_group_being_labelled_then_frees_its_corpus(connected, schema):
    group, splits = _group_of(2, 1, schema)
    corpus = store.group_run(group).corpus
    complete_with_scripted_labels(group, splits[0])
    held = store.claim_partition(group, splits[1], "someone")  # a live claim: a worker is labelling it
    busy = f"group {group!r} has partitions being labelled: {splits[1]}"
    assert_one_line_error(labelling("group", "rm", group, "--yes"), 2, busy)
    assert_one_line_error(labelling("group", "rm", group), 2, busy)  # refused first: no question that would be in vain
    assert group in store.list_groups() and store.partition(group, splits[0]).status == store.DONE
    turns = store.partition(group, splits[0]).turns_total
    store.fail_partition(held, "stopped")
    assert_one_line_error(labelling("group", "rm", group), 2, "deletes", "pass --yes")  # not a terminal: never silent
    done = labelling("group", "rm", group, "--yes")
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())
    assert f"group {group} removed ({turns} labels, 1 manifest entries, 2 partitions, 0 examples)" in said
    assert group not in store.list_groups()
    assert store.LabelDoc.objects(group_id=group).count() == 0 and store.ManifestDoc.objects(group_id=group).count() == 0
    assert labelling("corpus", "rm", corpus).returncode == 0 and corpus not in store.list_corpora()
    assert_one_line_error(labelling("group", "rm", group, "--yes"), 2, f"unknown group {group!r}")


@pytest.mark.integration
def test_ctrl_c_during_ingest_leaves_no_corpus_and_the_same_command_then_completes(connected):
    corpus = unique("interrupted")
    command = [str(LABELLING), "ingest", str(DEV_ZIP), "--corpus", corpus]
    process = interruptible(command)
    collection = store.TurnDoc._get_collection()
    deadline = time.monotonic() + 120
    while collection.count_documents({"corpus": corpus}, limit=1) == 0:  # interrupt once turns are being written
        assert process.poll() is None and time.monotonic() < deadline, "the ingest ended before it wrote a turn"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == f"interrupted: no corpus {corpus!r} was stored (one stored before is intact); " \
        "--out is unchanged; run the same command again"  # fmt: skip
    assert "Traceback" not in err and corpus not in store.list_corpora()
    with pytest.raises(StoreError, match="incomplete|unknown corpus"):
        store.corpus_splits(corpus)
    again = labelling(*command[1:], timeout=300)
    assert again.returncode == 0, again.stderr
    assert sum(store.corpus_splits(corpus).values()) == 7365 and corpus in store.list_corpora()


def test_run_refuses_an_incomplete_corpus_naming_the_fix(connected, schema, tmp_path):
    from labelling.corpus import read_corpus

    corpus = unique("cut")
    store.ingest_corpus(corpus, cut_into_splits(read_corpus(MWZ22, schema), 1), schema)
    store.CorpusDoc._get_collection().delete_one({"_id": corpus})  # as an interrupted ingest leaves it: turns, no record
    done = labelling("run", "--local", "--corpus", corpus, "--group", unique("g"))
    assert_one_line_error(done, 2, f"corpus {corpus!r} is incomplete", f"labelling corpus rm {corpus}")
    assert corpus not in store.list_corpora()


# --- label-partition resumes only its own partial file ----------------------------------------------------------------


@pytest.mark.slow  # several fresh processes
def test_label_partition_refuses_a_partial_file_written_for_another_split(tmp_path):
    dataset = tmp_path / "data"
    assert labelling("ingest", MWZ22, "--out", dataset, "--split-size", "1").returncode == 0
    out = tmp_path / "labels.jsonl"
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps({"partial_of": partial_header(job_config.load(), dataset, "train_0_1", None)}) + "\n")
    args = ("label-partition", "--dataset", dataset, "--split", "train_1_2", "--out", out)
    assert_one_line_error(labelling(*args), 2, "split 'train_0_1', not 'train_1_2'", f"delete {partial} to start over")
    partial.write_text('{"dialogue_id": "x", "turn_id": 0}\n')  # an older tool's file: no header line
    assert_one_line_error(labelling(*args), 2, "it has no header line saying what it labels")
    assert not out.exists()


# --- early checks and the smaller promises ------------------------------------------------------------------------------


def _write(path: Path, data: object, encoding: str = "utf-8") -> Path:
    path.write_text(json.dumps(data), encoding=encoding)
    return path


def test_bad_files_and_brokers_are_one_line_errors_before_anything_runs(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    folder = tmp_path / "mwz22"
    folder.mkdir()
    (folder / "dialogues_001.json").write_text((MWZ22 / "dialogues_001.json").read_text())
    (folder / "dialogues_002.json").mkdir()  # unreadable as a file, even for root
    utf16 = _write(tmp_path / "utf16.json", {"seed": 1}, encoding="utf-16")
    bad_format = _write(tmp_path / "fmt.json", {"dst": {"retriever": {"retrieval_input_format": "context_user"}}})
    flower_env = environment(LABELLING_FLOWER_USER="admin", LABELLING_FLOWER_PASSWORD="pw")
    cases = [
        (["ingest", deep], None, "deep.json: nests deeper than 100 levels"),
        (["ingest", folder], None, "dialogues_002.json: is a folder"),
        (
            ["label-partition", "--dataset", tmp_path, "--split", "s", "--out", tmp_path / "o", "--config", utf16],
            None,
            "not UTF-8",
        ),
        (["run", "--group", "g", "--corpus", "c", "--config", bad_format], None, "dst.retriever.retrieval_input_format: must be"),
        (["flower"], {**flower_env, "LABELLING_BROKER_URL": "amqp://guest:wrong@127.0.0.1:5672//"}, "refused the login"),
        (["flower"], {**flower_env, "LABELLING_BROKER_URL": "redis://127.0.0.1:6379/0"}, "needs the redis client library"),
        (["flower"], {**flower_env, "LABELLING_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"}, "is unreachable"),
    ]
    if importlib.util.find_spec("redis") is not None:
        cases = [case for case in cases if "redis" not in case[2]]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    running = [subprocess.Popen([str(LABELLING), *map(str, args)], env=env or environment(), **pipes) for args, env, _ in cases]
    for (args, _, fragment), process in zip(cases, running, strict=True):
        out, err = process.communicate(timeout=120)
        line = assert_one_line_error(subprocess.CompletedProcess(args, process.returncode, out, err), 2, fragment)
        assert "wrong" not in line  # a broker password is masked


def test_one_default_profile_and_modules_named_by_their_key(tmp_path):
    bare = job_config.load()
    assert (
        bare.to_dict()
        == job_config.load(_write(tmp_path / "empty.json", {})).to_dict()
        == job_config.load(profile=job_config.DEFAULT_PROFILE).to_dict()
    )
    job = job_config.load(_write(tmp_path / "acts.json", {"act_tag": {"retriever": {"k_examples": 2}}}))
    assert job.act_tag.retriever.k_examples == 2 and job.dst.retriever.k_examples == bare.dst.retriever.k_examples
    from labelling.method.retrieval import TEXT_FORMATS

    assert set(job_config.RETRIEVAL_FORMATS) == set(TEXT_FORMATS)


def test_the_references_seed_file_and_dependents_load_as_one_group_with_each_warning_once(tmp_path, caplog):
    from labelling.fleet.groups import load_jobs

    dependent = job_config.load(profile="starcoder").to_dict()
    for module in ("dst", "act_tag"):
        dependent[module]["retriever"]["example_warmup"] = 0
    dependent.update(data_warmup=0, wandb={"run_tags": ["x"]}, output={})
    seed = json.loads(json.dumps(dependent))
    seed["data_warmup"], seed["manifest"]["seed_retrievers_from_manifest"] = 24, False
    for module in ("dst", "act_tag"):
        seed[module]["retriever"]["example_warmup"] = 32
    folder = tmp_path / "runs"
    (folder / "dependents").mkdir(parents=True)
    _write(folder / "job_0.json", {**seed, "data": {"eval_set_split_name": "train_0_50"}})
    for split in ("train_50_100", "train_100_150"):
        _write(folder / "dependents" / f"{split}.json", {**dependent, "data": {"eval_set_split_name": split}})
    caplog.set_level("WARNING")
    job, named = load_jobs([folder, folder / "dependents"], None)
    assert sorted(named) == ["train_0_50", "train_100_150", "train_50_100"]
    assert job.data_warmup == 24 and job.dst.retriever.example_warmup == job.act_tag.retriever.example_warmup == 32
    assert job.manifest.seed_retrievers_from_manifest  # the dependents start from the seed's labels
    legacy = [r for r in caplog.records if "reference's schema" in r.getMessage()]
    assert len(legacy) == len({r.getMessage() for r in legacy}) == 2  # wandb and output, once each, not once per file
    other = {**dependent, "seed": 7, "data": {"eval_set_split_name": "train_150_200"}}
    _write(folder / "dependents" / "train_150_200.json", other)
    with pytest.raises(ConfigError, match="differs from .* at seed"):
        load_jobs([folder, folder / "dependents"], None)


def test_lost_gold_labels_are_warned_about(tmp_path, schema, caplog):
    from labelling.corpus import read_corpus

    odd = {"A.json": {"goal": {}, "log": [{"text": "hi", "metadata": {}}, {"text": "hello", "metadata": None}, {"text": "bye"}]}}
    caplog.set_level("WARNING")
    read_corpus(_write(tmp_path / "odd.json", odd), schema)
    folder = tmp_path / "noacts"
    folder.mkdir()
    (folder / "dialogues_001.json").write_text((MWZ22 / "dialogues_001.json").read_text())
    read_corpus(folder, schema)
    text = caplog.text
    assert "null or empty metadata (no gold state): at " in text and "dialogue A.json, log entry 1" in text
    assert "ends with a user entry and no system reply" in text and "no dialog_acts.json" in text


def test_password_like_uri_parameters_are_masked():
    from labelling.redact import mask_uri

    uri = "mongodb://u:pw@h/db?tls=true&tlsCertificateKeyFilePassword=hunter2&authSource=admin"
    assert mask_uri(uri) == "mongodb://u:***@h/db?tls=true&tlsCertificateKeyFilePassword=***&authSource=admin"


@pytest.mark.slow  # loads a (tiny) model in a fresh process
def test_ctrl_c_on_label_partition_exits_130_saying_what_was_kept_and_the_same_command_resumes(tmp_path):
    from tests.support.fleet_helpers import save_tiny_model, write_job
    from tests.support.partition_worker import tiny_job

    dataset = tmp_path / "data"
    assert labelling("ingest", MWZ22, "--out", dataset).returncode == 0
    job = write_job(tiny_job(), save_tiny_model(tmp_path / "tiny"), tmp_path / "job.json")
    out = tmp_path / "labels.jsonl"
    partial = out.with_name(out.name + ".partial")
    command = [str(LABELLING), "label-partition", "--dataset", str(dataset), "--split", "train_0_3", "--out", str(out)]
    command += ["--config", str(job), "--limit-dialogues", "1"]
    process = interruptible(command)
    deadline = time.monotonic() + 300
    while not (partial.exists() and len(partial.read_text().splitlines()) >= 2):  # the header and a first wave
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() else "too slow"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert partial.exists(), f"exit {process.returncode}, the partial file is gone: {err[-3000:]}"
    kept = len(partial.read_text().splitlines()) - 1
    assert process.returncode == 130 and "Traceback" not in err, err
    assert (
        err.strip().splitlines()[-1]
        == f"interrupted: {kept} labelled turns kept in {partial}; the same command resumes from them"
    )
    again = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    turns = load_split(dataset, "train_0_3", 1)
    assert not partial.exists() and len(out.read_text().splitlines()) == len(turns)  # every turn of the dialogue, once
