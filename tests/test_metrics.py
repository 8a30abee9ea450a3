"""Hand-made cases for labelling.metrics: JGA and turn accuracy, act/slot/value counts, and the accumulator's arithmetic."""

from __future__ import annotations

import json

import pytest

from labelling.acts import Act, Entity
from labelling.metrics import (
    MetricsAccumulator,
    act_elements,
    precision_recall_f1,
    states_match,
    turn_act_metrics,
    turn_dst_metrics,
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


# --- dialogue states -----------------------------------------------------------------------------------------


def test_empty_states_match_and_blanks_are_ignored():
    assert turn_dst_metrics({}, {}, {}, {}) == {"jga": True, "jga_exact": True, "turn_acc": True}
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
    assert turn_dst_metrics(gold, gold, gold, gold) == {"jga": True, "jga_exact": True, "turn_acc": True}


def test_fuzzy_jga_is_lenient_where_exact_is_not():
    pred, gold = {"hotel": {"price range": "cheaper"}}, {"hotel": {"price range": "cheap"}}
    assert turn_dst_metrics(pred, pred, gold, gold) == {"jga": True, "jga_exact": False, "turn_acc": True}
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
    assert turn_dst_metrics(pred_state, delta, gold_state, delta) == {"jga": False, "jga_exact": False, "turn_acc": True}


def test_non_string_values_compare_by_text():
    assert states_match({"hotel": {"stars": 4}}, {"hotel": {"stars": "4"}}, fuzzy=False)


# --- dialogue acts -------------------------------------------------------------------------------------------


def test_elements_of_acts_with_and_without_arguments():
    acts = [
        GOODBYE,
        Act("Request", service="hotel", values=("price_range", "area")),
        Act("Inform", entity=hotel(name="acorn", area="east")),
        Act("Offer", entity=Entity("Train", (("id", "tr1234"),)), num_choices="3"),
        Act("Inform", entity=hotel(area="east")),
    ]
    assert act_elements(acts) == {
        "acts": ["Goodbye", "Request", "Inform", "Offer"],
        "slots": ["service", "values", "name", "area", "id", "num_choices"],
        "values": ['"hotel"', '"price_range"', '"area"', '"acorn"', '"east"', '"tr1234"', '"3"'],
    }


def test_identical_acts_score_perfectly():
    acts = [Act("Inform", entity=hotel(name="acorn", price_range="cheap")), REQUEST_PRICE, GOODBYE]
    counts = turn_act_metrics(acts, acts)
    # acts: Inform, Request, Goodbye; slots: name, price_range, service, values; values: "acorn", "cheap", "hotel", "price_range"
    assert [tp_fp_fn(counts, f) for f in ("acts", "slots", "values")] == [(3, 0, 0), (4, 0, 0), (4, 0, 0)]


def test_empty_prediction_and_empty_gold():
    zero = {f"{f}_{c}": 0 for f in ("acts", "slots", "values") for c in ("tp", "fp", "fn")}
    assert turn_act_metrics([], []) == zero
    assert turn_act_metrics(None, [GOODBYE]) == {**zero, "acts_fn": 1}
    assert turn_act_metrics([REQUEST_PRICE], []) == {**zero, "acts_fp": 1, "slots_fp": 2, "values_fp": 2}


def test_each_requested_slot_counts_as_its_own_value():
    pred = [Act("Request", service="hotel", values=("price_range", "area"))]
    counts = turn_act_metrics(pred, [REQUEST_PRICE])
    assert tp_fp_fn(counts, "values") == (2, 1, 0)
    assert tp_fp_fn(counts, "slots") == (2, 0, 0)


def test_entity_values_are_flattened_and_compared_fuzzily():
    pred = [Act("Inform", entity=hotel(price_range="cheaper", area="east"))]
    gold = [Act("Inform", entity=hotel(price_range="cheap", area="west"))]
    counts = turn_act_metrics(pred, gold)
    # '"cheaper"' maps onto '"cheap"' (partial_ratio 92); '"east"' matches neither gold value.
    assert tp_fp_fn(counts, "values") == (1, 1, 1)
    assert tp_fp_fn(counts, "slots") == (2, 0, 0)
    assert tp_fp_fn(counts, "acts") == (1, 0, 0)


def test_fuzzy_act_mapping_is_as_lenient_as_the_reference():
    # "Request" is a substring of "RequestAlternatives": the reference counts it as a hit.
    counts = turn_act_metrics([Act("Request", service="hotel")], [Act("RequestAlternatives")])
    assert tp_fp_fn(counts, "acts") == (1, 0, 0)


def test_an_identical_gold_element_wins_over_an_earlier_fuzzy_one():
    acts = [Act("Inform", entity=Entity("Train", (("day", "monday"),))), Act("Confirm", entity=hotel(book_day="monday"))]
    counts = turn_act_metrics(acts, acts)
    # Mapping "book_day" to the first fuzzy match "day" would leave gold "book_day" unmatched.
    assert tp_fp_fn(counts, "slots") == (2, 0, 0)


def test_predictions_mapping_to_one_gold_element_count_once():
    pred = [Act("Inform", entity=hotel(price_range="cheap")), Act("Offer", entity=hotel(price_range="cheaper"))]
    gold = [Act("Inform", entity=hotel(price_range="cheap"))]
    counts = turn_act_metrics(pred, gold)
    assert tp_fp_fn(counts, "values") == (1, 0, 0)
    assert tp_fp_fn(counts, "acts") == (1, 1, 0)


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
    assert tp_fp_fn(counts, "acts") == (1, 1, 1)
    assert tp_fp_fn(counts, "slots") == (1, 1, 3)
    assert tp_fp_fn(counts, "values") == (1, 1, 3)


def test_accumulator_summary_by_hand():
    summary = fill_accumulator(MetricsAccumulator(), [0, 1, 2], [0, 1, 2]).summary()
    # acts: tp 1, fp 1, fn 2 -> P 1/2, R 1/3, F1 2/5; slots and values: tp 1, fp 1, fn 3 -> P 1/2, R 1/4, F1 1/3.
    expected = {
        "jga": 0.5,
        "jga_exact": 0.0,
        "turn_acc": 1.0,
        "acts_precision": 0.5,
        "acts_recall": 1 / 3,
        "acts_f1": 0.4,
        "slots_precision": 0.5,
        "slots_recall": 0.25,
        "slots_f1": 1 / 3,
        "values_precision": 0.5,
        "values_recall": 0.25,
        "values_f1": 1 / 3,
        "n_dst": 2,
        "n_acts": 2,
    }
    assert summary == pytest.approx(expected)
    assert set(summary) == set(expected)


def test_turns_without_gold_return_none_and_do_not_count():
    acc = MetricsAccumulator()
    assert acc.add_dst({"hotel": {"area": "east"}}, {}, None, None) is None
    assert acc.add_acts([GOODBYE], None) is None
    assert acc.summary()["n_dst"] == acc.summary()["n_acts"] == 0
    assert acc == MetricsAccumulator()


def test_add_methods_return_the_per_turn_metrics():
    acc = MetricsAccumulator()
    assert acc.add_dst(*DST_TURNS[0], GOLD_DELTAS[0]) == {"jga": True, "jga_exact": False, "turn_acc": True}
    assert acc.add_acts(*ACT_TURNS[0]) == turn_act_metrics(*ACT_TURNS[0])


def test_empty_accumulator_summary_is_all_zero():
    summary = MetricsAccumulator().summary()
    assert all(value == 0 for value in summary.values())
    assert len(summary) == 14


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
