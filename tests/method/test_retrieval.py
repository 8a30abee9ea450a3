"""Tests for the retrieval layer: text formats, distinct keys, example selection order, and the real MiniLM embedder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labelling.acts import Act, Entity
from labelling.errors import ConfigError, ModelError
from labelling.method.retrieval import (
    Embedder,
    ExampleIndex,
    act_key,
    build_index,
    context_system_user,
    dst_key,
    response,
    text_function,
    user_response,
)
from labelling.states import DELETE
from labelling.turns import Turn


def make_turn(user: str, system: str = "", response_text: str = "", dialogue: str = "d", turn_id: int = 0, **labels) -> Turn:
    """A turn with the given utterances; ``labels`` fill the predicted-label fields."""
    return Turn(dialogue, turn_id, [user], [system], response_text, **labels)


class AngleEncoder:
    """Maps each text to a fixed 2-D unit vector at a given angle from the x axis, so similarity order is known exactly."""

    def __init__(self, angles: dict[str, float]):
        self.angles = angles
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.array([[math.cos(self.angles[t]), math.sin(self.angles[t])] for t in texts], dtype=np.float32).reshape(-1, 2)


QUERY = make_turn("q", response_text="query")


def angle_index(specs: list[tuple[str, float, dict]], **settings) -> ExampleIndex:
    """An index over items named by their response text, at angles from the query; the dicts are their predicted deltas."""
    encoder = AngleEncoder({"query": 0.0, **{name: angle for name, angle, _ in specs}})
    index = ExampleIndex(encoder, "response", dst_key, **settings)
    index.add([make_turn("u", response_text=name, turn_id=i, turn_slot_values=delta) for i, (name, _, delta) in enumerate(specs)])
    return index


def names(turns: list[Turn]) -> list[str]:
    return [t.system_response for t in turns]


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return Embedder.load("minilm")


# --- text formats and keys ------------------------------------------------------------------------------------------


def test_context_system_user_at_turn_zero_keeps_the_trailing_space():
    assert context_system_user(make_turn("i need a hotel")) == "Context: \nSystem: \nUser: i need a hotel"


def test_context_system_user_lists_every_service_of_the_prior_state():
    prior = {"hotel": {"area": "east", "price range": "cheap"}, "taxi": {"leave at": "17:00", "destination": ""}}
    turn = make_turn("book it", "it is in the east.", last_slot_values=prior, slot_values={})
    assert context_system_user(turn) == (
        "Context: for hotel, the area is east, price range is cheap . for taxi, the leave at is 17:00 .\n"
        "System: it is in the east.\nUser: book it"
    )


def test_user_response_and_response_formats():
    turn = make_turn("any trains?", "hello", "yes, three.")
    assert user_response(turn) == "User: any trains?\nSystem: yes, three."
    assert response(turn) == "yes, three."


def test_unknown_text_format_lists_the_known_ones():
    with pytest.raises(ConfigError, match="context_system_user, user_response, response"):
        text_function("nope")


def test_dst_key_uses_the_delta_including_deletions():
    turn = make_turn("x", turn_slot_values={"taxi": {"leave at": "5"}, "hotel": {"name": DELETE, "area": "east", "stars": ""}})
    assert dst_key(turn) == "hotel.area,hotel.name,taxi.leave at"
    assert dst_key(make_turn("x")) == ""


def test_act_key_collects_entity_fields_and_other_arguments():
    acts = [
        Act("Inform", entity=Entity("Hotel", (("name", "acorn"), ("area", "east"), ("stars", "")))),
        Act("Request", service="hotel", values=("phone",)),
        Act("NotifySuccess", service="train"),
        Act("Goodbye"),
    ]
    assert act_key(make_turn("x", system_response_acts=acts)) == (
        "Inform.Hotel.area-Inform.Hotel.name-NotifySuccess.service-Request.service-Request.values"
    )


def test_argument_less_acts_share_the_empty_act_key():
    keys = {act_key(make_turn("x", system_response_acts=acts)) for acts in ([Act("Goodbye")], [Act("ThankYou")], [], None)}
    assert keys == {""}


# --- selection order (fixed vectors) --------------------------------------------------------------------------------

# Items at growing angles from the query, i.e. in falling similarity; keys x x y y z w.
RANKED = [
    ("a", 0.1, {"hotel": {"area": "east"}}),
    ("b", 0.2, {"hotel": {"area": "west"}}),
    ("c", 0.3, {"taxi": {"leave at": "5"}}),
    ("d", 0.4, {"taxi": {"leave at": "6"}}),
    ("e", 0.5, {"train": {"day": "monday"}}),
    ("f", 0.6, {}),
]


def test_plain_search_returns_the_k_most_similar_in_order():
    index = angle_index(list(reversed(RANKED)), k=4)
    assert names(index.search(QUERY)) == ["a", "b", "c", "d"]


def test_distinct_picks_come_first_then_fills_by_similarity():
    index = angle_index(RANKED, k=5, minimum_distinct=3)
    assert names(index.search(QUERY)) == ["a", "c", "e", "b", "d"]


def test_distinct_only_looks_at_the_overfetched_items():
    index = angle_index(RANKED, k=3, minimum_distinct=3, overfetch=4)
    assert names(index.search(QUERY)) == ["a", "c", "b"]


def test_fewer_items_than_k_returns_them_all_without_crashing():
    index = angle_index(RANKED[:3], k=8, minimum_distinct=4)
    assert names(index.search(QUERY)) == ["a", "c", "b"]


def test_empty_index_returns_no_examples():
    index = ExampleIndex(AngleEncoder({}), "response", dst_key, k=8, minimum_distinct=4)
    assert index.search(QUERY) == [] and index.search_batch([QUERY, QUERY]) == [[], []]


def test_warmup_is_zero_shot_until_the_index_is_big_enough():
    index = angle_index(RANKED[:2], k=2, warmup=3)
    assert index.search(QUERY) == []
    assert index.embedder.calls == 1  # only the add: a warm-up query is not embedded
    index.embedder.angles["c"] = 0.3
    index.add([make_turn("u", response_text="c", turn_id=9)])
    assert names(index.search(QUERY)) == ["a", "b"]


def test_ties_go_to_the_earlier_item_even_across_the_cut():
    encoder = AngleEncoder({"query": 0.0, "same": 0.3, "other": 1.0})
    index = ExampleIndex(encoder, "response", None, k=3)
    index.add([make_turn("u", response_text="other" if i % 7 == 0 else "same", turn_id=i) for i in range(1000)])
    assert [t.turn_id for t in index.search(QUERY)] == [1, 2, 3]


def test_exclude_hides_the_given_turns():
    index = angle_index(RANKED, k=2)
    assert names(index.search(QUERY, exclude={("d", 0), ("d", 1), ("other", 3)})) == ["c", "d"]


def test_distinct_selection_needs_a_key_function():
    with pytest.raises(ConfigError, match="key function"):
        ExampleIndex(AngleEncoder({}), "response", None, k=4, minimum_distinct=4)


def test_add_embedded_rejects_vectors_that_do_not_match_the_items():
    index = angle_index(RANKED[:2], k=2)
    with pytest.raises(ValueError, match="width 2"):
        index.add_embedded([QUERY], np.ones((1, 3), dtype=np.float32))


def test_add_embedded_normalises_vectors_and_keeps_one_row_per_text():
    index = ExampleIndex(AngleEncoder({}), "response", None, k=3)
    unit = np.array([0.6, 0.8], dtype=np.float32)
    twins = [make_turn("u", response_text="same", turn_id=i) for i in range(2)]
    index.add_embedded([*twins, make_turn("u", response_text="other")], np.stack([unit * 3, -unit, [1, 0]]))
    assert np.allclose(index.vectors, [unit, unit, [1, 0]])  # the second twin shares the first's vector
    index.add_embedded([], np.zeros((0, 2)))
    assert len(index) == 3


# --- build_index ----------------------------------------------------------------------------------------------------


def test_build_index_uses_the_reference_settings_per_module():
    dst, act = build_index(AngleEncoder({}), "dst"), build_index(AngleEncoder({}), "act")
    assert (dst.text_format, dst.key_fn, dst.k, dst.minimum_distinct, dst.warmup) == ("context_system_user", dst_key, 8, 4, 32)
    assert (act.text_format, act.key_fn, act.k, act.overfetch) == ("user_response", act_key, 6, 10)
    assert build_index(AngleEncoder({}), "act", k=2, text_format="response").text_format == "response"
    with pytest.raises(ConfigError, match="dst, act"):
        build_index(AngleEncoder({}), "tagger")


# --- the real embedder ----------------------------------------------------------------------------------------------

UTTERANCES = [
    ("i need a cheap hotel in the east", "the acorn guest house is cheap and in the east."),
    ("find me a train to cambridge on monday", "tr1234 leaves at 09:00."),
    ("book a taxi to the museum at 5pm", "your taxi is a white toyota."),
    ("is there an italian restaurant in the centre?", "pizza hut city centre serves italian food."),
    ("what attractions are in the south?", "there is a park and a cinema in the south."),
    ("thanks, that is all", "you are welcome, goodbye."),
]


def real_items(count: int = len(UTTERANCES)) -> list[Turn]:
    """``count`` turns cycling through UTTERANCES; odd ones carry a prior state so the DST text differs from the act text."""
    items = []
    for i in range(count):
        user, reply = UTTERANCES[i % len(UTTERANCES)]
        prior = {"hotel": {"area": "east"}} if i % 2 else {}
        items.append(make_turn(user, "how can i help?", reply, dialogue=f"d{i}", turn_id=i, last_slot_values=prior))
    return items


def test_embedder_returns_unit_float32_rows(minilm):
    vectors = minilm.encode(["a hotel", "a train", "a taxi"])
    assert vectors.dtype == np.float32 and vectors.shape == (3, minilm.dim) == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_missing_embedder_names_what_to_pass(tmp_path):
    with pytest.raises(ModelError, match="does not exist.*minilm"):
        Embedder.load(str(tmp_path / "no-such-model"))


def test_most_similar_item_comes_first(minilm):
    index = build_index(minilm, "dst", minimum_distinct=1, warmup=0)
    index.add(real_items())
    query = make_turn("could you find an italian place to eat in the city centre", "how can i help?")
    assert index.search(query)[0].user_utterance == UTTERANCES[3][0]


def test_seed_items_are_embedded_in_the_query_format(minilm):
    items = real_items()
    index = build_index(minilm, "act", warmup=0)
    index.add(items)
    for position, item in enumerate(items):
        own = float(minilm.encode([user_response(item)])[0] @ index.vectors[position])
        dst_style = float(minilm.encode([context_system_user(item)])[0] @ index.vectors[position])
        assert own == pytest.approx(1.0, abs=1e-4) and dst_style < 0.95
        assert index.search(item)[0] is item


def test_identical_texts_share_one_vector_so_the_earlier_item_wins(minilm):
    first, *others = real_items(7)
    index = build_index(minilm, "act", k=2, warmup=0)
    index.add([first])
    index.add(others)  # others[-1] repeats first's text, embedded in a different batch
    assert np.array_equal(index.vectors[0], index.vectors[6])
    assert index.search(first) == [first, others[-1]] and index.search_batch([first, others[0]])[0] == [first, others[-1]]


def test_hub_id_of_minilm_resolves_to_the_installed_copy(minilm):
    assert Embedder.load("sentence-transformers/all-MiniLM-L6-v2").dim == minilm.dim


def test_batch_search_equals_single_searches(minilm):
    index = build_index(minilm, "dst", warmup=0, k=3)
    index.add(real_items())
    queries = [make_turn(u, "hello") for u in ("a train on monday please", "cheap hotel", "goodbye")]
    assert index.search_batch(queries) == [index.search(q) for q in queries]


def test_growing_one_at_a_time_equals_one_bulk_add(minilm):
    items = real_items(150)
    bulk = build_index(minilm, "act", warmup=0)
    bulk.add(items)
    grown = build_index(minilm, "act", warmup=0)
    for start in range(0, len(items), 7):
        grown.add(items[start : start + 7])
    assert len(grown) == len(bulk) == 150
    assert np.allclose(grown.vectors, bulk.vectors, atol=1e-5)
    queries = real_items()
    assert grown.search_batch(queries) == bulk.search_batch(queries)


def test_stored_vectors_seed_a_new_index_without_re_encoding(minilm):
    source = build_index(minilm, "dst", warmup=0)
    source.add(real_items())
    copy = build_index(minilm, "dst", warmup=0)
    copy.add_embedded(source.items, source.vectors)
    assert copy.search_batch(real_items()) == source.search_batch(real_items())


def test_stored_vector_records_seed_an_index_as_re_embedding_would(minilm):
    """Records stored beside labels are reused when embedder and text match; otherwise those items are embedded again."""
    items = real_items(40)
    source = build_index(minilm, "dst", warmup=0, k=4)
    source.add(items[:25])
    source.add(items[25:])  # vectors from two batches, as waves write them
    records = source.stored_vectors([t.key for t in items])
    assert all(r["embedder"] == "minilm" and len(r["vector"]) == 4 * minilm.dim for r in records)
    assert source.stored_vectors([("nobody", 0)]) == [None]
    reembedded = build_index(minilm, "dst", warmup=0, k=4)
    reembedded.add(items)
    seeded = build_index(minilm, "dst", warmup=0, k=4)
    assert seeded.add_stored(items, records) == 0
    queries = real_items() + [make_turn("a cheap hotel in the east please", "hello")]
    assert seeded.search_batch(queries) == reembedded.search_batch(queries) == source.search_batch(queries)
    assert np.allclose(seeded.vectors, reembedded.vectors, atol=1e-5)
    # Another embedder's records, another text (a changed prior state) or no record: those items are embedded.
    changed = [make_turn(t.user_utterance, t.last_system_utterance, t.system_response, t.dialogue_id, t.turn_id) for t in items]
    stale = [{**r, "embedder": "mpnet"} if i % 3 == 0 else r for i, r in enumerate(records)]
    stale[1] = None
    mixed = build_index(minilm, "dst", warmup=0, k=4)
    expected = sum(1 for i in range(40) if i % 3 == 0 or i == 1 or i % 2)  # odd items lost their prior state
    assert mixed.add_stored(changed, stale) == expected
    fresh = build_index(minilm, "dst", warmup=0, k=4)
    fresh.add(changed)
    assert mixed.search_batch(queries) == fresh.search_batch(queries)
    with pytest.raises(ValueError, match="2 stored vectors for 40 items"):
        mixed.add_stored(items, records[:2])


def test_the_embedder_runs_on_the_workers_gpu_when_there_is_one(monkeypatch):
    import torch

    from labelling.method.build import embedder_device

    assert embedder_device("cpu") == "cpu" and embedder_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert embedder_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert embedder_device("auto") == "cuda:0"  # an explicit index, as the LM places its weights
