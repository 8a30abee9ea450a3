"""Grounding: label values the turn never says are dropped (DST against the turn's text, acts against the response)."""

from __future__ import annotations

from labelling import config
from labelling.acts import Act, Entity
from labelling.method.canonical import Canonicaliser, ground_acts, ground_state

PRIOR = {"restaurant": {"food": "chinese", "area": "north"}}
TEXT = ["the lotus garden is a chinese place in the north .", "great , book it for four people on friday please ."]


def test_an_unsaid_new_value_is_dropped_and_said_ones_stay():
    state = {
        "restaurant": {"food": "chinese", "area": "north", "book people": "4", "book day": "friday"},
        "hotel": {"type": "guesthouse"},
    }
    grounded, dropped = ground_state(PRIOR, state, TEXT)
    assert grounded == {"restaurant": {"food": "chinese", "area": "north", "book people": "4", "book day": "friday"}}
    assert dropped == [("hotel", "type", "guesthouse")]


def test_an_unsaid_change_puts_the_prior_value_back():
    grounded, dropped = ground_state(PRIOR, {"restaurant": {"food": "italian", "area": "north"}}, TEXT)
    assert grounded == PRIOR
    assert dropped == [("restaurant", "food", "italian")]


def test_yes_no_dontcare_deletions_and_copies_from_the_prior_state_count_as_said():
    state = {
        "restaurant": {"food": "chinese"},  # area deleted
        "hotel": {"parking": "yes", "price range": "dontcare", "area": "north"},  # area copied from the restaurant
    }
    grounded, dropped = ground_state(PRIOR, state, ["", "i need a hotel with parking in the same part of town ."])
    assert grounded == state
    assert dropped == []


def test_acts_lose_unsaid_fields_and_acts_left_empty():
    response = "there are 2 guesthouses in the north . shall i book one ?"
    acts = [
        Act("Inform", entity=Entity("Hotel", (("type", "guesthouse"), ("area", "north"), ("choice", "2")))),
        Act("Inform", entity=Entity("Train", (("departure", "birmingham new street"),))),
        Act("Offer", entity=Entity("Hotel", (("area", "east"), ("parking", "yes")))),
        Act("Goodbye"),
    ]
    grounded, dropped = ground_acts(acts, response)
    assert grounded == [
        Act("Inform", entity=Entity("Hotel", (("type", "guesthouse"), ("area", "north"), ("choice", "2")))),
        Act("Offer", entity=Entity("Hotel", (("parking", "yes"),))),
        Act("Goodbye"),
    ]
    assert dropped == [("Inform", "departure", "birmingham new street"), ("Offer", "area", "east")]


def test_the_canonical_label_names_what_grounding_dropped(schema):
    canon = Canonicaliser(schema)
    plain = canon.dst('find_hotel(type="guesthouse", area="north")]', {}, ["", "a hotel in the north please"])
    grounded = canon.dst('find_hotel(type="guesthouse", area="north")]', {}, ["", "a hotel in the north please"], grounded=True)
    assert plain.state == {"hotel": {"type": "guesthouse", "area": "north"}}
    assert grounded.state == {"hotel": {"area": "north"}}
    assert grounded.text == '[agent.find_hotel(area="north")]'
    assert grounded.errors == ["unsaid value dropped: hotel-type='guesthouse'"]
    acts = canon.acts("Inform(entity=Hotel(area='east'))]", "it is in the north .")
    assert acts.acts == [] and acts.text == "[]" and not acts.failed


def test_grounding_follows_the_model():
    for profile, on in (("cpu-small", True), ("cpu-qwen", True), ("starcoder", False)):
        job = config.load(None, profile)
        assert (job.dst.drop_unsaid_values, job.act_tag.drop_unsaid_values) == (on, on), profile
    job = config.from_dict({"dst": {"drop_unsaid_values": False}}, "cpu-small")
    assert job.dst.drop_unsaid_values is False and job.act_tag.drop_unsaid_values is True
