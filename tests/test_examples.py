"""Seed examples read from a labelled corpus: gold as the labels, dialogues the run labels skipped, the pool's
provenance, and the checks that refuse an example corpus no run could use."""

from __future__ import annotations

import pytest

from labelling.errors import CorpusError
from labelling.examples import GIVEN, gold_pool, read_examples, skipped_line
from labelling.method.labeller import admitted
from labelling.records import ModuleOutput, TurnLabel
from tests.support.corpus_files import FIXTURE_IDS, MWZ22


def test_examples_carry_their_gold_as_labels_and_skip_what_the_run_labels(schema):
    pool = read_examples(MWZ22, schema, dialogues=1, exclude={FIXTURE_IDS[0]})
    assert pool.skipped == [FIXTURE_IDS[0]] and pool.dialogues == 1 and set(pool.provenance) == {GIVEN}
    assert all(t.slot_values is not None and t.system_response_acts is not None for t in pool.examples)
    assert FIXTURE_IDS[0] in skipped_line(pool) and "they are labelled, not used as examples" in skipped_line(pool)
    again = read_examples(MWZ22, schema, dialogues=1, exclude={FIXTURE_IDS[0]})
    assert again.digest() == pool.digest() != read_examples(MWZ22, schema, dialogues=2).digest()


def test_examples_the_run_labels_entirely_are_refused(schema):
    with pytest.raises(CorpusError, match="every example dialogue is also in the corpus being labelled"):
        read_examples(MWZ22, schema, exclude=set(FIXTURE_IDS))


def test_a_gold_pool_takes_the_first_dialogues(dev_dialogues):
    turns = [t for d in dev_dialogues[:3] for t in d]
    pool = gold_pool(turns, 2, "dev (gold)")
    assert pool.dialogues == 2 and len(pool.examples) == len(dev_dialogues[0]) + len(dev_dialogues[1])
    assert gold_pool(turns, 0, "dev").examples == []


def test_pool_admission_keeps_labels_at_or_above_the_threshold():
    def label(sure):
        return TurnLabel("d", 0, {}, {}, {}, [], ModuleOutput("", [], [], confidence=sure), ModuleOutput("", [], []))

    assert admitted(label(0.2), 0.0) and admitted(label(None), 0.9) and admitted(label(0.9), 0.9)
    assert not admitted(label(0.5), 0.9)
