"""PartitionLabeller on a tiny random LM: every turn labelled, garbage tolerated, gold never used, resume exact."""

from __future__ import annotations

import pytest

from labelling.engine.lm import LanguageModel
from labelling.method.labeller import batches
from labelling.records import FLAG_DST_UNPARSEABLE, TurnLabel
from tests.support.labellers import make_labeller
from tests.support.partition_worker import tiny_job


class RecordingLM(LanguageModel):
    """The real tiny LM, also keeping every prompt text it was given (to prove gold never reaches one)."""

    def __init__(self, inner: LanguageModel):
        self.__dict__.update(inner.__dict__)
        self.seen: list[str] = []

    def sample(self, prompts, params):
        self.seen += [p.preamble + p.body for p in prompts]
        return super().sample(prompts, params)

    def score_many(self, requests):
        self.seen += [p.preamble + p.body + "".join(c) for p, c in requests]
        return super().score_many(requests)


@pytest.fixture(scope="module")
def turns(dev_dialogues):
    return [t for d in dev_dialogues[:3] for t in d]


@pytest.fixture(scope="module")
def labelled(schema, tiny_lm, embedder, turns) -> tuple[list[TurnLabel], list[str]]:
    """One uninterrupted labelling of ``turns`` with the gold in (``fast_job``'s settings), and every prompt it sent.

    Labelling is deterministic, so the tests that compare against an uninterrupted run share this one instead of each
    labelling the partition again (each labelling is the bulk of this module's time)."""
    spy = RecordingLM(tiny_lm)
    return make_labeller(tiny_job(), schema, spy, embedder).label(turns), spy.seen


def test_waves_are_turn_major_seeded_and_warm_up_alone(turns, dev_dialogues):
    schedule = batches(turns, shuffle_groups=2, seed=7, warmup=3)
    assert [len(w) for w in schedule[:3]] == [1, 1, 1]
    assert sorted(t.key for w in schedule for t in w) == sorted(t.key for t in turns)
    for wave in schedule:
        assert len({t.turn_id for t in wave}) == 1
    assert schedule == batches(turns, shuffle_groups=2, seed=7, warmup=3)
    many = [t for d in dev_dialogues[:20] for t in d]
    assert [t.key for w in batches(many, 4, 7) for t in w] != [t.key for w in batches(many, 4, 8) for t in w]


def test_every_turn_gets_one_label_and_garbage_keeps_the_prior_state(labelled, turns):
    labels, _ = labelled
    assert sorted(lab.key for lab in labels) == sorted(t.key for t in turns)
    flagged = [lab for lab in labels if FLAG_DST_UNPARSEABLE in lab.flags]
    assert flagged, "a random model should produce unparseable DST text"
    for lab in flagged:
        assert lab.state == lab.prior_state and lab.delta == {}
    assert all("jga" in lab.metrics and "acts_tp" in lab.metrics for lab in labels)


def test_output_does_not_depend_on_gold_and_gold_never_reaches_a_prompt(labelled, fast_job, schema, tiny_lm, embedder, turns):
    with_gold, seen = labelled
    without = make_labeller(fast_job, schema, tiny_lm, embedder).label([t.without_gold() for t in turns])
    strip = [{**lab.to_dict(), "metrics": {}} for lab in with_gold]
    assert strip == [lab.to_dict() for lab in without]
    gold_only = {a.to_json() for t in turns for a in t.system_response_acts}
    assert seen and not any(g in text for g in gold_only for text in seen)


def test_resume_after_a_crash_gives_the_same_labels(labelled, fast_job, schema, tiny_lm, embedder, turns):
    reference, _ = labelled
    saved: list[TurnLabel] = []

    def crash_once_four_are_saved(batch):
        saved.extend(TurnLabel.from_dict(lab.to_dict()) for lab in batch)
        if len(saved) >= 4:
            raise KeyboardInterrupt  # what a killed process looks like from inside

    with pytest.raises(KeyboardInterrupt):
        make_labeller(fast_job, schema, tiny_lm, embedder).label(turns, on_batch=crash_once_four_are_saved)
    new: list[TurnLabel] = []
    resumed = make_labeller(fast_job, schema, tiny_lm, embedder).label(turns, done=saved, on_batch=new.extend)
    assert [lab.to_dict() for lab in resumed] == [lab.to_dict() for lab in reference]
    assert not {lab.key for lab in new} & {lab.key for lab in saved}, "a checkpointed turn was labelled twice"


def test_greedy_mode_takes_one_candidate_and_scores_nothing(fast_job, schema, tiny_lm, embedder, turns):
    fast_job.dst.generation_cfg.generation_mode = fast_job.act_tag.generation_cfg.generation_mode = "greedy"
    labels = make_labeller(fast_job, schema, tiny_lm, embedder).label(turns[:4])
    assert len(labels) == 4
    for lab in labels:
        assert len(lab.dst.candidates) == 1 and lab.dst.candidates[0].score is None


def test_vote_mode_takes_the_label_most_samples_agree_on_without_scoring(fast_job, schema, tiny_lm, embedder, turns):
    for module in (fast_job.dst, fast_job.act_tag):
        module.generation_cfg.generation_mode = "vote"
    lm = RecordingLM(tiny_lm)
    labels = make_labeller(fast_job, schema, lm, embedder).label(turns[:4])
    assert len(lm.seen) == 2 * 4  # one sampling prompt per module and turn; no channel scoring request
    for lab in labels:
        for out in (lab.dst, lab.act):
            assert [c.score for c in out.candidates] == [float(len(c.raw)) for c in out.candidates]
            most = max(len(c.raw) for c in out.candidates)
            best = max((c for c in out.candidates if len(c.raw) == most), key=lambda c: c.sample_logprob)
            assert out.chosen == best.canonical
