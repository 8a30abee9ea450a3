"""The turn record (labelling.turns): rows with and without gold, reference act strings, accessors."""

from __future__ import annotations

import json

from labelling.acts import Act, Entity
from labelling.states import (
    DELETE,
    compute_delta,
    strip_blanks,
)
from labelling.turns import Turn

HOTEL = Entity("Hotel", (("name", "acorn"), ("price_range", "cheap")))  # as in test_acts.py


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
