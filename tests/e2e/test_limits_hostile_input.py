"""The second pass of hostile input (issue 34, probe report 4), each through the installed ``labelling`` command: JSON
that would parse into gigabytes from a small zip, a job config that is a device, YAML alias bombs, a dialogue of
10,000 turns and a 200,000-deep schema are each refused under a 1 GB address-space cap, in one ``error:`` line naming
the bound and the setting that raises it, with exit code 2, within 10 s; and the exit codes that said "unexpected
failure" now say what to fix."""

from __future__ import annotations

import json
import resource
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from labelling import limits
from tests.cli.test_cli_contract import LABELLING, assert_one_line_error, environment
from tests.support.corpus_files import DEV_ZIP, MWZ22

SECONDS = 10  # the most a refusal may take, on the shared 2-core machine included
MEMORY_CAP = 1 << 30  # the address space each command here runs in


def capped(*args, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The console script in a fresh process with a 1 GB address space (going past it fails the command)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    command = [str(LABELLING), *map(str, args)]
    run_env = environment(**(env or {}))
    return subprocess.run(command, env=run_env, cwd=cwd, capture_output=True, text=True, timeout=120, preexec_fn=limit)


def refused(args: tuple, *fragments: str, env: dict | None = None, cwd: Path | None = None) -> str:
    """``args`` run capped: exit 2, one ``error:`` line holding each fragment, within SECONDS; returns the line."""
    started = time.monotonic()
    done = capped(*args, env=env, cwd=cwd)
    took = time.monotonic() - started
    line = assert_one_line_error(done, 2, *fragments)
    assert took < SECONDS, f"{took:.1f} s: {line}"
    return line


def _zip(path: Path, pieces: list[bytes], repeat: int) -> Path:
    """A zip whose one member ``val.json`` is pieces[0], then pieces[1] ``repeat`` times, then pieces[2]."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z, z.open("val.json", "w", force_zip64=True) as f:
        head, body, tail = pieces
        f.write(head)
        block = body * (1 << 16)
        for _ in range(repeat >> 16):
            f.write(block)
        f.write(tail)
    return path


# --- 1. a JSON bomb inside the byte limit ---------------------------------------------------------------------------


def test_a_small_zip_of_empty_objects_under_the_byte_limit_is_refused_by_its_element_count(tmp_path):
    count = 32 << 20  # 32 million {} (96 MiB, under the 512 MiB limit): about 2.3 GB once parsed
    bomb = _zip(tmp_path / "bomb.zip", [b"[", b"{},", b"{}]"], count)
    assert bomb.stat().st_size < 1 << 20
    line = refused(("ingest", bomb), "bomb.zip:val.json: holds more than 20,000,000 JSON values and keys")
    assert "raise LABELLING_MAX_JSON_ELEMENTS" in line


def test_an_object_of_millions_of_keys_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "keys.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z, z.open("val.json", "w") as f:
        f.write(b"{")
        suffixes = [b"%04d" % i for i in range(4000)]
        for prefix in (b"d%04d" % i for i in range(3000)):  # 12 million distinct keys with empty objects: 24 million elements
            f.write(b'"' + (b'":{},"' + prefix).join([prefix + suffixes[0], *suffixes[1:]]) + b'":{},')
        f.write(b'"x": }')  # and invalid at the end, where a parser would have found out only after building it all
    refused(("ingest", path), "keys.zip:val.json: holds more than 20,000,000 JSON values and keys")


def test_the_element_limit_is_a_setting(tmp_path):
    corpus = tmp_path / "one.json"
    corpus.write_text((MWZ22 / "dialogues_001.json").read_text())
    refused(("ingest", corpus), "holds more than 100 JSON values", env={"LABELLING_MAX_JSON_ELEMENTS": "100"})
    assert capped("ingest", corpus).returncode == 0


def test_a_corpus_or_schema_nested_200000_deep_is_refused_by_its_depth(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    refused(("ingest", deep), "deep.json: nests deeper than 100 levels", "LABELLING_MAX_NESTING")
    line = refused(("ingest", MWZ22, "--schema", deep), "deep.json: nests deeper than 100 levels")
    assert "RecursionError" not in line


# --- 2. the job config file read without a limit ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["label-split", "run"])
def test_a_device_as_the_job_config_is_refused_unread(tmp_path, command):
    link = tmp_path / "z.yaml"
    link.symlink_to("/dev/zero")
    if command == "label-split":
        args = ("label-split", "--dataset", tmp_path, "--split", "s", "--out", tmp_path / "o.jsonl")
    else:
        args = ("run", "--local", "--corpus", "c", "--group", "g")
    for config in ("/dev/zero", link):
        refused((*args, "--config", config), f"{config}: job config is not a regular file")


# --- 3. YAML alias bombs ---------------------------------------------------------------------------------------------


def _laughs(levels: int) -> str:
    """A flow sequence whose anchors are defined where first used: ``levels`` levels of nine aliases each."""
    text = '&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'
    for level in range(1, levels + 1):
        text = f"&l{level} [{text}, " + ", ".join([f"*l{level - 1}"] * 8) + "]"
    return text


BOMB_PLACES = {
    "seed": "seed: {}",
    "services": "services: {}",
    "device": "dst: {{model: {{device: {}}}}}",
    "model": "act_tag: {{model: {{model_name_or_path: {}}}}}",
    "a key": "? {}\n: 1",
}


@pytest.mark.parametrize("place", list(BOMB_PLACES))
def test_a_billion_laughs_anywhere_in_a_job_config_is_refused_fast(tmp_path, place):
    config = tmp_path / "lol.yaml"
    config.write_text(BOMB_PLACES[place].format(_laughs(8)) + "\n")  # 9^9 strings once expanded
    args = ("label-split", "--dataset", tmp_path, "--split", "s", "--out", tmp_path / "o.jsonl", "--config", config)
    refused(args, "lol.yaml: job config expands to more than 100,000 YAML nodes", "LABELLING_MAX_YAML_NODES")


def test_a_value_quoted_in_an_error_is_cut_short(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(BOMB_PLACES["device"].format(_laughs(3)) + "\n")  # 59,049 strings: under the node limit
    args = ("label-split", "--dataset", tmp_path, "--split", "s", "--out", tmp_path / "o.jsonl", "--config", config)
    line = refused(args, "config key dst.model.device: expected str, got list [[[")
    assert len(line) < 500
    config.write_text(f"dst: {{model: {{device: {'x' * 3_000_000}}}}}\n")
    assert len(refused(args, "config key dst.model.device: must be auto, cpu")) < 500


# --- 4. a dialogue of many turns ----------------------------------------------------------------------------------


def _long_dialogue(path: Path, user_turns: int) -> Path:
    log = []
    for i in range(user_turns):
        log += [{"text": f"user says {i}", "metadata": {}}, {"text": f"system {i}", "metadata": {}}]
    path.write_text(json.dumps({"LONG1": {"goal": {}, "log": log}}))
    return path


def test_a_dialogue_of_10000_turns_is_refused_before_its_turns_are_built(tmp_path):
    source = _long_dialogue(tmp_path / "turns10k.json", 10_000)
    line = refused(("ingest", source, "--out", tmp_path / "ds"), "dialogue LONG1: has 10,000 user turns")
    assert f"over the limit of {limits.MAX_DIALOGUE_TURNS} per dialogue" in line and "LABELLING_MAX_DIALOGUE_TURNS" in line
    assert not (tmp_path / "ds").exists()


def test_the_turn_limit_admits_its_own_length_and_is_a_setting(tmp_path):
    at_limit = _long_dialogue(tmp_path / "at.json", limits.MAX_DIALOGUE_TURNS)
    assert capped("ingest", at_limit).returncode == 0
    over = _long_dialogue(tmp_path / "over.json", limits.MAX_DIALOGUE_TURNS + 1)
    refused(("ingest", over), f"has {limits.MAX_DIALOGUE_TURNS + 1} user turns")
    raised = {"LABELLING_MAX_DIALOGUE_TURNS": str(limits.MAX_DIALOGUE_TURNS + 1)}
    assert capped("ingest", over, env=raised).returncode == 0


# --- 5. a fleet run whose schema is not a schema -----------------------------------------------------------------------


def test_a_fleet_run_reads_its_schema_before_it_contacts_the_broker(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    state = tmp_path / "state"
    dead_broker = {"LABELLING_BROKER_URL": "amqp://guest:guest@127.0.0.1:9//", "LABELLING_STATE_DIR": str(state)}
    for schema, expected in (("/etc/passwd", "/etc/passwd: not valid JSON"), (deep, "deep.json: nests deeper than 100")):
        config = tmp_path / "sp.json"
        config.write_text(json.dumps({"schema_path": str(schema)}))
        args = ("run", "--corpus", "one", "--group", "sp5", "--profile", "cpu-small", "--config", config)
        refused(args, "config key schema_path: ", expected, env=dead_broker)
    assert not state.exists()  # nothing was stored: no server was started, let alone a group written


# --- 7. exit 1 where exit 2 and a fix are promised ------------------------------------------------------------------


@pytest.mark.parametrize("out", ["/", ".", ""])
def test_label_split_into_a_folder_path_is_exit_2(tmp_path, out):
    args = ("label-split", "--dataset", tmp_path, "--split", "s", "--profile", "cpu-small", "--out", out)
    refused(args, "is a folder, not a file path", "give --out a file path", cwd=tmp_path)


def test_a_state_folder_that_is_a_file_or_under_proc_is_exit_2(tmp_path):
    file = tmp_path / "f"
    file.write_text("")
    for state in (file, "/proc/no/such"):
        env = {"LABELLING_STATE_DIR": str(state), "LABELLING_MONGODB_URI": ""}
        refused(("corpus", "ls"), f"the state folder {state} cannot hold", "LABELLING_STATE_DIR", env=env)


def test_a_utf16_corpus_is_called_not_utf8(tmp_path):
    corpus = tmp_path / "u16.json"
    corpus.write_bytes(b"\xff\xfe" + json.dumps({"A": {"goal": {}, "log": []}}).encode("utf-16-le"))
    refused(("ingest", corpus), "u16.json: not UTF-8 text (it starts with a UTF-16 byte-order mark)")


# --- 8. Flower with empty credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [":", "admin:", ":secret", "admin", "admin:secret,:"])
def test_flower_refuses_an_empty_user_or_password(auth):
    env = {"FLOWER_BASIC_AUTH": auth, "LABELLING_BROKER_URL": "amqp://guest:guest@127.0.0.1:9//"}
    refused(("flower", "--port", "5592"), "FLOWER_BASIC_AUTH gives an empty user or password", env=env)


# --- 6. a file written into --out while --overwrite replaces it --------------------------------------------------------


def _write_notes_during_the_write(out: Path, found: list[bool]) -> None:
    """Wait for the staged folder beside ``out``, write a user's file into ``out``; ``found`` says whether the staged
    folder was still there afterwards (so the file was written before ``out`` was moved aside)."""
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(f".{out.name}.tmp-*")):
        if time.monotonic() > deadline:
            return
        time.sleep(0.001)
    (out / "USER_NOTES.txt").write_text("my notes")
    found.append(bool(list(out.parent.glob(f".{out.name}.tmp-*"))))


def test_a_file_written_into_out_during_an_overwrite_is_kept_and_said_so(tmp_path):
    import threading

    out = tmp_path / "tt"
    assert capped("ingest", MWZ22, "--out", out).returncode == 0
    found: list[bool] = []
    watcher = threading.Thread(target=_write_notes_during_the_write, args=(out, found))
    watcher.start()
    done = capped("ingest", DEV_ZIP, "--out", out, "--overwrite")  # 20 splits: seconds of writing to slip into
    watcher.join()
    assert found == [True], "the note was not written while the dataset was being written"
    assert done.returncode == 0, done.stderr
    kept = list(tmp_path.glob(".tt.old-*"))
    assert len(kept) == 1 and (kept[0] / "USER_NOTES.txt").read_text() == "my notes"
    said = f"WARNING labelling.outputs: the previous {out} was kept as {kept[0]}: it holds USER_NOTES.txt, which"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), done.stderr
    assert "train_950_999" in {p.name for p in out.iterdir()}  # the new dataset is in place


# --- 9. SIGTERM on label-split ------------------------------------------------------------------------------------------


@pytest.mark.slow  # loads a (tiny) model in a fresh process
def test_sigterm_on_label_split_keeps_the_labels_says_so_and_exits_143(tmp_path):
    from tests.support.fleet_helpers import save_tiny_model, write_job
    from tests.support.partition_worker import tiny_job

    dataset = tmp_path / "data"
    assert capped("ingest", MWZ22, "--out", dataset).returncode == 0
    job = write_job(tiny_job(), save_tiny_model(tmp_path / "tiny"), tmp_path / "job.json")
    out = tmp_path / "labels.jsonl"
    partial = out.with_name(out.name + ".partial")
    command = [str(LABELLING), "label-split", "--dataset", str(dataset), "--split", "train_0_3", "--out", str(out)]
    command += ["--config", str(job), "--limit-dialogues", "1"]
    process = subprocess.Popen(command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (partial.exists() and len(partial.read_text().splitlines()) >= 2):  # the header and a first wave
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() else "too slow"
        time.sleep(0.1)
    process.terminate()
    _, err = process.communicate(timeout=120)
    kept = len(partial.read_text().splitlines()) - 1
    assert process.returncode == 143 and "Traceback" not in err, err
    note = f"terminated (SIGTERM): {kept} labelled turns kept in {partial}; the same command resumes from them"
    assert err.strip().splitlines()[-1] == note


# --- 2. every other file a command reads back ---------------------------------------------------------------------------


def test_a_device_where_label_split_reads_its_partial_file_or_quality_its_report_is_refused_unread(tmp_path):
    out = tmp_path / "o.jsonl"
    out.with_name("o.jsonl.partial").symlink_to("/dev/zero")
    args = ("label-split", "--dataset", tmp_path, "--split", "s", "--profile", "cpu-small", "--out", out)
    refused(args, "o.jsonl.partial: is not a regular file")
    refused(("quality", "--pool-from", "/dev/zero", "--limit", "1"), "--pool-from /dev/zero: not a readable quality report")


def test_an_overwrite_marker_that_is_a_huge_file_is_not_read(tmp_path):
    ours = tmp_path / "ours"
    assert capped("ingest", MWZ22, "--out", ours).returncode == 0
    with (ours / ".labelling-output.json").open("r+b") as f:
        f.truncate(4 << 30)  # a sparse 4 GiB marker: reading it whole would pass the cap
    refused(("ingest", MWZ22, "--out", ours, "--overwrite"), "marker cannot be read (over the limit of 1,048,576 bytes)")
