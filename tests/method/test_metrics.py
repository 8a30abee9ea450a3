"""Hand-made cases for labelling.method.metrics: exact and fuzzy JGA and turn accuracy, state and act triples, the reference's
lenient act families, the error breakdown, and the accumulator's arithmetic."""

from __future__ import annotations

import json

import pytest

from labelling.acts import Act, Entity
from labelling.method.metrics import (
    MetricsAccumulator,
    act_elements,
    act_triples,
    precision_recall_f1,
    states_match,
    turn_act_metrics,
    turn_dst_metrics,
    turn_state_counts,
    values_match,
)
from labelling.states import DELETE
from labelling.turns import Turn


def hotel(**fields: str) -> Entity:
    """A Hotel entity; keyword order is kept, as in the act's JSON."""
    return Entity("Hotel", tuple(fields.items()))


def tp_fp_fn(counts: dict[str, int], family: str) -> tuple[int, int, int]:
    """One family's (tp, fp, fn) from a per-turn counts dict."""
    return counts[f"{family}_tp"], counts[f"{family}_fp"], counts[f"{family}_fn"]


GOODBYE = Act("Goodbye")
REQUEST_PRICE = Act("Request", service="hotel", values=("price_range",))
ALL_RIGHT = {"jga": True, "jga_fuzzy": True, "turn_acc": True, "turn_acc_fuzzy": True}
FUZZY_ONLY = {"jga": False, "jga_fuzzy": True, "turn_acc": False, "turn_acc_fuzzy": True}


# --- dialogue states -----------------------------------------------------------------------------------------


def test_empty_states_match_and_blanks_are_ignored():
    assert turn_dst_metrics({}, {}, {}, {}) == ALL_RIGHT
    assert states_match({"hotel": {"area": "", "stars": "not mentioned"}}, {})
    assert states_match(None, {"taxi": {}})


def test_a_missing_or_extra_slot_is_wrong():
    gold = {"hotel": {"area": "east"}}
    assert not states_match({}, gold)
    assert not states_match({"hotel": {"area": "east", "stars": "4"}}, gold)
    assert not states_match({"hotel": {"stars": "east"}}, gold)


def test_dontcare_is_an_ordinary_value():
    gold = {"hotel": {"area": "dontcare"}}
    assert states_match({"hotel": {"area": "dontcare"}}, gold)
    assert not states_match({"hotel": {"area": "east"}}, gold)
    assert not states_match({}, gold)
    assert turn_dst_metrics(gold, gold, gold, gold) == ALL_RIGHT


def test_fuzzy_jga_is_lenient_where_the_exact_headline_is_not():
    pred, gold = {"hotel": {"price range": "cheaper"}}, {"hotel": {"price range": "cheap"}}
    assert turn_dst_metrics(pred, pred, gold, gold) == FUZZY_ONLY
    # The examples: the reference's substring test calls "2" right for "12" and "1:00" right for "11:00".
    for short, long in (("2", "12"), ("1:00", "11:00")):
        assert turn_dst_metrics({"train": {"leave at": short}}, {}, {"train": {"leave at": long}}, {})["jga_fuzzy"]
        assert not turn_dst_metrics({"train": {"leave at": short}}, {}, {"train": {"leave at": long}}, {})["jga"]
    # partial_ratio is symmetric in which side holds the substring.
    assert values_match("cheap", "cheaper") and values_match("cheaper", "cheap")
    assert not values_match("cheap", "expensive")


def test_multi_domain_state_needs_every_domain_right():
    gold = {"hotel": {"area": "east", "stars": "4"}, "train": {"day": "monday", "destination": "ely"}}
    assert states_match({"train": {"destination": "ely", "day": "monday"}, "hotel": {"stars": "4", "area": "east"}}, gold)
    assert not states_match({"hotel": {"area": "east", "stars": "4"}}, gold)
    assert not states_match({**gold, "train": {"day": "tuesday", "destination": "ely"}}, gold)


def test_removed_slots_compare_as_delete_markers():
    gold_delta = {"hotel": {"area": DELETE}, "train": {"day": "friday"}}
    assert states_match({"train": {"day": "friday"}, "hotel": {"area": DELETE}}, gold_delta)
    assert not states_match({"train": {"day": "friday"}}, gold_delta)
    assert not states_match({"hotel": {"area": "east"}, "train": {"day": "friday"}}, gold_delta)


def test_delete_matches_nothing_but_itself():
    # "DELETE" is a substring of "[DELETE]", so partial_ratio alone would call them equal.
    assert values_match(DELETE, DELETE)
    assert not values_match("DELETE", DELETE)
    assert not values_match(DELETE, "DELETE")
    assert not values_match(DELETE, "east")


def test_turn_accuracy_judges_the_delta_not_the_state():
    gold_state = {"hotel": {"price range": "cheap", "area": "east"}}
    pred_state = {"hotel": {"price range": "expensive", "area": "east"}}  # carried over a wrong earlier value
    delta = {"hotel": {"area": "east"}}
    assert turn_dst_metrics(pred_state, delta, gold_state, delta) == {
        "jga": False,
        "jga_fuzzy": False,
        "turn_acc": True,
        "turn_acc_fuzzy": True,
    }


def test_non_string_values_compare_by_text():
    assert states_match({"hotel": {"stars": 4}}, {"hotel": {"stars": "4"}})


def test_state_triples_count_slots_and_name_the_missed_and_invented():
    gold = {"hotel": {"area": "east", "stars": "4"}}
    pred = {"hotel": {"area": "east", "stars": "3"}, "taxi": {"leave at": "10:00"}}
    counts = turn_state_counts(pred, gold)
    assert tp_fp_fn(counts, "state") == (1, 2, 1)
    assert counts["err:missed:slot:hotel-stars"] == 1
    assert counts["err:invented:slot:hotel-stars"] == counts["err:invented:slot:taxi-leave at"] == 1


# --- dialogue acts -------------------------------------------------------------------------------------------


def test_act_triples_are_type_domain_slot():
    acts = [
        GOODBYE,
        Act("Request", service="hotel", values=("price_range", "area")),
        Act("Inform", entity=hotel(name="acorn", area="east")),
        Act("Offer", entity=Entity("Train", (("id", "tr1234"),)), num_choices="3"),
        Act("Confirm", entity=Entity("Train")),
        Act("NotifyFailure", service="restaurant"),
    ]
    assert act_triples(acts) == {
        ("Goodbye", "", ""),
        ("Request", "hotel", "price_range"),
        ("Request", "hotel", "area"),
        ("Inform", "hotel", "name"),
        ("Inform", "hotel", "area"),
        ("Offer", "train", "id"),
        ("Offer", "train", "choice"),
        ("Confirm", "train", ""),
        ("NotifyFailure", "restaurant", ""),
    }


def test_reference_elements_of_acts_with_and_without_arguments():
    acts = [
        GOODBYE,
        Act("Request", service="hotel", values=("price_range", "area")),
        Act("Inform", entity=hotel(name="acorn", area="east")),
        Act("Offer", entity=Entity("Train", (("id", "tr1234"),)), num_choices="3"),
        Act("Inform", entity=hotel(area="east")),
    ]
    assert act_elements(acts) == {
        "act_slots": ["service", "values", "name", "area", "id", "num_choices"],
        "act_values": ['"hotel"', '"price_range"', '"area"', '"acorn"', '"east"', '"tr1234"', '"3"'],
    }


def test_identical_acts_score_perfectly():
    acts = [Act("Inform", entity=hotel(name="acorn", price_range="cheap")), REQUEST_PRICE, GOODBYE]
    counts = turn_act_metrics(acts, acts)
    # triples: Inform/hotel/name, Inform/hotel/price_range, Request/hotel/price_range, Goodbye; types: 3.
    assert [tp_fp_fn(counts, f) for f in ("acts", "act_types", "act_slots", "act_values")] == [
        (4, 0, 0),
        (3, 0, 0),
        (4, 0, 0),
        (4, 0, 0),
    ]
    assert not [k for k in counts if k.startswith("err:")]


def test_empty_prediction_and_empty_gold():
    zero = {f"{f}_{c}": 0 for f in ("acts", "act_types", "act_slots", "act_values") for c in ("tp", "fp", "fn")}
    assert turn_act_metrics([], []) == zero
    assert turn_act_metrics(None, [GOODBYE]) == {**zero, "acts_fn": 1, "act_types_fn": 1, "err:missed:act:Goodbye": 1}
    assert turn_act_metrics([REQUEST_PRICE], []) == {
        **zero,
        "acts_fp": 1,
        "act_types_fp": 1,
        "act_slots_fp": 2,
        "act_values_fp": 2,
        "err:invented:act:Request": 1,
    }


def test_a_wrong_domain_or_slot_is_a_wrong_triple_though_the_type_is_right():
    pred = [Act("Inform", entity=Entity("Train", (("area", "east"),))), Act("Inform", entity=hotel(stars="4"))]
    gold = [Act("Inform", entity=hotel(area="east"))]
    counts = turn_act_metrics(pred, gold)
    assert tp_fp_fn(counts, "acts") == (0, 2, 1)
    assert tp_fp_fn(counts, "act_types") == (1, 0, 0)
    assert counts["err:missed:act:Inform"] == 1 and counts["err:invented:act:Inform"] == 2


def test_each_requested_slot_counts_as_its_own_value():
    pred = [Act("Request", service="hotel", values=("price_range", "area"))]
    counts = turn_act_metrics(pred, [REQUEST_PRICE])
    assert tp_fp_fn(counts, "act_values") == (2, 1, 0)
    assert tp_fp_fn(counts, "act_slots") == (2, 0, 0)
    assert tp_fp_fn(counts, "acts") == (1, 1, 0)


def test_entity_values_are_flattened_and_compared_fuzzily():
    pred = [Act("Inform", entity=hotel(price_range="cheaper", area="east"))]
    gold = [Act("Inform", entity=hotel(price_range="cheap", area="west"))]
    counts = turn_act_metrics(pred, gold)
    # '"cheaper"' maps onto '"cheap"' (partial_ratio 92); '"east"' matches neither gold value.
    assert tp_fp_fn(counts, "act_values") == (1, 1, 1)
    assert tp_fp_fn(counts, "act_slots") == (2, 0, 0)
    assert tp_fp_fn(counts, "acts") == (2, 0, 0)  # triples carry no values


def test_act_types_are_exact_where_the_reference_was_lenient():
    # "Request" is a substring of "RequestAlternatives": the reference counted it as a hit; act types do not.
    counts = turn_act_metrics([Act("Request", service="hotel")], [Act("RequestAlternatives")])
    assert tp_fp_fn(counts, "act_types") == (0, 1, 1)
    assert tp_fp_fn(counts, "acts") == (0, 1, 1)


def test_an_identical_gold_element_wins_over_an_earlier_fuzzy_one():
    acts = [Act("Inform", entity=Entity("Train", (("day", "monday"),))), Act("Confirm", entity=hotel(book_day="monday"))]
    counts = turn_act_metrics(acts, acts)
    # Mapping "book_day" to the first fuzzy match "day" would leave gold "book_day" unmatched.
    assert tp_fp_fn(counts, "act_slots") == (2, 0, 0)


def test_predictions_mapping_to_one_gold_element_count_once():
    pred = [Act("Inform", entity=hotel(price_range="cheap")), Act("Offer", entity=hotel(price_range="cheaper"))]
    gold = [Act("Inform", entity=hotel(price_range="cheap"))]
    counts = turn_act_metrics(pred, gold)
    assert tp_fp_fn(counts, "act_values") == (1, 0, 0)
    assert tp_fp_fn(counts, "act_types") == (1, 1, 0)


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "expected"),
    [
        (3, 1, 2, (0.75, 0.6, 2 / 3)),  # F1 = 2*0.75*0.6 / 1.35 = 0.9 / 1.35
        (1, 1, 3, (0.5, 0.25, 1 / 3)),
        (0, 0, 0, (0.0, 0.0, 0.0)),
        (0, 2, 0, (0.0, 0.0, 0.0)),
        (0, 0, 2, (0.0, 0.0, 0.0)),
        (4, 0, 0, (1.0, 1.0, 1.0)),
    ],
)
def test_precision_recall_f1_arithmetic(tp, fp, fn, expected):
    assert precision_recall_f1(tp, fp, fn) == pytest.approx(expected)


# --- accumulation --------------------------------------------------------------------------------------------

# DST: turn 1 right only fuzzily, turn 2 wrong state but right delta, turn 3 has no gold.
DST_TURNS = [
    ({"hotel": {"price range": "cheaper"}}, {"hotel": {"price range": "cheaper"}}, {"hotel": {"price range": "cheap"}}),
    (
        {"hotel": {"price range": "expensive", "area": "east"}},
        {"hotel": {"area": "east"}},
        {"hotel": {"price range": "cheap", "area": "east"}},
    ),
    ({"hotel": {"area": "east"}}, {}, None),
]
GOLD_DELTAS = [{"hotel": {"price range": "cheap"}}, {"hotel": {"area": "east"}}, None]

# Acts: turn A (acts 1/1/1, slots 1/1/3, values 1/1/3), turn B (acts 0/0/1), turn C has no gold.
ACT_TURNS = [
    (
        [Act("Inform", entity=hotel(area="east", price_range="cheap")), GOODBYE],
        [Act("Inform", entity=hotel(area="east", stars="4")), REQUEST_PRICE],
    ),
    ([], [GOODBYE]),
    ([GOODBYE], None),
]


def fill_accumulator(acc: MetricsAccumulator, dst_index: list[int], act_index: list[int]) -> MetricsAccumulator:
    """Feed the chosen hand-made turns into ``acc``."""
    for i in dst_index:
        pred_state, pred_delta, gold_state = DST_TURNS[i]
        acc.add_dst(pred_state, pred_delta, gold_state, GOLD_DELTAS[i])
    for i in act_index:
        acc.add_acts(*ACT_TURNS[i])
    return acc


def test_first_act_turn_counts_match_the_hand_count():
    counts = turn_act_metrics(*ACT_TURNS[0])
    assert tp_fp_fn(counts, "acts") == (1, 2, 2)
    assert tp_fp_fn(counts, "act_types") == (1, 1, 1)
    assert tp_fp_fn(counts, "act_slots") == (1, 1, 3)
    assert tp_fp_fn(counts, "act_values") == (1, 1, 3)


def test_accumulator_summary_by_hand():
    summary = fill_accumulator(MetricsAccumulator(), [0, 1, 2], [0, 1, 2]).summary()
    # state triples: tp 1, fp 2, fn 2; act triples: tp 1, fp 2, fn 3; act types: tp 1, fp 1, fn 2;
    # reference slots and values: tp 1, fp 1, fn 3.
    expected = {
        "jga": 0.0,
        "jga_fuzzy": 0.5,
        "turn_acc": 0.5,
        "turn_acc_fuzzy": 1.0,
        "state_precision": 1 / 3,
        "state_recall": 1 / 3,
        "state_f1": 1 / 3,
        "acts_precision": 1 / 3,
        "acts_recall": 0.25,
        "acts_f1": 2 / 7,
        "act_types_precision": 0.5,
        "act_types_recall": 1 / 3,
        "act_types_f1": 0.4,
        "act_slots_precision": 0.5,
        "act_slots_recall": 0.25,
        "act_slots_f1": 1 / 3,
        "act_values_precision": 0.5,
        "act_values_recall": 0.25,
        "act_values_f1": 1 / 3,
        "n_dst": 2,
        "n_acts": 2,
    }
    assert summary == pytest.approx(expected)
    assert set(summary) == set(expected)


def test_error_breakdown_sums_missed_and_invented_per_slot_and_act_type():
    errors = fill_accumulator(MetricsAccumulator(), [0, 1, 2], [0, 1, 2]).errors()
    assert errors["slots"] == [("hotel-price range", 2, 2)]
    assert errors["acts"] == [("Goodbye", 1, 1), ("Inform", 1, 1), ("Request", 1, 0)]
    assert fill_accumulator(MetricsAccumulator(), [0, 1, 2], [0, 1, 2]).errors(top=1)["acts"] == [("Goodbye", 1, 1)]


def test_turns_without_gold_return_none_and_do_not_count():
    acc = MetricsAccumulator()
    assert acc.add_dst({"hotel": {"area": "east"}}, {}, None, None) is None
    assert acc.add_acts([GOODBYE], None) is None
    assert acc.summary()["n_dst"] == acc.summary()["n_acts"] == 0
    assert acc == MetricsAccumulator()


def test_add_methods_return_the_per_turn_metrics():
    acc = MetricsAccumulator()
    assert acc.add_dst(*DST_TURNS[0], GOLD_DELTAS[0]) == FUZZY_ONLY
    assert acc.add_acts(*ACT_TURNS[0]) == turn_act_metrics(*ACT_TURNS[0])


def test_empty_accumulator_summary_is_all_zero():
    summary = MetricsAccumulator().summary()
    assert all(value == 0 for value in summary.values())
    assert len(summary) == 21


def test_merge_equals_accumulating_everything_at_once():
    whole = fill_accumulator(MetricsAccumulator(), [0, 1, 2], [0, 1, 2])
    first = fill_accumulator(MetricsAccumulator(), [0], [0, 2])
    second = fill_accumulator(MetricsAccumulator(), [1, 2], [1])
    before = first.to_dict()

    assert first + second == whole
    assert first.to_dict() == before  # + leaves its operands alone
    assert sum([first, second]) == whole
    assert (first + second).summary() == whole.summary()
    assert first.merge(second) is first and first == whole


def test_accumulator_survives_a_json_round_trip():
    acc = fill_accumulator(MetricsAccumulator(), [0, 1], [0, 1])
    restored = MetricsAccumulator.from_dict(json.loads(json.dumps(acc.to_dict())))
    assert restored == acc
    assert restored.summary() == acc.summary()


def test_add_turn_reads_gold_from_the_turn_record():
    gold_state = {"hotel": {"area": "east"}}
    turn = Turn(
        "MUL0001.json",
        0,
        ["a hotel in the east"],
        [""],
        "goodbye",
        slot_values=gold_state,
        last_slot_values={},
        turn_slot_values=gold_state,
        system_response_acts=[GOODBYE],
    )
    acc = MetricsAccumulator()
    per_turn = acc.add_turn(turn, gold_state, gold_state, [GOODBYE])
    assert per_turn["jga"] and per_turn["turn_acc"] and per_turn["acts_tp"] == 1
    assert acc.add_turn(turn.without_gold(), gold_state, gold_state, [GOODBYE]) == {}
    assert (acc.summary()["n_dst"], acc.summary()["n_acts"]) == (1, 1)
