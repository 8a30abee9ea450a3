"""Export of a group to a Hugging Face dataset, and the export / evaluate / ingest --corpus commands, on a real nx-27017."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

import datasets
import pytest
import typer
from typer.testing import CliRunner

from cli import store_commands
from cli.app import main
from labelling.errors import LabellingError
from labelling.fleet import export, store
from labelling.method.metrics import MetricsAccumulator
from tests.support.mongo_fixture import complete_with_scripted_labels, ingest_small, new_group, short_dialogues, unique
from tests.support.partition_worker import tiny_job

MWZ22 = Path(__file__).resolve().parents[1] / "fixtures" / "multiwoz22"
SECRET_URI = "mongodb://labeller:s3cret@db.example:27017/labels"


@pytest.fixture(scope="module")
def corpus(mongo_uri, dev_dialogues, schema):
    """Three splits of two 4-turn dialogues."""
    return ingest_small(short_dialogues(dev_dialogues, 6, 4), schema, split_size=2)


@pytest.fixture(scope="module")
def labelled(corpus):
    """A group with every partition labelled (scripted labels), whose config holds a URI with a password."""
    config = tiny_job()
    config.dst.model.model_name_or_path = SECRET_URI  # any string of the config may hold one; scripted labels load no model
    group = new_group(corpus[0], config)
    metrics = [complete_with_scripted_labels(group, split) for split in corpus[1]]
    return group, metrics


def _reference_hash(entries: list[dict]) -> str:
    """docs/method.md §10.3, spelled out independently of the code under test."""
    text = json.dumps(entries, sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode()[:12].replace("-", "x")


def test_the_export_reloads_with_one_row_per_turn_the_reference_name_and_a_card(connected, corpus, labelled, tmp_path):
    group, _ = labelled
    result = export.export_group(group, tmp_path / "out")
    loaded = datasets.load_from_disk(str(tmp_path / "out"))

    turns = [t for split in corpus[1] for t in store.load_turns(corpus[0], split)]
    assert list(loaded) == ["train", "train_minus_64", "valid_64"]
    assert [(r["dialogue_id"], r["turn_id"]) for r in loaded["train"]] == [t.key for t in turns]
    valid, rest = set(loaded["valid_64"]["dialogue_id"]), set(loaded["train_minus_64"]["dialogue_id"])
    assert len(valid) == 3 and not valid & rest and valid | rest == {t.dialogue_id for t in turns}  # half of 6 dialogues
    assert len(loaded["valid_64"]) + len(loaded["train_minus_64"]) == len(turns) == result.num_turns

    entries = sorted(
        (
            {
                "group_id": group,
                "run_id": e["run_id"],
                "num_logs": 8,
                "labelled_dataset_path_or_name": corpus[0],
                "labelled_dataset_split_name": e["split"],
            }
            for e in store.manifest_entries(group)
        ),
        key=lambda e: e["run_id"],
    )
    assert result.hash == _reference_hash(entries) and result.entries == entries
    assert result.name == f"manifest_self_labelled_{group}_6_{result.hash}"

    card = (tmp_path / "out" / "README.md").read_text()
    for expected in (result.name, f"group: `{group}`", "dialogues: 6, turns: 24", result.hash, "labeller:***@db.example"):
        assert expected in card
    assert all(e["run_id"] in card for e in entries) and "s3cret" not in card


def test_rows_hold_the_predicted_labels_and_no_gold(connected, corpus, labelled, tmp_path):
    group, _ = labelled
    export.export_group(group, tmp_path / "out")
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    assert "has_gold" not in train.column_names and "has_gold_acts" not in train.column_names
    for row in train:
        time = f"{row['turn_id']:02d}:00"
        assert row["slot_values"]["taxi"]["leave at"] == time
        assert {v for service in row["slot_values"].values() for v in service.values()} == {"", time}
        assert row["domains"] == ["taxi"] and row["labelled_split"] in corpus[1]
        expected_last = [] if row["turn_id"] == 0 else [f"{row['turn_id'] - 1:02d}:00"]
        assert [json.loads(a)["entity"]["leave_at"] for a in row["last_system_response_acts"] if a] == expected_last


def test_an_incomplete_group_is_refused_unless_partial_exports_are_allowed(connected, corpus, tmp_path):
    group = new_group(corpus[0], tiny_job())
    complete_with_scripted_labels(group, corpus[1][0])
    with pytest.raises(LabellingError, match=f"2 incomplete partitions: {corpus[1][1]}, {corpus[1][2]}.*--allow-partial"):
        export.export_group(group, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    result = export.export_group(group, tmp_path / "out", allow_partial=True)
    assert result.num_turns == 8 and result.missing == corpus[1][1:] and len(result.entries) == 1
    assert "partial export" in (tmp_path / "out" / "README.md").read_text()


def test_a_merge_with_a_duplicated_dialogue_is_rejected():
    row = {"dialogue_id": "MUL1.json", "turn_id": 0, "labelled_split": "train_0_1"}
    export.check_no_duplicates([row, {**row, "turn_id": 1}])
    with pytest.raises(LabellingError, match="duplicated rows"):
        export.check_no_duplicates([row, {**row, "turn_id": 1, "labelled_split": "train_1_2"}])


def test_pushing_without_a_token_or_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(LabellingError, match="HF_TOKEN is not set"):
        export.push_to_hub(tmp_path, "someone/data")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LabellingError, match="offline mode is on"):
        export.push_to_hub(tmp_path, "someone/data")


# --- the commands --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def commands() -> typer.Typer:
    """The two commands as cli.app registers them."""
    app = typer.Typer()
    app.command("export")(store_commands.export)
    app.command("evaluate")(store_commands.evaluate)
    return app


def test_evaluate_scores_the_group_and_each_partition(connected, corpus, labelled, commands):
    group, metrics = labelled
    result = CliRunner().invoke(commands, ["evaluate", "--group", group, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["overall"] == sum(metrics, MetricsAccumulator()).summary()
    assert [p["metrics"] for p in report["partitions"]] == [m.summary() for m in metrics]
    table = CliRunner().invoke(commands, ["evaluate", "--group", group])
    assert table.exit_code == 0 and all(split in table.stdout for split in corpus[1]) and "24/24" in table.stdout


def test_evaluate_breaks_errors_down_and_writes_an_html_report(connected, labelled, commands, tmp_path):
    group, metrics = labelled
    result = CliRunner().invoke(commands, ["evaluate", "--group", group, "--json", "--html", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["errors"] == json.loads(json.dumps(sum(metrics, MetricsAccumulator()).errors(top=10)))
    page = (tmp_path / "rep" / "report.html").read_text()
    png = (tmp_path / "rep" / "quality.png").read_bytes()
    assert report["html"] == str(tmp_path / "rep" / "report.html")
    assert png.startswith(b"\x89PNG") and '<img src="quality.png"' in page and "JGA (exact)" in page
    assert all(p["split"] in page for p in report["partitions"])
    table = CliRunner().invoke(commands, ["evaluate", "--group", group])
    assert "most errors" in table.stdout


def test_export_command_writes_the_dataset_and_refuses_an_unknown_group(connected, labelled, commands, tmp_path):
    group, _ = labelled
    result = CliRunner().invoke(commands, ["export", "--group", group, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"manifest_self_labelled_{group}_6_" in result.stdout
    assert len(datasets.load_from_disk(str(tmp_path / "out"))["train"]) == 24
    unknown = CliRunner().invoke(commands, ["export", "--group", "nope", "--out", str(tmp_path / "other")])
    assert isinstance(unknown.exception, store.StoreError) and group in str(unknown.exception)


def test_ingest_writes_the_corpus_to_mongodb_with_corpus(connected, monkeypatch, capsys):
    name = unique("mwz22")
    monkeypatch.setattr(sys, "argv", ["labelling", "ingest", str(MWZ22), "--corpus", name, "--split-size", "2"])
    main()
    assert "stored in MongoDB" in capsys.readouterr().out
    splits = store.corpus_splits(name)
    assert list(splits) == ["train_0_2", "train_2_3"] and sum(splits.values()) == 22
