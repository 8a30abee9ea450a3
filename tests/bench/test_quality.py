"""The quality benchmark: its fixed held-out slice, its configurations as overrides, and one configuration end to end
on a tiny model (figures in range, baseline beside it, the CLI's argument checks)."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from labelling.bench import quality
from labelling.config import ConfigError
from labelling.method.labeller import PartitionLabeller
from labelling.method.retrieval import build_index
from labelling.schema import Schema


@pytest.fixture(scope="module")
def held_out() -> list:
    """The whole slice, read once for the module (reading the bundled corpus takes seconds)."""
    from tests.support.partition_worker import tiny_job

    return quality.held_out_turns(tiny_job())


def test_the_held_out_slice_is_fixed_and_large_enough(fast_job, held_out):
    turns = held_out
    assert len(turns) == 67 and len({t.dialogue_id for t in turns}) == quality.HELD_OUT_DIALOGUES
    assert turns[0].dialogue_id == "PMUL2282.json"
    assert quality.held_out_turns(fast_job, limit=5) == turns[:5]


def test_configurations_are_overrides_that_change_only_the_mode(fast_job):
    configs = quality.configurations(fast_job)
    assert list(configs)[:3] == ["greedy", "noisy channel", "vote"]
    greedy = quality.apply(fast_job, configs["greedy"])
    assert greedy.dst.generation_cfg.generation_mode == greedy.act_tag.generation_cfg.generation_mode == "greedy"
    assert greedy.dst.generation_cfg.sampling_args == fast_job.dst.generation_cfg.sampling_args
    channel = quality.apply(fast_job, configs["noisy channel"])
    assert channel.to_dict() == fast_job.to_dict()  # the reference's decoding, which fast_job pins
    constrained = [name for name in configs if name.endswith("+ constraints")]
    assert constrained == ["greedy + constraints", "noisy channel + constraints", "vote + constraints"]
    vote = quality.apply(fast_job, configs["vote"])
    assert vote.dst.generation_cfg.generation_mode == vote.act_tag.generation_cfg.generation_mode == "vote"
    lm_rows = list(configs)[:6]
    assert lm_rows == ["greedy", "noisy channel", "vote", *constrained]
    for name in lm_rows:  # each sets the switch, so a profile's default cannot leak in
        job = quality.apply(fast_job, configs[name])
        assert job.dst.constrain_to_schema == job.act_tag.constrain_to_schema == name.endswith("+ constraints")
        assert job.dst.with_rules == job.act_tag.with_rules == "off"


def test_rule_rows_are_the_rules_alone_and_hybrids_over_a_constrained_lm(fast_job):
    configs = quality.configurations(fast_job)
    rules = quality.apply(fast_job, configs["rules"])
    assert not rules.dst.uses_lm and not rules.act_tag.uses_lm
    merges = {"rules first + greedy LM": "override", "greedy LM + rules fill": "fill", "rules first + greedy LM gaps": "gaps"}
    for name, how in merges.items():
        job = quality.apply(fast_job, configs[name])
        assert job.dst.generation_cfg.generation_mode == "greedy" and job.dst.constrain_to_schema
        assert job.dst.with_rules == job.act_tag.with_rules == how
    candidate = quality.apply(fast_job, configs["noisy channel + rules candidate"])
    assert candidate.dst.generation_cfg.generation_mode.startswith("noisy_channel") and candidate.dst.with_rules == "candidate"
    assert quality.apply(fast_job, configs["as configured"]).to_dict() == fast_job.to_dict()


def test_the_always_empty_baseline_scores_what_empty_labels_score(held_out):
    turns = held_out
    figures = quality.baseline(turns).figures()
    assert figures["state_f1"] == figures["acts_f1"] == figures["jga"] == 0.0
    assert figures["turn_acc"] == quality.gold_no_change_share(turns) > 0
    assert figures["no_change"] == 1.0 and figures["off_schema"] is None


def test_one_configuration_end_to_end_on_a_tiny_model(fast_job, tiny_lm, embedder, held_out):
    turns = held_out[:3]

    def factory(job):
        schema = Schema.load(None, tuple(job.services))
        indexes = [build_index(embedder, kind, k=2) for kind in ("dst", "act")]
        return PartitionLabeller(job, schema, tiny_lm, tiny_lm, *indexes)

    overrides = quality.configurations(fast_job)["noisy channel"]
    seen: list[quality.Result] = []
    result = quality.run_configuration(fast_job, "noisy channel", overrides, turns, factory, on_batch=seen.append)
    assert seen and seen[-1].figures()["turns"] == 3 and seen[-1].metrics == result.metrics
    figures = result.figures()
    assert figures["turns"] == 3 and figures["samples"] == 3 * 2 * 3  # 3 samples per module and turn
    assert 0 <= figures["off_schema"] <= 1 and 0 <= figures["no_change"] <= 1 and figures["seconds_per_turn"] > 0
    assert [c["turn"] for c in figures["choices"]] == [f"{t.dialogue_id}#{t.turn_id}" for t in turns]
    rep = quality.report([quality.baseline(turns), result], {"turns": 3})
    header, rows = quality.table_rows(json.loads(json.dumps(rep)))
    assert header[1] == "JGA (exact)" and [r[0] for r in rows] == ["always-empty", "noisy channel"]
    assert "| always-empty |" in quality.markdown(rep)


def test_a_pool_seeded_from_an_earlier_report_reaches_the_indexes(fast_job, tiny_lm, embedder, held_out):
    """A run on another split saves its labels in the report; a later run seeds its example pool from them, and a
    report on the split being labelled is refused (the pool would hold the turns it labels)."""
    other = quality.split_turns(fast_job, "train_850_900", dialogues=1)
    assert other and {t.dialogue_id for t in other}.isdisjoint({t.dialogue_id for t in held_out})
    labellers = []

    def factory(job):
        schema = Schema.load(None, tuple(job.services))
        labellers.append(
            PartitionLabeller(job, schema, tiny_lm, tiny_lm, *(build_index(embedder, k, k=2) for k in ("dst", "act")))
        )
        return labellers[-1]

    greedy = quality.configurations(fast_job)["greedy"]
    first = quality.run_configuration(fast_job, "greedy", greedy, other[:4], factory)
    rep = json.loads(json.dumps(quality.report([quality.baseline(other[:4]), first], {"split": "train_850_900", "lm": "tiny"})))
    found = quality.report_pool(rep, lambda split: quality.split_turns(fast_job, split), quality.HELD_OUT_SPLIT)
    pool, note = found.examples, found.note
    assert (found.source, found.configuration, found.lm) == ("train_850_900", "greedy", "tiny")
    assert [t.key for t in pool] == [t.key for t in other[:4]] and note.startswith("4 labels of train_850_900 (greedy")
    assert [t.slot_values for t in pool] == [
        lab["state"] for lab in sorted(rep["configurations"]["greedy"]["labels"], key=lambda d: d["turn_id"])
    ]
    quality.run_configuration(fast_job, "greedy", greedy, held_out[:2], factory, pool=pool)
    assert len(labellers[-1].dst.index) == 4 + 2 and len(labellers[0].dst.index) == 4  # the pool, then the labelled turns
    with pytest.raises(ConfigError, match="the split this run labels"):
        quality.report_pool(rep, lambda split: quality.split_turns(fast_job, split), "train_850_900")
    with pytest.raises(ConfigError, match="no split 'train_9999'"):
        quality.split_turns(fast_job, "train_9999")


def test_unknown_configuration_is_a_one_line_error(tmp_path):
    script = Path(sys.executable).with_name("labelling")
    done = subprocess.run(
        [str(script), "quality", "--configurations", "beam", "--out", str(tmp_path / "q.json")], capture_output=True, text=True
    )
    assert done.returncode != 0 and "unknown 'beam'" in done.stderr and "known: greedy" in done.stderr
    assert not (tmp_path / "q.json").exists()


def test_pool_examples_keep_the_labelling_order_and_the_previous_turns_acts(fast_job):
    """As a dependent partition's pool holds its seed's labels (labelling order, store.pool_examples), not corpus order."""
    from labelling.records import ModuleOutput, TurnLabel

    turns = quality.split_turns(fast_job, "train_850_900", dialogues=2)
    waves = sorted(turns, key=lambda t: (t.turn_id, t.dialogue_id))  # the labeller's turn-id waves
    assert [t.key for t in waves] != [t.key for t in turns]
    none = ModuleOutput("", [], [])
    labels = [TurnLabel(t.dialogue_id, t.turn_id, {}, t.slot_values, {}, t.system_response_acts, none, none) for t in waves]
    pool = quality.pool_examples(turns, labels)
    assert [t.key for t in pool] == [t.key for t in waves]
    for example in pool:
        previous = next((t for t in turns if t.key == (example.dialogue_id, example.turn_id - 1)), None)
        assert example.last_system_response_acts == (previous.system_response_acts if previous else [])
    stranger = TurnLabel("nowhere.json", 0, {}, {}, {}, [], none, none)
    with pytest.raises(ConfigError, match="1 pool labels name turns not in the bundled corpus: nowhere.json#0"):
        quality.pool_examples(turns, [stranger])


def test_a_pool_report_that_is_not_one_is_a_one_line_error(tmp_path):
    script = Path(sys.executable).with_name("labelling")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    done = subprocess.run(
        [str(script), "quality", "--pool-from", str(bad), "--out", str(tmp_path / "q.json")], capture_output=True, text=True
    )
    assert (
        done.returncode == 2 and "not a readable quality report" in done.stderr and "--out of a labelling quality" in done.stderr
    )
    assert len([line for line in done.stderr.splitlines() if line.startswith("error")]) == 1
    assert not (tmp_path / "q.json").exists()


def test_the_channel_ranking_diagnostic_scores_every_candidate_three_ways(fast_job, tiny_lm, embedder, dev_dialogues):
    script = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "channel_ranking.py"), run_name="diag")
    schema = Schema.load(None, tuple(fast_job.services))
    labeller = PartitionLabeller(fast_job, schema, tiny_lm, tiny_lm, None, None)
    turn = next(t for d in dev_dialogues for t in d if len(t.turn_slot_values.get("hotel", {})) >= 2)
    row = script["rank_turn"](labeller, turn)
    assert row["candidates"] == ["gold", "no_change", "demo_like", "gold_minus_one"]
    assert all(len(row[way]) == 4 for way in script["WAYS"])
    assert row["likelihood"][0] == pytest.approx(row["joint"][0] - tiny_lm.score(*_channel(labeller, turn))[0], abs=1e-3)


def _channel(labeller, turn):
    """The channel prompt and gold tail, as the diagnostic builds them, for an independent check of its arithmetic."""
    from labelling.method.demos import DEMOS
    from labelling.method.prompts import DST_PREFIX, Example

    examples = [labeller._dst_example(d) for d in DEMOS]
    target = Example(turn.last_slot_values, turn.last_system_utterance, turn.user_utterance, turn.system_response)
    text = [turn.last_system_utterance, turn.user_utterance]
    gold = labeller.builder.intent_string(turn.last_slot_values, turn.slot_values, text)
    return labeller.builder.prompt("dst_channel", examples, target), [gold[len(DST_PREFIX) :]]
