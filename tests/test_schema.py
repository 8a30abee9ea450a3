"""The service schema (labelling.schema): services, slots, names, hints and bad schema files."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelling.errors import SchemaError
from labelling.schema import DONTCARE, EVALUATED_SERVICES, Schema, clean_slot_name
from tests.support.corpus_files import INFORMABLE


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
