"""Dialogue states (labelling.states): blanks, deltas, flattening and the schema normaliser."""

from __future__ import annotations

import random

import pytest

from labelling.schema import DONTCARE
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
from tests.support.corpus_files import INFORMABLE


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
