"""Gold written as predictions scores exactly 1.0 on every metric: gold and predictions share one normalisation.

Each gold label of the bundled corpus is rendered as the completion a model would write, read back through the
canonicaliser every sampled candidate goes through, and scored against the gold it came from.
"""

from __future__ import annotations

import pytest

from labelling.acts import Act, Entity, acts_from_gold
from labelling.config import JobConfig
from labelling.corpus import read_corpus
from labelling.data import BUNDLED_CORPUS
from labelling.method.canonical import Canonicaliser
from labelling.method.metrics import MetricsAccumulator, act_triples
from labelling.method.prompts import ACT_PREFIX, DST_PREFIX
from labelling.schema import Schema


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.load(None, tuple(JobConfig().services))


@pytest.fixture(scope="module")
def dialogues(schema: Schema) -> list:
    return read_corpus(BUNDLED_CORPUS, schema)


def test_gold_as_predictions_scores_one_on_every_metric_over_the_bundled_corpus(schema, dialogues):
    canon = Canonicaliser(schema)
    acc = MetricsAccumulator()
    for dialogue in dialogues:
        prior: dict = {}
        for turn in dialogue:
            text = [turn.last_system_utterance, turn.user_utterance]
            completion = canon.builder.intent_string(prior, turn.slot_values, text)
            dst = canon.dst(completion[len(DST_PREFIX) :], prior, text)
            acts = canon.acts(canon.builder.acts_string(turn.system_response_acts)[len(ACT_PREFIX) :])
            acc.add_turn(turn, dst.state, dst.delta, acts.acts)
            prior = dst.state
    summary = acc.summary()
    assert (summary["n_dst"], summary["n_acts"]) == (7365, 7365)
    assert {k: v for k, v in summary.items() if not k.startswith("n_") and v != 1.0} == {}
    assert acc.errors() == {"slots": [], "acts": []}


def test_gold_spellings_are_the_schemas(schema, dialogues):
    values = {
        (svc, slot): value
        for dialogue in dialogues
        for turn in dialogue
        for svc, slots in turn.slot_values.items()
        for slot, value in slots.items()
    }
    assert ("attraction", "type") in values
    for (svc, slot), value in values.items():
        spec = schema.service(svc).slot(slot)
        assert not spec.categorical or value in spec.values, (svc, slot, value)
    assert "night club" not in {v for (_, s), v in values.items() if s == "type"}


def test_a_slot_less_act_of_a_service_keeps_its_domain():
    acts = acts_from_gold({"Train-OfferBook": [["none", "none"]], "general-bye": [["none", "none"]]})
    assert acts == [Act("Confirm", entity=Entity("Train")), Act("Goodbye")]
    assert act_triples(acts) == {("Confirm", "train", ""), ("Goodbye", "", "")}
    assert acts_from_gold({"Booking-Inform": [["none", "none"]]}) == [Act("Inform")]


def test_an_empty_service_entity_survives_rendering_and_parsing(schema):
    canon = Canonicaliser(schema)
    act = Act("Confirm", entity=Entity("Train"))
    assert canon.builder.acts_string([act]) == "[Confirm(entity=Train())]"
    assert canon.acts("Confirm(entity=Train())]").acts == [act]
    assert canon.acts("Confirm(entity=Entity())]").acts == [Act("Confirm")]
