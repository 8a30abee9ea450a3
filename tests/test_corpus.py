"""Corpus readers, partitioning, writing and summaries (labelling.corpus), on the bundled dev set and small fixtures."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import datasets
import pytest

from labelling.acts import Act, Entity, acts_to_json
from labelling.corpus import (
    DEFAULT_SPLIT_SIZE,
    FORMATS,
    bundled_dialogues,
    bundled_splits,
    cut_into_splits,
    dataset_features,
    detect_format,
    first_dialogues,
    read_corpus,
    summary,
    write_dataset,
)
from labelling.errors import CorpusError, LabellingError
from labelling.schema import Schema
from labelling.states import DELETE, fill
from labelling.turns import Turn
from tests.support.corpus_files import DEV_ZIP, FIXTURE_IDS, MWZ22, ROW_FIELDS


@pytest.fixture(scope="module")
def schema() -> Schema:
    """The bundled schema with the five evaluated services."""
    return Schema.load()


@pytest.fixture(scope="module")
def dev(schema) -> list[list[Turn]]:
    """The bundled MultiWOZ 2.1 dev set, read once for the module."""
    return read_corpus(DEV_ZIP, schema)


@pytest.fixture(scope="module")
def dev_by_id(dev) -> dict[str, list[Turn]]:
    """Dev dialogues by id."""
    return {d[0].dialogue_id: d for d in dev}


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- MultiWOZ 2.1 ----------------------------------------------------------------------------------------


def test_bundled_dev_set_has_999_dialogues_7365_turns_and_20_splits(dev):
    splits = cut_into_splits(dev)
    assert len(dev) == 999
    assert sum(len(d) for d in dev) == 7365
    assert len(splits) == 20
    assert list(splits)[:2] == ["train_0_50", "train_50_100"]
    assert list(splits)[-1] == "train_950_999"
    assert [t.dialogue_id for t in splits["train_0_50"]][0] == dev[0][0].dialogue_id


def test_every_dev_turn_has_the_history_the_contract_asks_for(dev):
    for dialogue in dev:
        for k, turn in enumerate(dialogue):
            assert turn.turn_id == k
            assert turn.dialogue_id.endswith(".json")
            assert len(turn.user_utterances) == len(turn.system_utterances) == k + 1
            assert turn.system_utterances[0] == ""
            if k:
                assert turn.system_utterances[-1] == dialogue[k - 1].system_response
                assert turn.last_slot_values == dialogue[k - 1].slot_values
                assert turn.last_system_response_acts == dialogue[k - 1].system_response_acts


def test_first_dev_turns_carry_gold_state_acts_and_deltas(dev_by_id):
    first, second = dev_by_id["PMUL1635.json"][:2]
    assert first.user_utterance == "I need to book a hotel in the east that has 4 stars ."
    assert first.system_response == "I can help you with that . What is your price range ?"
    assert first.domains == ["hotel", "train"]
    assert first.slot_values == {"hotel": {"area": "east", "stars": "4"}}
    assert first.last_slot_values == {}
    assert first.system_response_acts == [Act("Request", service="hotel", values=("price_range",))]
    assert first.last_system_response_acts == []
    assert second.turn_slot_values == {"hotel": {"parking": "yes", "internet": "yes"}}
    assert second.system_response_acts == [
        Act("Offer", entity=Entity("Hotel", (("price_range", "moderately priced"), ("name", "warkworth house"))))
    ]


def test_dev_states_hold_only_informable_slots_of_the_five_services(dev, schema):
    informable = schema.informable()
    values = set()
    for turn in (t for d in dev for t in d):
        for service, slots in turn.slot_values.items():
            assert set(slots) <= set(informable[service])
            values.update(slots.values())
    assert "dontcare" in values
    assert not values & {"", "none", "not mentioned", "dont care"}


def test_dev_keeps_removed_slots_as_delete_in_deltas(dev_by_id):
    deltas = [t.turn_slot_values for t in dev_by_id["PMUL0689.json"]]
    assert any(DELETE in slots.values() for delta in deltas for slots in delta.values())


def test_acts_of_unselected_services_are_dropped(dev):
    kinds = {a.entity.kind for t in (t for d in dev for t in d) for a in t.system_response_acts if a.entity}
    assert kinds <= {"Hotel", "Train", "Attraction", "Restaurant", "Taxi", "Entity"}


def test_a_service_subset_keeps_only_those_states_and_domains():
    hotel_only = Schema.load(services=("hotel",))
    dialogue = {d[0].dialogue_id: d for d in read_corpus(MWZ22, hotel_only)}["PMUL1579.json"]
    assert all(set(t.slot_values) <= {"hotel"} and t.domains == ["hotel"] for t in dialogue)
    assert any(t.slot_values for t in dialogue)


def test_plain_json_reads_like_the_zip(tmp_path, dev_by_id):
    with zipfile.ZipFile(DEV_ZIP) as z:
        source = {"PMUL1635": json.loads(z.read("val.json"))["PMUL1635"]}
    (dialogue,) = read_corpus(_write_json(tmp_path / "one.json", source))
    assert dialogue == dev_by_id["PMUL1635.json"]


def test_a_dialogue_ending_on_a_user_turn_has_no_reply_and_no_gold(tmp_path):
    log = [{"text": "hi , I need a taxi .", "metadata": {}, "dialog_act": {}}]
    (dialogue,) = read_corpus(_write_json(tmp_path / "c.json", {"X1": {"goal": {"taxi": {"x": 1}}, "log": log}}))
    (turn,) = dialogue
    assert (turn.dialogue_id, turn.system_response, turn.domains) == ("X1.json", "", ["taxi"])
    assert not turn.has_gold_state and not turn.has_gold_acts


def test_unset_slot_names_are_not_checked_but_set_unknown_ones_are(tmp_path):
    meta = {"train": {"book": {"booked": [], "ticket": ""}, "semi": {"day": "monday"}}}
    log = [{"text": "a train on monday", "metadata": {}}, {"text": "ok", "metadata": meta, "dialog_act": {}}]
    (dialogue,) = read_corpus(_write_json(tmp_path / "ok.json", {"D": {"log": log}}))
    assert dialogue[0].slot_values == {"train": {"day": "monday"}}
    meta["train"]["book"]["ticket"] = "10 pounds"
    with pytest.raises(CorpusError, match=r"bad\.json: dialogue D, log entry 1: unknown slot 'bookticket' of service 'train'"):
        read_corpus(_write_json(tmp_path / "bad.json", {"D": {"log": log}}))


# --- MultiWOZ 2.2 ----------------------------------------------------------------------------------------


def test_multiwoz22_fixture_gives_the_same_turns_as_the_21_source(dev_by_id):
    dialogues = read_corpus(MWZ22)
    assert [d[0].dialogue_id for d in dialogues] == FIXTURE_IDS
    assert all(len({s for t in d for s in t.slot_values}) >= 2 for d in dialogues)  # multi-domain, as the fixture promises
    for dialogue in dialogues:
        assert dialogue == dev_by_id[dialogue[0].dialogue_id]


def test_one_multiwoz22_file_reads_its_neighbouring_acts(dev_by_id):
    (dialogue,) = read_corpus(MWZ22 / "dialogues_002.json")
    assert dialogue == dev_by_id["PMUL1579.json"]


def test_multiwoz22_without_acts_file_has_states_but_no_gold_acts(tmp_path, dev_by_id):
    shutil.copy(MWZ22 / "dialogues_002.json", tmp_path / "dialogues_001.json")
    (dialogue,) = read_corpus(tmp_path)
    reference = dev_by_id["PMUL1579.json"]
    assert [t.slot_values for t in dialogue] == [t.slot_values for t in reference]
    assert all(not t.has_gold_acts for t in dialogue)


def test_multiwoz22_frame_actions_serve_as_acts_without_an_acts_file(tmp_path):
    (entry,) = json.loads((MWZ22 / "dialogues_002.json").read_text())
    entry["turns"] = entry["turns"][:2]
    hotel = next(f for f in entry["turns"][1]["frames"] if f["service"] == "hotel")
    hotel["actions"] = [{"act": "REQUEST", "slot": "area", "values": []}]
    (dialogue,) = read_corpus(_write_json(tmp_path / "dialogues_001.json", [entry]))
    assert dialogue[0].system_response_acts == [Act("Request", service="hotel", values=("area",))]


def test_multiwoz22_official_root_points_at_the_split_folders(tmp_path):
    shutil.copytree(MWZ22, tmp_path / "dev")
    with pytest.raises(CorpusError, match="pass one of its split folders: dev"):
        read_corpus(tmp_path)
    assert len(read_corpus(tmp_path / "dev")) == 3


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["turns"][0]["frames"][2]["state"]["slot_values"].update({"hotel-colour": ["red"]}),
            "unknown slot 'hotel-colour'",
        ),
        (lambda d: d["turns"][0]["frames"][0].update(service="spa"), "unknown service 'spa'"),
        (lambda d: d["turns"][1].update(speaker="USER"), "turn 1: not a SYSTEM turn"),
        (lambda d: d.update(turns=[]), "has no turns"),
        (lambda d: d["turns"][0].update(frames="hotel"), "turn 0, frames: found str"),
    ],
)
def test_bad_multiwoz22_dialogues_name_file_dialogue_and_turn(tmp_path, edit, message):
    (entry,) = json.loads((MWZ22 / "dialogues_002.json").read_text())
    edit(entry)
    path = _write_json(tmp_path / "dialogues_001.json", [entry])
    with pytest.raises(CorpusError, match=message) as caught:
        read_corpus(tmp_path)
    assert str(path) in str(caught.value) and "PMUL1579.json" in str(caught.value)


def test_unknown_slot_error_lists_the_valid_names(tmp_path):
    (entry,) = json.loads((MWZ22 / "dialogues_002.json").read_text())
    entry["turns"][2]["frames"][2]["state"]["slot_values"]["hotel-colour"] = ["red"]
    with pytest.raises(CorpusError) as caught:
        read_corpus(_write_json(tmp_path / "dialogues_001.json", [entry]))
    assert "turn 2" in str(caught.value)
    assert "expected one of: price range, type, parking" in str(caught.value)


# --- turn-level datasets in the reference's row format --------------------------------------------------


def _reference_rows(dialogues: list[list[Turn]], schema: Schema) -> list[dict]:
    """Rows as the reference stored them: filled states, acts as JSON strings, and no has_gold columns."""
    return [
        {
            "dialogue_id": t.dialogue_id,
            "turn_id": t.turn_id,
            "domains": t.domains,
            "system_utterances": t.system_utterances,
            "user_utterances": t.user_utterances,
            "system_response": t.system_response,
            "slot_values": fill(t.slot_values, schema),
            "last_slot_values": fill(t.last_slot_values, schema),
            "turn_slot_values": fill(t.turn_slot_values, schema),
            "system_response_acts": acts_to_json(t.system_response_acts) or [""],
            "last_system_response_acts": acts_to_json(t.last_system_response_acts) or [""],
        }
        for d in dialogues
        for t in d
    ]


def test_reference_format_dataset_gives_the_same_turns_in_corpus_order(tmp_path, dev, schema):
    dialogues = dev[:12]
    rows = _reference_rows(dialogues, schema)
    cut = sum(len(d) for d in dialogues[:10])
    # Saved with the later split first, as a lexicographic listing would put train_10_12 before train_0_10.
    parts = {"train_10_12": rows[cut:], "train_0_10": rows[:cut]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in parts.items()}).save_to_disk(str(tmp_path / "ref"))
    assert detect_format(tmp_path / "ref") == "hf"
    assert read_corpus(tmp_path / "ref") == dialogues


def test_rows_without_gold_columns_give_turns_without_gold(tmp_path, dev):
    keep = ["dialogue_id", "turn_id", "system_utterances", "user_utterances", "system_response"]
    rows = [{k: v for k, v in t.to_row(Schema.load()).items() if k in keep} for t in dev[0]]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "plain"))
    (dialogue,) = read_corpus(tmp_path / "plain")
    assert [t.without_gold() for t in dev[0]] == dialogue


def test_rows_missing_required_columns_are_refused(tmp_path):
    datasets.Dataset.from_list([{"dialogue_id": "a.json", "text": "hi"}]).save_to_disk(str(tmp_path / "odd"))
    with pytest.raises(CorpusError, match=r"lacks columns \['turn_id', 'user_utterances', 'system_utterances'\]"):
        read_corpus(tmp_path / "odd")


def test_rows_with_gaps_in_turn_ids_are_refused(tmp_path, dev, schema):
    rows = [t.to_row(schema) for t in dev[0]]
    datasets.Dataset.from_list(rows[:1] + rows[2:], features=dataset_features(schema)).save_to_disk(str(tmp_path / "gap"))
    with pytest.raises(CorpusError, match="expected 0, 1, 2"):
        read_corpus(tmp_path / "gap")


# --- detection, partitioning, writing, summary ----------------------------------------------------------


def test_format_detection(tmp_path):
    assert detect_format(DEV_ZIP) == "multiwoz21"
    assert detect_format(MWZ22) == "multiwoz22"
    assert detect_format(MWZ22 / "dialogues_001.json") == "multiwoz22"
    assert detect_format("someone/multiwoz_turns") == "hf"  # not a local path: a hub name
    with pytest.raises(CorpusError, match="no such file or folder"):
        detect_format(tmp_path / "missing.zip")
    with pytest.raises(CorpusError, match="acts file"):
        detect_format(MWZ22 / "dialog_acts.json")


def test_format_override_and_unknown_format(tmp_path):
    with pytest.raises(CorpusError, match="is a folder"):
        read_corpus(MWZ22, format="multiwoz21")
    with pytest.raises(CorpusError, match="unknown corpus format 'csv'"):
        read_corpus(MWZ22, format="csv")
    assert set(FORMATS) == {"multiwoz21", "multiwoz22", "hf"}


def test_partition_names_are_half_open_and_the_last_split_is_shorter(dev):
    splits = cut_into_splits(dev[:7], size=3, prefix="dev")
    assert list(splits) == ["dev_0_3", "dev_3_6", "dev_6_7"]
    assert [t.dialogue_id for t in splits["dev_6_7"]] == [t.dialogue_id for t in dev[6]]
    with pytest.raises(LabellingError, match="at least 1"):
        cut_into_splits(dev, size=0)
    with pytest.raises(LabellingError, match="not a valid split name"):
        cut_into_splits(dev, prefix="my-train")


def test_written_dataset_loads_back_to_the_same_turns(tmp_path, dev, schema):
    splits = cut_into_splits(dev[:5], size=2)
    out = write_dataset(splits, tmp_path / "out", schema)
    loaded = datasets.load_from_disk(str(out))
    assert list(loaded) == ["train_0_2", "train_2_4", "train_4_5"]
    assert set(loaded["train_0_2"].column_names) == ROW_FIELDS
    assert loaded["train_0_2"].features == dataset_features(schema)
    assert [Turn.from_row(r) for r in loaded["train_4_5"]] == splits["train_4_5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left behind


def test_writing_refuses_a_non_empty_folder_and_overwrites_only_one_it_wrote(tmp_path, dev, schema):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    splits = cut_into_splits(dev[:2])
    with pytest.raises(CorpusError, match="pass --overwrite"):
        write_dataset(splits, out, schema)
    with pytest.raises(CorpusError, match=r"--overwrite refused: it holds keep.txt and no .labelling-output.json marker"):
        write_dataset(splits, out, schema, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    ours = tmp_path / "ours"
    write_dataset(cut_into_splits(dev[:1]), ours, schema)
    write_dataset(splits, ours, schema, overwrite=True)
    assert list(datasets.load_from_disk(str(ours))) == ["train_0_2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "out"]  # nothing left beside them
    (ours / "notes.txt").write_text("added by hand")
    with pytest.raises(CorpusError, match="--overwrite refused: it holds notes.txt, which `labelling` did not write"):
        write_dataset(splits, ours, schema, overwrite=True)


def test_empty_states_and_acts_still_get_typed_columns(tmp_path, schema):
    turn = Turn("x.json", 0, ["hello"], [""], "")
    loaded = datasets.load_from_disk(str(write_dataset({"train_0_1": [turn]}, tmp_path / "o", schema)))
    row = loaded["train_0_1"][0]
    assert row["slot_values"]["hotel"]["area"] == "" and row["system_response_acts"] == [""]
    assert row["has_gold"] is False and Turn.from_row(row) == turn


def test_summary_counts_dialogues_domains_and_gold(dev):
    counts = summary(cut_into_splits(dev))
    assert (counts.dialogues, counts.turns, counts.splits) == (999, 7365, 20)
    assert counts.gold_state_turns == counts.gold_acts_turns == 7365
    assert set(counts.domains) == {"hotel", "train", "attraction", "restaurant", "taxi"}
    assert counts.domains["train"] == max(counts.domains.values())


def test_first_dialogues_keeps_dialogue_prefixes(dev):
    turns = [t for d in dev[:4] for t in d]
    kept = first_dialogues(turns, dialogues=2, per_dialogue=3)
    assert [t.key for t in kept] == [t.key for d in dev[:2] for t in d[:3]]
    assert first_dialogues(turns) == turns
    assert [t.key for t in first_dialogues(turns, dialogues=1)] == [t.key for t in dev[0]]


def test_the_bundled_splits_are_the_bundled_corpus_cut_as_ingest_cuts_it(schema, dev):
    assert bundled_dialogues(schema) == dev
    splits = bundled_splits(schema)
    assert splits == cut_into_splits(dev, DEFAULT_SPLIT_SIZE)
    splits["train_0_50"].clear()  # each call gets new lists: a caller cannot change what the next one reads
    assert bundled_splits(schema)["train_0_50"]
