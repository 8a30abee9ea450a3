"""Parsing and canonicalisation of completions: partial recovery, deletions, references, no execution."""

from __future__ import annotations

import pytest

from labelling.acts import Act, Entity
from labelling.method.canonical import Canonicaliser
from labelling.method.parsing import ActParser, DstParser, outer_list
from labelling.method.prompts import PromptBuilder
from labelling.schema import Schema
from labelling.states import DELETE


@pytest.fixture(scope="module")
def schema():
    return Schema.load()


PRIOR = {"hotel": {"area": "east", "stars": "4"}}


def test_one_bad_call_keeps_the_good_ones(schema):
    parsed = DstParser(schema).parse('[agent.find_taxi(leave_at="10:00"), agent.find_hotel(price_range="cheap")]', PRIOR)
    assert parsed.state == {"hotel": {"area": "east", "stars": "4", "price range": "cheap"}}
    assert any("find_taxi" in e for e in parsed.errors)


def test_a_syntax_error_in_one_call_keeps_the_others(schema):
    parsed = DstParser(schema).parse(
        '[agent.find_hotel(area="north"), agent.find_train(day=="monday"), agent.find_restaurant(food="thai")]', {}
    )
    assert parsed.state == {"hotel": {"area": "north"}, "restaurant": {"food": "thai"}}
    assert parsed.errors


def test_duplicate_argument_keeps_the_first(schema):
    parsed = DstParser(schema).parse('[agent.find_hotel(area="north", area="south")]', {})
    assert parsed.state == {"hotel": {"area": "north"}}
    assert "twice" in parsed.errors[0]


def test_deletion_and_reference(schema):
    text = '[agent.find_hotel(stars="[DELETE]"), agent.find_restaurant(area=agent.state.hotel.area)]'
    parsed = DstParser(schema).parse(text, PRIOR)
    assert parsed.delta == {"hotel": {"stars": DELETE}, "restaurant": {"area": "east"}}
    assert parsed.state == {"hotel": {"area": "east"}, "restaurant": {"area": "east"}}


def test_reference_to_missing_slot_drops_only_that_argument(schema):
    parsed = DstParser(schema).parse("[agent.find_train(day=agent.state.train.day, departure='ely')]", {})
    assert parsed.state == {"train": {"departure": "ely"}}


def test_truncated_generation_is_closed_and_read(schema):
    parsed = DstParser(schema).parse('[agent.find_hotel(area="north", name="acorn gue', {})
    assert parsed.state["hotel"]["area"] == "north"


def test_garbage_parses_to_nothing_and_keeps_the_prior(schema):
    canon = Canonicaliser(schema)
    label = canon.dst("I am sorry, as an AI I cannot", PRIOR, [])
    assert label.failed and label.state == PRIOR and label.text == "[agent.no_change()]"


def test_model_text_is_never_executed(schema, tmp_path):
    marker = tmp_path / "pwned"
    text = f'[agent.find_hotel(area=__import__("os").system("touch {marker}"))]'
    DstParser(schema).parse(text, {})
    ActParser(schema).parse(f'[Inform(entity=Hotel(area=open("{marker}", "w")))]')
    assert not marker.exists()


def test_canonical_form_is_the_same_for_equivalent_samples(schema):
    canon = Canonicaliser(schema)
    a = canon.dst('find_hotel(stars=4, type="guest house")', {}, ["a 4 star guest house"])
    b = canon.dst('find_hotel(type="guesthouse", stars="4")', {}, ["a 4 star guest house"])
    assert a.text == b.text == '[agent.find_hotel(type="guesthouse", stars=4)]'


def test_uncategorical_value_is_dropped_by_the_normaliser(schema):
    label = Canonicaliser(schema).dst('find_hotel(area="cheapest part", name="acorn")', {}, [])
    assert label.state == {"hotel": {"name": "acorn"}}


def test_acts_partial_recovery_and_positional_entity(schema):
    parsed = ActParser(schema).parse(
        "[Inform(Hotel(area='east')), Bus(day='monday'), Request(service='hotel', values=['price_range']), Goodbye()]"
    )
    assert parsed.acts == [
        Act("Inform", entity=Entity("Hotel", (("area", "east"),))),
        Act("Request", service="hotel", values=("price_range",)),
        Act("Goodbye"),
    ]
    assert any("Bus" in e for e in parsed.errors)


def test_empty_act_list_is_valid_and_garbage_is_failed(schema):
    assert not ActParser(schema).parse("[]").failed
    assert ActParser(schema).parse("no acts here").failed


def test_act_string_round_trip_and_canonical_field_order(schema):
    canon = Canonicaliser(schema)
    label = canon.acts("Offer(num_choices=3, entity=Hotel(area='east', stars=4)), ThankYou()]\n    )")
    assert label.text == "[Offer(entity=Hotel(stars=4, area='east'), num_choices=3), ThankYou()]"
    assert canon.acts(label.text[1:]).acts == label.acts


def test_outer_list_respects_quotes_and_nesting():
    assert outer_list('xx [a("]"), b([1, 2])] tail') == '[a("]"), b([1, 2])]'
    assert outer_list("[a(b='x") == "[a(b='x')]"


def test_state_string_orders_services_and_slots(schema):
    builder = PromptBuilder(schema)
    state = {"train": {"day": "monday"}, "hotel": {"stars": "4", "price range": "cheap"}}
    assert builder.state_string(state) == 'BeliefState(hotel=dict(price_range="cheap", stars=4), train=dict(day="monday"))'
    assert builder.state_string({}) == "BeliefState()"


def test_intent_string_uses_references_only_for_unsaid_values(schema):
    builder = PromptBuilder(schema)
    new = {**PRIOR, "attraction": {"area": "east"}, "taxi": {"destination": "cambridge"}}
    said = builder.intent_string(PRIOR, new, ["", "something in the east please, and a taxi to cambridge"])
    unsaid = builder.intent_string(PRIOR, new, ["", "somewhere in the same area, and a taxi to cambridge"])
    assert said == '[agent.find_attraction(area="east"), agent.book_taxi(destination="cambridge")]'
    assert unsaid == '[agent.find_attraction(area=agent.state.hotel.area), agent.book_taxi(destination="cambridge")]'
