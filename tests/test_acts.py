"""System dialogue acts (labelling.acts): JSON round trips and acts from gold rows."""

from __future__ import annotations

import json
import zipfile

import pytest

from labelling.acts import ACT_FIELDS, Act, Entity, acts_from_gold, acts_from_json, acts_to_json
from labelling.data import BUNDLED_CORPUS as DEV_ZIP
from labelling.errors import CorpusError

HOTEL = Entity("Hotel", (("name", "acorn"), ("price_range", "cheap")))
ONE_OF_EACH = [
    Act(
        kind,
        entity=HOTEL if "entity" in fields else None,
        service="hotel" if "service" in fields else None,
        values=("price_range", "area") if "values" in fields else None,
        num_choices="3" if "num_choices" in fields else None,
    )
    for kind, fields in ACT_FIELDS.items()
]


@pytest.mark.parametrize("act", ONE_OF_EACH, ids=[a.kind for a in ONE_OF_EACH])
def test_every_act_kind_survives_json(act):
    text = act.to_json()
    assert json.loads(text)["__type"] == act.kind
    assert Act.from_json(text) == act


def test_act_json_layout():
    act = Act("Inform", entity=HOTEL)
    assert act.to_dict() == {"__type": "Inform", "entity": {"__type": "Hotel", "name": "acorn", "price_range": "cheap"}}
    assert Act("Request", service="hotel", values=("area",)).to_dict() == {
        "__type": "Request",
        "service": "hotel",
        "values": ["area"],
    }
    assert Act("Goodbye").to_json() == '{"__type": "Goodbye"}'


def test_act_list_json_skips_the_empty_placeholder():
    acts = [Act("Greeting"), Act("Offer", entity=HOTEL, num_choices="2")]
    assert acts_from_json([*acts_to_json(acts), ""]) == acts
    assert acts_from_json([""]) == []


def test_invalid_acts_are_rejected():
    with pytest.raises(ValueError, match="unknown act"):
        Act("Dance")
    with pytest.raises(ValueError, match="Goodbye takes no entity"):
        Act("Goodbye", entity=HOTEL)
    with pytest.raises(ValueError, match="unknown act"):
        Act.from_dict({"__type": "Bus"})


def test_gold_rows_become_typed_acts():
    acts = acts_from_gold(
        {
            "Booking-Book": [["Ref", "ab12"], ["People", "2"]],
            "general-bye": [["none", "none"]],
            "Hotel-Request": [["Price", "?"]],
            "Hotel-Inform": [["Internet", "none"], ["Stars", "4"]],
            "Train-OfferBook": [["Id", "TR1234"], ["Leave", "10:00"]],
            "Attraction-Recommend": [["Fee", "free"], ["Open", "all day"]],
            "general-reqmore": [["none", "none"]],
        }
    )
    assert acts == [
        Act("NotifySuccess", service="booking", entity=Entity("Entity", (("ref", "ab12"), ("book_people", "2")))),
        Act("Goodbye"),
        Act("Request", service="hotel", values=("price_range",)),
        Act("Inform", entity=Entity("Hotel", (("internet", "yes"), ("stars", "4")))),
        Act("Confirm", entity=Entity("Train", (("id", "tr1234"), ("leave_at", "10:00")))),
        Act("Offer", entity=Entity("Attraction", (("entrance_fee", "free"), ("open_hours", "all day")))),
        Act("RequestAlternatives"),
    ]


def test_gold_failure_acts_without_slots_carry_no_entity():
    assert acts_from_gold({"Hotel-NoBook": [["none", "none"]]}) == [Act("NotifyFailure", service="hotel")]


@pytest.mark.parametrize(
    ("dialog_act", "message"),
    [({"Hotel-Dance": [["none", "none"]]}, "unknown dialogue act"), ({"Hotel-Inform": [["area"]]}, "has a row")],
)
def test_bad_gold_rows_raise_corpus_errors(dialog_act, message):
    with pytest.raises(CorpusError, match=message) as err:
        acts_from_gold(dialog_act, where="val.json:PMUL1635:0")
    assert "val.json:PMUL1635:0" in str(err.value)


def test_gold_rows_that_are_not_a_list_are_named_as_such():
    with pytest.raises(CorpusError, match="expected a list of") as err:
        acts_from_gold({"Hotel-Inform": "east"}, where="val.json:PMUL1635:0")
    assert "unknown dialogue act" not in str(err.value)


def test_every_gold_act_of_the_dev_set_survives_json():
    with zipfile.ZipFile(DEV_ZIP) as archive:
        dialogues = json.loads(archive.read("val.json"))
    count = 0
    for dialogue_id, dialogue in dialogues.items():
        for index, entry in enumerate(dialogue["log"]):
            acts = acts_from_gold(entry["dialog_act"], where=f"{dialogue_id}:{index}")
            assert acts_from_json(acts_to_json(acts)) == acts, (dialogue_id, index)
            count += len(acts)
    assert len(dialogues) == 999 and count > 15_000
