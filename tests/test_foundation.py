"""Unit tests for the foundation modules: schema, states, acts and the turn record."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import pytest

from labelling.acts import ACT_FIELDS, Act, Entity, acts_from_gold, acts_from_json, acts_to_json
from labelling.errors import CorpusError, SchemaError
from labelling.schema import DONTCARE, EVALUATED_SERVICES, Schema, clean_slot_name
from labelling.states import (
    DELETE,
    SchemaNormalizer,
    apply_delta,
    clean_value,
    compute_delta,
    fill,
    flatten,
    restrict,
    strip_blanks,
)
from labelling.turns import Turn

DEV_ZIP = Path(__file__).resolve().parents[1] / "labelling" / "data" / "multiwoz21_dev.json.zip"

# docs/method.md §1.3: the informable slots of the five evaluated services, in schema order.
INFORMABLE = {
    "hotel": ("price range", "type", "parking", "book day", "book people", "book stay", "stars", "internet", "name", "area"),
    "train": ("arrive by", "departure", "day", "book people", "leave at", "destination"),
    "attraction": ("area", "name", "type"),
    "restaurant": ("price range", "area", "food", "name", "book day", "book people", "book time"),
    "taxi": ("leave at", "destination", "departure", "arrive by"),
}


@pytest.fixture(scope="module")
def schema() -> Schema:
    """The bundled schema, loaded once for the module."""
    return Schema.load()


# --- schema --------------------------------------------------------------------------------------------------


def test_bundled_schema_has_the_five_services_and_thirty_slots_in_order(schema):
    assert schema.names == EVALUATED_SERVICES
    assert schema.informable() == INFORMABLE
    assert sum(len(slots) for slots in schema.informable().values()) == 30


def test_all_services_are_kept_when_asked(schema):
    full = Schema.load(services=None)
    assert {"bus", "hospital", "police"} <= set(full.names)
    assert "bus" not in schema


@pytest.mark.parametrize(
    ("service", "name", "identifier"),
    [
        ("hotel", "price range", "price_range"),
        ("hotel", "book people", "book_people"),
        ("train", "leave at", "leave_at"),
        ("train", "trainid", "id"),
        ("attraction", "entrancefee", "entrance_fee"),
        ("attraction", "openhours", "open_hours"),
    ],
)
def test_slot_identifiers_map_both_ways(schema, service, name, identifier):
    svc = schema.service(service)
    assert svc.slot(name).identifier == identifier
    assert svc.slot_by_identifier(identifier).name == name


@pytest.mark.parametrize(
    ("raw", "service", "clean"),
    [
        ("hotel-bookpeople", "hotel", "book people"),
        ("pricerange", None, "price range"),
        ("leaveat", None, "leave at"),
        ("arriveby", None, "arrive by"),
        ("book", None, "book"),
        ("Book Day", None, "book day"),
    ],
)
def test_clean_slot_name(raw, service, clean):
    assert clean_slot_name(raw, service) == clean


def test_categorical_slots_accept_dontcare_and_free_text_slots_have_no_values(schema):
    for service in schema.services:
        for slot in service.slots:
            assert (DONTCARE in slot.values) == slot.categorical, (service.name, slot.name)


def test_yes_no_free_collapses_to_yes_no(schema):
    hotel = schema.service("hotel")
    assert hotel.slot("parking").values == ("yes", "no", DONTCARE)
    assert hotel.slot("internet").values == ("yes", "no", DONTCARE)


@pytest.mark.parametrize(
    ("service", "slot", "hint"),
    [
        ("hotel", "stars", "int"),
        ("hotel", "book people", "int"),
        ("train", "book people", "int"),
        ("hotel", "area", "str"),
        ("hotel", "name", "str"),
        ("train", "leave at", "str"),
    ],
)
def test_type_hints(schema, service, slot, hint):
    assert schema.service(service).slot(slot).type_hint == hint


def test_informable_and_request_only_slots(schema):
    assert schema.is_informable("hotel", "area")
    assert not schema.is_informable("hotel", "phone")
    assert not schema.is_informable("bus", "day")


def test_unknown_service_error_lists_the_known_ones(schema):
    with pytest.raises(SchemaError) as err:
        schema.service("bus")
    assert all(name in str(err.value) for name in ("'bus'", *EVALUATED_SERVICES))
    with pytest.raises(SchemaError, match=r"spaceship.*hotel"):
        Schema.load(services=("hotel", "spaceship"))


def write(tmp_path: Path, text: str) -> Path:
    """A schema file holding ``text``."""
    path = tmp_path / "schema.json"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"services": []}', "expected a JSON list of services, got dict"),
        ('[{"service_name": "hotel", "intents": []}]', "service #0 is malformed"),
        ('["hotel"]', "service #0 is malformed"),
        (
            '[{"service_name": "hotel", "slots": [{"name": "hotel-area"}], "intents": [{"required_slots": ["hotel-stars"]}]}]',
            "malformed",
        ),
    ],
)
def test_malformed_schema_files_name_the_file_and_the_problem(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SchemaError, match=message) as err:
        Schema.load(path, services=None)
    assert str(path) in str(err.value)


def test_missing_schema_file(tmp_path):
    with pytest.raises(SchemaError, match="schema file not found"):
        Schema.load(tmp_path / "absent.json")


def test_a_folder_given_as_schema_is_a_schema_error(tmp_path):
    with pytest.raises(SchemaError):
        Schema.load(tmp_path)


# --- states --------------------------------------------------------------------------------------------------


def test_strip_blanks_drops_unset_values_and_empty_services():
    state = {
        "hotel": {"area": "east", "stars": "", "name": "not mentioned", "type": "none", "day": None},
        "taxi": {"departure": " "},
    }
    assert strip_blanks(state) == {"hotel": {"area": "east"}}
    assert strip_blanks(None) == {}


def test_fill_gives_every_informable_slot_and_strip_undoes_it(schema):
    state = {"hotel": {"area": "east"}, "train": {"day": "monday"}}
    filled = fill(state, schema)
    assert {svc: tuple(slots) for svc, slots in filled.items()} == INFORMABLE
    assert filled["hotel"]["area"] == "east" and filled["hotel"]["stars"] == ""
    assert strip_blanks(filled) == state


def test_restrict_keeps_only_informable_slots(schema):
    state = {"hotel": {"area": "east", "phone": "0123"}, "bus": {"day": "monday"}}
    assert restrict(state, schema) == {"hotel": {"area": "east"}}


def test_clean_value_collapses_dontcare_spellings():
    assert [clean_value(v) for v in ("Don't Care", "dont care", "any", " East ")] == [DONTCARE, DONTCARE, DONTCARE, "east"]


def test_compute_delta_orders_changed_then_added_then_removed():
    prior = {"hotel": {"area": "east", "stars": "4", "name": "acorn"}, "taxi": {"departure": "ely"}}
    new = {"hotel": {"parking": "yes", "stars": "3", "name": "acorn"}, "train": {"day": "monday"}}
    delta = compute_delta(prior, new)
    assert list(delta) == ["hotel", "train", "taxi"]
    assert list(delta["hotel"].items()) == [("stars", "3"), ("parking", "yes"), ("area", DELETE)]
    assert delta["taxi"] == {"departure": DELETE}


def test_compute_delta_ignores_blanks_and_unchanged_slots():
    prior = {"hotel": {"area": "east", "stars": ""}}
    assert compute_delta(prior, {"hotel": {"area": "east", "name": "not mentioned"}}) == {}
    assert compute_delta(None, {"hotel": {"area": DONTCARE}}) == {"hotel": {"area": DONTCARE}}


def random_state(rng: random.Random) -> dict[str, dict[str, str]]:
    """A small random state over a few services, slots and values, some of them blank."""
    values = ["east", "west", DONTCARE, ""]
    return {
        svc: {slot: rng.choice(values) for slot in ("area", "name", "stars") if rng.random() < 0.6} for svc in ("hotel", "train")
    }


def test_apply_delta_inverts_compute_delta():
    rng = random.Random(7)
    for _ in range(300):
        prior, new = random_state(rng), random_state(rng)
        assert apply_delta(prior, compute_delta(prior, new)) == strip_blanks(new)


def test_apply_delta_removes_on_delete_or_empty():
    prior = {"hotel": {"area": "east", "stars": "4"}, "taxi": {"departure": "ely"}}
    assert apply_delta(prior, {"hotel": {"area": DELETE, "stars": ""}, "train": {"day": "monday"}}) == {
        "taxi": {"departure": "ely"},
        "train": {"day": "monday"},
    }
    assert prior["hotel"] == {"area": "east", "stars": "4"}  # the prior state is not modified


def test_flatten():
    assert flatten({"hotel": {"area": "east", "stars": ""}, "taxi": {}}) == {("hotel", "area"): "east"}


@pytest.fixture(scope="module")
def normalizer(schema) -> SchemaNormalizer:
    """A normaliser over the bundled schema."""
    return SchemaNormalizer(schema)


def test_normalizer_maps_names_and_categorical_values(normalizer):
    state = {
        "Hotel": {"price_range": "Cheap", "type": "guest house", "area": "don't care"},
        "restaurant": {"pricerange": "moderate"},
    }
    assert normalizer.normalize(state) == {
        "hotel": {"price range": "cheap", "type": "guesthouse", "area": DONTCARE},
        "restaurant": {"price range": "moderate"},
    }


def test_normalizer_drops_unmatched_categorical_values_and_unknown_services(normalizer):
    state = {"hotel": {"price range": "cheapest", "book day": "mon", "stars": "two"}, "spaceship": {"area": "east"}}
    assert normalizer.normalize(state) == {}


def test_normalizer_passes_free_text_values_unchanged(normalizer):
    state = {"train": {"leave at": "after 3pm", "destination": "cambridge"}, "hotel": {"name": "acorn guest house"}}
    assert normalizer.normalize(state) == state
    assert normalizer.value("restaurant", "food", "Modern European") == "modern european"


# --- acts ----------------------------------------------------------------------------------------------------

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


# --- turns ---------------------------------------------------------------------------------------------------


def make_turn() -> Turn:
    """A gold turn whose delta has a changed, an added and a removed slot, in two services."""
    last = {"hotel": {"price range": "cheap", "stars": "4", "area": "east"}}
    now = {"hotel": {"price range": "moderate", "area": "east", "parking": "yes"}, "train": {"day": "monday"}}
    return Turn(
        dialogue_id="MUL0001.json",
        turn_id=1,
        user_utterances=["i need a cheap hotel", "moderate is fine, and a train on monday"],
        system_utterances=["", "there are none, what about moderate?"],
        system_response="the acorn is moderate. anything else?",
        domains=["hotel", "train"],
        slot_values=now,
        last_slot_values=last,
        turn_slot_values=compute_delta(last, now),
        system_response_acts=[Act("Inform", entity=HOTEL), Act("RequestAlternatives")],
        last_system_response_acts=[],
    )


def test_turn_row_round_trip_with_gold(schema):
    turn = make_turn()
    row = turn.to_row(schema)
    assert row["has_gold"] and row["has_gold_acts"]
    assert row["turn_slot_values"]["hotel"]["stars"] == DELETE
    assert row["last_system_response_acts"] == [""]
    assert Turn.from_row(json.loads(json.dumps(row))) == turn


def test_turn_row_round_trip_without_gold(schema):
    turn = make_turn().without_gold()
    assert not turn.has_gold_state and not turn.has_gold_acts and turn.domains == []
    row = turn.to_row(schema)
    assert not row["has_gold"] and not row["has_gold_acts"]
    assert strip_blanks(row["slot_values"]) == {}
    assert Turn.from_row(row) == turn


def test_reference_rows_with_multiwoz_act_strings(schema):
    row = make_turn().to_row(schema)
    del row["has_gold"], row["has_gold_acts"]
    row["system_response_acts"] = [
        "{'service': 'restaurant', 'act': 'inform', 'slot_name': 'price', 'value': 'cheap'}",
        "{'service': 'general', 'act': 'bye', 'slot_name': 'none', 'value': 'none'}",
    ]
    turn = Turn.from_row(row)
    assert turn.slot_values == make_turn().slot_values
    assert turn.system_response_acts == [Act("Inform", entity=Entity("Restaurant", (("price_range", "cheap"),))), Act("Goodbye")]


def test_turn_accessors():
    turn = make_turn()
    assert turn.user_utterance == "moderate is fine, and a train on monday"
    assert turn.last_system_utterance == "there are none, what about moderate?"
    assert turn.key == ("MUL0001.json", 1)
