"""`labelling ingest` end to end: the acceptance run on the bundled dev set, the help text, and one-line errors on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import typer

from cli.app import app, main
from labelling.corpus import dataset_features
from labelling.errors import CorpusError
from labelling.schema import Schema
from tests.support.cli_helpers import run_cli
from tests.support.corpus_files import DEV_ZIP, MWZ22, ROW_FIELDS


def _console_command() -> list[str]:
    """The installed `labelling` script next to this interpreter, or the same entry point through `python -c`."""
    script = Path(sys.executable).with_name("labelling")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from cli.app import main; main()"]


# --- acceptance ------------------------------------------------------------------------------------------


def test_ingesting_the_bundled_dev_set_gives_20_splits_of_999_dialogues(monkeypatch, capsys, tmp_path):
    out = tmp_path / "dev"
    code, stdout, err = run_cli(monkeypatch, capsys, "ingest", DEV_ZIP, "--out", out)
    assert code == 0, err
    for expected in ("999", "7,365", "20 (train_0_50 … train_950_999)", "multiwoz21"):
        assert expected in stdout
    loaded = datasets.load_from_disk(str(out))
    assert list(loaded) == [f"train_{a}_{min(a + 50, 999)}" for a in range(0, 999, 50)]
    assert sum(len(split) for split in loaded.values()) == 7365
    assert len({d for split in loaded.values() for d in split["dialogue_id"]}) == 999
    features = dataset_features(Schema.load())
    for split in loaded.values():
        assert set(split.column_names) == ROW_FIELDS and split.features == features
        assert all(split["has_gold"]) and all(split["has_gold_acts"])
        assert all(
            s[0] == "" and len(s) == len(u) for s, u in zip(split["system_utterances"], split["user_utterances"], strict=True)
        )


def test_multiwoz22_folder_ingests_with_custom_splits(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "ingest", MWZ22, "--out", tmp_path / "o", "--split-size", "2", "--prefix", "dev")
    assert code == 0
    assert "multiwoz22" in out and "22 of 22" in out
    assert list(datasets.load_from_disk(str(tmp_path / "o"))) == ["dev_0_2", "dev_2_3"]


def test_without_out_nothing_is_written(monkeypatch, capsys, tmp_path):
    shutil.copytree(MWZ22, tmp_path / "in")
    code, out, _ = run_cli(monkeypatch, capsys, "ingest", tmp_path / "in", "--services", "hotel, taxi")
    assert code == 0
    assert "nothing written" in out and "hotel 2, taxi 1" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_format_option_overrides_detection(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "ingest", MWZ22, "--format", "multiwoz21")
    assert code == 2
    assert err == f"error: {MWZ22}: is a folder (expected a .json or .zip file for this format)\n"


def test_help_explains_every_option(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "ingest", "--help")
    assert code == 0
    command = typer.main.get_command(app).commands["ingest"]
    for param in command.params:
        assert (param.help or "").strip(), f"{param.name} has no help text"
        assert param.opts[0] in out or param.name.upper() in out.upper()
    assert command.help and "split" in command.help


# --- bad input: one line, the file, the place, what was expected, exit code 2 ------------------------------


def _truncated_zip(tmp: Path) -> Path:
    data = DEV_ZIP.read_bytes()
    return _file(tmp / "dev.zip", data[: len(data) // 2])


def _file(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _edited_fixture(tmp: Path, edit) -> Path:
    """The fixture's PMUL1579.json after ``edit``, alone in a dialogues_001.json."""
    (entry,) = json.loads((MWZ22 / "dialogues_002.json").read_text())
    edit(entry)
    return _file(tmp / "dialogues_001.json", json.dumps([entry]))


def _unknown_slot(tmp: Path) -> Path:
    return _edited_fixture(tmp, lambda d: d["turns"][4]["frames"][2]["state"]["slot_values"].update({"hotel-colour": ["red"]}))


def _unknown_service(tmp: Path) -> Path:
    return _edited_fixture(tmp, lambda d: d["turns"][2]["frames"][0].update(service="spa"))


def _empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


BAD_INPUTS = {
    "truncated zip": (_truncated_zip, "dev.zip: truncated or corrupt zip", "expected a complete .zip"),
    "not JSON": (
        lambda t: _file(t / "notes.json", "these are notes"),
        "notes.json: not valid JSON (line 1, column 1",
        "expected a MultiWOZ JSON file",
    ),
    "cut-off JSON": (
        lambda t: _file(t / "cut.json", '{"MUL1": {"log": ['),
        "cut.json: not valid JSON (line 1, column 19",
        "expected a MultiWOZ JSON file",
    ),
    "wrong shape object": (
        lambda t: _file(t / "shape.json", '{"MUL1": [1, 2]}'),
        "shape.json: dialogue MUL1: found list",
        "goal",
    ),
    "wrong shape list": (lambda t: _file(t / "shape.json", "[1, 2]"), "shape.json: dialogue: found int", "turns"),
    "wrong shape scalar": (lambda t: _file(t / "shape.json", "42"), "shape.json: JSON of the wrong shape", "MultiWOZ 2.2"),
    "no turns (2.1)": (
        lambda t: _file(t / "d.json", '{"MUL1": {"goal": {}, "log": []}}'),
        "d.json: dialogue MUL1: has no turns",
        "log",
    ),
    "no turns (2.2)": (
        lambda t: _file(t / "dialogues_001.json", '[{"dialogue_id": "A.json", "turns": []}]'),
        "dialogues_001.json: dialogue A.json: has no turns",
        "turns",
    ),
    "unknown slot": (
        _unknown_slot,
        "dialogues_001.json: dialogue PMUL1579.json, turn 4: unknown slot 'hotel-colour' of service 'hotel'",
        "expected one of: price range",
    ),
    "unknown service": (
        _unknown_service,
        "dialogues_001.json: dialogue PMUL1579.json, turn 2: unknown service 'spa'",
        "expected one of: hotel, train, attraction, restaurant, hospital, taxi, bus, police",
    ),
    "empty folder": (_empty_folder, "empty: folder is empty", "dialogues_NNN.json"),
    "missing path": (lambda t: t / "nowhere" / "dev.zip", "dev.zip: no such file or folder", "pass a MultiWOZ"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_file_place_and_expectation(monkeypatch, capsys, tmp_path, case):
    make, place, expected = BAD_INPUTS[case]
    source = make(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, "ingest", source, "--out", tmp_path / "out")
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert place in err and expected in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_input_exits_2_from_the_installed_command(tmp_path):
    done = subprocess.run(
        [*_console_command(), "ingest", str(_empty_folder(tmp_path))], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    hint = "expected dialogues_NNN.json files (MultiWOZ 2.2) or a datasets save_to_disk folder"
    assert done.stderr == f"error: {tmp_path / 'empty'}: folder is empty ({hint})\n"


def test_debug_shows_the_traceback_instead(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["labelling", "--debug", "ingest", str(_empty_folder(tmp_path))])
    with pytest.raises(CorpusError, match="folder is empty"):
        main()


def test_existing_output_is_kept_and_overwrite_replaces_only_our_own(monkeypatch, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, _, err = run_cli(monkeypatch, capsys, "ingest", MWZ22, "--out", out)
    assert code == 2 and "folder exists and is not empty (pass --overwrite" in err
    code, _, err = run_cli(monkeypatch, capsys, "ingest", MWZ22, "--out", out, "--overwrite")
    assert code == 2 and "--overwrite refused: it holds mine.txt and no .labelling-output.json marker" in err
    assert (out / "mine.txt").read_text() == "keep me"
    ours = tmp_path / "ours"
    assert run_cli(monkeypatch, capsys, "ingest", MWZ22, "--out", ours)[0] == 0
    code, _, _ = run_cli(monkeypatch, capsys, "ingest", MWZ22, "--out", ours, "--overwrite", "--split-size", "2")
    assert code == 0 and list(datasets.load_from_disk(str(ours))) == ["train_0_2", "train_2_3"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--services", " , "], "--services ' , ' names no service"),
        (["--services", "hotel,spa"], "services ['spa'] are not in the schema"),
        (["--prefix", "my-train"], "split prefix 'my-train' is not a valid split name"),
    ],
)
def test_bad_options_are_one_line_errors(monkeypatch, capsys, args, message):
    code, _, err = run_cli(monkeypatch, capsys, "ingest", MWZ22, *args)
    assert code == 2 and message in err and err.count("\n") == 1
