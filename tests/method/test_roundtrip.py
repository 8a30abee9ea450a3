"""Every gold label of the bundled corpus survives rendering to code and parsing back (issue 3 acceptance)."""

from __future__ import annotations

import pytest

from labelling.acts import Act
from labelling.corpus import read_corpus
from labelling.method.canonical import Canonicaliser
from labelling.method.parsing import DstParser
from labelling.method.prompts import PromptBuilder
from labelling.schema import Schema
from labelling.states import strip_blanks

BUNDLED = "labelling/data/multiwoz21_dev.json.zip"


@pytest.fixture(scope="module")
def gold_turns():
    schema = Schema.load()
    return schema, [t for d in read_corpus(BUNDLED, schema) for t in d]


def _in_schema(acts: list[Act], schema: Schema) -> list[Act]:
    """Gold acts about services outside the schema (police, hospital) cannot be written in its prompt language."""
    return [a for a in acts if not (a.entity and a.entity.kind.lower() not in schema and a.entity.kind != "Entity")]


def test_gold_deltas_round_trip_through_intent_strings(gold_turns):
    schema, turns = gold_turns
    builder, parser = PromptBuilder(schema), DstParser(schema)
    failures = []
    for t in turns:
        text = builder.intent_string(t.last_slot_values, t.slot_values, [t.last_system_utterance, t.user_utterance])
        parsed = parser.parse(text, t.last_slot_values)
        if parsed.state != strip_blanks(t.slot_values) or parsed.errors:
            failures.append((t.key, text, parsed.errors))
    rate = 1 - len(failures) / len(turns)
    print(f"\nDST round trip: {rate:.4%} of {len(turns)} turns; failures: {failures[:10]}")
    assert rate >= 0.99


def test_gold_acts_round_trip_through_act_strings(gold_turns):
    schema, turns = gold_turns
    canon = Canonicaliser(schema)
    failures = []
    for t in turns:
        gold = [canon.order(a) for a in _in_schema(t.system_response_acts, schema)]
        text = canon.builder.acts_string(gold)
        parsed = canon.acts(text[1:])
        if parsed.acts != list(dict.fromkeys(gold)) or parsed.errors:
            failures.append((t.key, text, parsed.errors))
    rate = 1 - len(failures) / len(turns)
    print(f"\nAct round trip: {rate:.4%} of {len(turns)} turns; failures: {failures[:10]}")
    assert rate >= 0.99
