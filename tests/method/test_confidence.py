"""Each mode's confidence, the greedy log-prob it is made of, and the abstention policy the export and the
precision-coverage curve share (each dialogue kept up to its first label below the threshold)."""

from __future__ import annotations

import math

import pytest
import torch

from labelling.engine.generation import Sample, SamplingParams
from labelling.engine.sampling import draw
from labelling.fleet.abstention import curve, kept_prefixes
from labelling.fleet.export import CONFIDENCE_COLUMN, PROVENANCE_COLUMN, keep_confident
from labelling.method import confidence
from labelling.method.channel import CONDITIONAL, GREEDY, JOINT, VOTE
from labelling.records import Candidate, ModuleOutput, TurnLabel
from labelling.turns import Turn


def cands(*specs: tuple[str, int, float | None]) -> list[Candidate]:
    return [Candidate(text, ["x"] * votes, -1.0, score) for text, votes, score in specs]


def test_greedy_is_the_geometric_mean_token_probability():
    best = cands(("a", 1, None))
    sample = Sample("a", logprob=4 * math.log(0.5), n_tokens=4, stopped=True)
    assert confidence.of(confidence.Evidence(GREEDY, best, best[0], [sample])) == pytest.approx(0.5)


def test_a_greedy_draw_keeps_the_models_own_log_prob_and_token():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    greedy = SamplingParams(n=1, temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=4)
    tokens, logps = draw(logits, torch.tensor([0.3, 0.9]), greedy)
    assert tokens.tolist() == [0, 2]
    assert logps.tolist() == pytest.approx(logits.log_softmax(-1)[[0, 1], [0, 2]].tolist())


@pytest.mark.parametrize("mode", [JOINT, CONDITIONAL])
def test_channel_is_the_sigmoid_of_the_margin_and_a_vote_without_a_runner_up(mode):
    three = cands(("a", 1, -1.0), ("b", 1, -3.0), ("c", 1, None))
    assert confidence.of(confidence.Evidence(mode, three, three[0])) == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
    alone = cands(("a", 2, None))
    assert confidence.of(confidence.Evidence(mode, alone, alone[0], cut=1)) == pytest.approx(2 / 3, abs=1e-6)


def test_vote_is_the_share_of_drawn_samples_that_agree_and_other_modes_register_their_own():
    split = cands(("a", 2, 2.0), ("b", 1, 1.0))
    assert confidence.of(confidence.Evidence(VOTE, split, split[0], cut=1)) == pytest.approx(0.5)
    assert confidence.of(confidence.Evidence("rules", split, split[0])) is None
    confidence.register("rules", lambda evidence: 0.25)
    try:
        assert confidence.of(confidence.Evidence("rules", split, split[0])) == 0.25
    finally:
        del confidence.MEASURES["rules"]


def label(dialogue: str, turn: int, sure: float | None, state: dict | None = None) -> TurnLabel:
    out = ModuleOutput("", [], [], confidence=sure)
    return TurnLabel(dialogue, turn, {}, state or {}, state or {}, [], out, ModuleOutput("", [], [], confidence=0.0))


def test_a_dialogue_is_kept_up_to_its_first_doubt_and_the_acts_do_not_cut():
    labels = [label("d1", 0, 0.9), label("d1", 1, 0.2), label("d1", 2, 0.95), label("d2", 0, None), label("d2", 1, 0.6)]
    assert [lab.key for lab in kept_prefixes(labels, 0.5)] == [("d1", 0), ("d2", 0), ("d2", 1)]
    rows = [{"dialogue_id": lab.dialogue_id, "turn_id": lab.turn_id, CONFIDENCE_COLUMN: lab.confidence} for lab in labels]
    rows = [{**r, PROVENANCE_COLUMN: "self-labelled"} for r in rows]
    rows.append({"dialogue_id": "given", "turn_id": 0, CONFIDENCE_COLUMN: None, PROVENANCE_COLUMN: "given"})
    kept, abstention = keep_confident(rows, 0.7)
    assert [(r["dialogue_id"], r["turn_id"]) for r in kept] == [("d1", 0), ("d2", 0), ("given", 0)]
    assert (abstention.kept, abstention.labelled, abstention.cut_dialogues, abstention.empty_dialogues) == (2, 5, 2, 0)
    assert "kept 2 of 5 self-labelled turns (40.0%)" in abstention.line


def test_the_curve_scores_only_the_kept_labels():
    east = {"hotel": {"area": "east"}}
    gold = [Turn("d", i, ["u"], [""], "r", slot_values=east, last_slot_values={}, turn_slot_values=east) for i in range(2)]
    right, wrong = {"hotel": {"area": "east"}}, {"hotel": {"area": "west"}}
    points = {p["threshold"]: p for p in curve(gold, [label("d", 0, 0.9, right), label("d", 1, 0.1, wrong)])}
    assert (points[0.0]["coverage"], points[0.0]["jga"]) == (1.0, 0.5)
    assert (points[0.5]["coverage"], points[0.5]["jga"]) == (0.5, 1.0)
