"""The rule labeller on hand-made turns (each cue and pattern), as a labelling mode, and never reading gold."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from labelling import config as job_config
from labelling import ontology
from labelling.acts import Act
from labelling.corpus import read_corpus
from labelling.cues import CuesError, load_cues
from labelling.data import BUNDLED_CUES, BUNDLED_ONTOLOGY
from labelling.errors import ConfigError
from labelling.method import build
from labelling.method.metrics import act_triples
from labelling.method.rules import RuleLabeller, merge_acts, merge_states, normalise
from labelling.states import DELETE, compute_delta
from tests.support.corpus_files import MWZ22

RULES_ONLY = {m: {"generation_cfg": {"generation_mode": "rules"}} for m in ("dst", "act_tag")}


@pytest.fixture(scope="module")
def rules(schema) -> RuleLabeller:
    return RuleLabeller(schema, ontology.load(BUNDLED_ONTOLOGY), load_cues(BUNDLED_CUES))


def delta(rules: RuleLabeller, user: str, prior=None, system: str = "", dialogue: str | None = None) -> dict:
    """What one user turn changes, on a fresh dialogue unless ``dialogue`` names one already talked about."""
    prior = prior or {}
    return compute_delta(prior, rules.dst(dialogue or str(uuid.uuid4()), system, user, prior))


def test_categorical_values_and_their_synonyms_fill_the_named_service(rules):
    got = delta(rules, "I want a moderately priced restaurant in the center of town .")
    assert got == {"restaurant": {"price range": "moderate", "area": "centre"}}


def test_counts_times_and_days_for_a_restaurant_booking(rules):
    got = delta(rules, "Please book a table for 3 at 7:30pm on friday .", system="Shall I book the restaurant ?")
    assert got == {"restaurant": {"book people": "3", "book time": "19:30", "book day": "friday"}}


def test_hotel_counts_in_words_and_digits_stars_and_a_flag(rules):
    got = delta(rules, "I need a 4 star hotel with free wifi for two people for 5 nights .")
    assert got == {"hotel": {"stars": "4", "internet": "yes", "book people": "2", "book stay": "5"}}


def test_a_negated_flag_says_no(rules):
    assert delta(rules, "I need a guesthouse , and I do n't need parking .") == {"hotel": {"type": "guesthouse", "parking": "no"}}


def test_dont_care_fills_the_slot_the_system_asked_about(rules):
    prior = {"restaurant": {"food": "italian"}}
    got = delta(rules, "I do n't care .", prior, system="What area of town would you like ?")
    assert got == {"restaurant": {"area": "dontcare"}}


def test_any_before_a_slot_word_is_dont_care(rules):
    assert delta(rules, "I want a hotel , any price range is fine .") == {"hotel": {"price range": "dontcare"}}


def test_time_roles_decide_leave_at_and_arrive_by(rules):
    got = delta(rules, "I need a train on sunday that leaves after 10:15 and arrives by 18:00 .")
    assert got == {"train": {"day": "sunday", "leave at": "10:15", "arrive by": "18:00"}}


def test_place_roles_decide_departure_and_destination(rules):
    got = delta(rules, "I need a train to ely from cambridge .")
    assert got == {"train": {"destination": "ely", "departure": "cambridge"}}


def test_a_taxi_takes_entity_names_as_places(rules):
    got = delta(rules, "I need a taxi from the copper kettle to cambridge arts theatre .")
    assert got == {"taxi": {"departure": "the copper kettle", "destination": "cambridge arts theatre"}}


def test_names_from_the_database_fill_their_own_service(rules):
    assert delta(rules, "Can you tell me about the copper kettle ?") == {"restaurant": {"name": "the copper kettle"}}


def test_a_restatement_is_no_change(rules):
    prior = {"restaurant": {"area": "centre", "food": "chinese"}}
    assert delta(rules, "Yes , a chinese place in the centre please .", prior) == {}


def test_a_value_without_a_named_service_goes_to_the_one_the_dialogue_is_about(rules):
    state = rules.dst("talk", "", "I am looking for a cheap hotel .", {})
    assert delta(rules, "In the north , please .", state, dialogue="talk") == {"hotel": {"area": "north"}}


def test_normalise_undoes_multiwoz_tokenisation():
    assert normalise("I do n't mind , sheep 's green ; mid - range") == " i don't mind, sheeps green; mid-range "


def test_acts_from_phrases_patterns_and_questions(rules):
    acts = rules.acts("x", "Your booking was successful . The reference number is ABCD1234 . Anything else ?", {"hotel": {}})
    assert {a.kind for a in acts} == {"NotifySuccess", "RequestAlternatives"}
    asked = rules.acts("y", "What area and price range would you like for the restaurant ?", {})
    assert act_triples(asked) == {("Request", "restaurant", "area"), ("Request", "restaurant", "price_range")}
    assert [a.kind for a in rules.acts("z", "You 're welcome , goodbye !", {})] == ["Goodbye", "Greeting"]
    phone = rules.acts("w", "The phone number of the hotel is 01223456789 .", {})
    assert ("Inform", "hotel", "phone") in act_triples(phone)


def test_merges_let_the_second_win_and_apply_deletes():
    prior = {"hotel": {"area": "east", "stars": "4"}}
    merged = merge_states(prior, {"hotel": {"area": "west", "stars": DELETE}}, {"hotel": {"area": "north"}})
    assert merged == {"hotel": {"area": "north"}}
    first, second = [Act("Goodbye")], [Act("Goodbye"), Act("Greeting")]
    assert merge_acts(first, second) == [Act("Goodbye"), Act("Greeting")]


def rules_job(**extra) -> job_config.JobConfig:
    return job_config.from_dict({**copy.deepcopy(RULES_ONLY), **extra}, profile="cpu-small")


def test_rules_mode_labels_without_a_model_and_never_reads_gold(schema, dev_dialogues):
    turns = [t for d in dev_dialogues[:6] for t in d]
    labels = build.build_labeller(rules_job(), schema).label(turns)
    assert build.by_rules(rules_job().dst) and labeller_loaded_nothing(schema)
    # Gold replaced by nonsense must not move one label: the rules read text and their own prior state only.
    poisoned = [t.with_labels(slot_values={"hotel": {"name": "zzz"}}, last_slot_values={"taxi": {"type": "q"}}) for t in turns]
    again = build.build_labeller(rules_job(), schema).label(poisoned)
    plain = build.build_labeller(rules_job(), schema).label([t.without_gold() for t in turns])
    strip = [{**lab.to_dict(), "metrics": {}} for lab in labels]
    assert strip == [{**lab.to_dict(), "metrics": {}} for lab in again] == [lab.to_dict() for lab in plain]
    assert sum(bool(lab.delta) for lab in labels) > len(labels) / 3, "the rules should find values in many turns"


def labeller_loaded_nothing(schema) -> bool:
    labeller = build.build_labeller(rules_job(), schema)
    return labeller.dst.lm is None and labeller.act.lm is None and labeller.dst.index is None


def test_rules_label_a_multiwoz22_corpus(schema):
    dialogues = read_corpus(MWZ22, schema)
    labels = build.build_labeller(rules_job(), schema).label([t for d in dialogues for t in d])
    assert any(lab.delta for lab in labels) and any(lab.acts for lab in labels)


def test_rules_label_a_turn_level_hf_dataset(schema, dev_dialogues, tmp_path):
    import datasets

    rows = [t.to_row(schema) for t in dev_dialogues[0]]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    turns = [t for d in read_corpus(tmp_path / "hf", schema) for t in d]
    labels = build.build_labeller(rules_job(), schema).label(turns)
    assert len(labels) == len(rows) and any(lab.delta for lab in labels)


def test_a_user_ontology_and_cue_file_plug_in(schema, tmp_path):
    mine = tmp_path / "ontology.json"
    ontology.save({"restaurant": {"name": ("zanzibar grill",)}}, mine, "a test")
    job = rules_job(rules={"ontology": str(mine), "cues": str(BUNDLED_CUES)})
    labeller = build.build_labeller(job, schema)
    assert labeller.rules.ontology["restaurant"]["name"] == ("zanzibar grill",)
    assert labeller.rules.ontology["restaurant"]["area"]  # the schema's categorical values stay


def test_a_bad_cue_file_or_missing_rules_file_is_named(tmp_path):
    bad = tmp_path / "cues.json"
    bad.write_text(json.dumps({"services": {}}))
    with pytest.raises(CuesError, match="lacks synonyms"):
        load_cues(bad)
    with pytest.raises(ConfigError, match="rules.ontology"):
        rules_job(rules={"ontology": str(tmp_path / "absent.json")})
    with pytest.raises(ConfigError, match="with_rules"):
        job_config.from_dict({"dst": {"with_rules": "sometimes"}}, profile="cpu-small")


def test_the_ontology_is_built_from_a_database_folder(schema, tmp_path):
    (tmp_path / "hotel_db.json").write_text(json.dumps([{"name": "A B Guest House", "pricerange": "cheap", "leaveAt": "09:00"}]))
    built = ontology.from_database(tmp_path, schema)
    assert built == {"hotel": {"name": ("a b guest house",), "price range": ("cheap",)}}


def hybrid_job(fast_job, how: str, mode: str = "greedy"):
    job = copy.deepcopy(fast_job)
    job.dst.with_rules = job.act_tag.with_rules = how
    job.dst.generation_cfg.generation_mode = job.act_tag.generation_cfg.generation_mode = mode
    return job.validate()


def replay_rule_deltas(schema, labels) -> list[dict]:
    """The rules' own delta for each label, replayed in labelling order on the labeller's priors (as the labeller calls
    them)."""
    turns = {(t.dialogue_id, t.turn_id): t for d in _DIALOGUES for t in d}
    rules = RuleLabeller(schema, ontology.load(BUNDLED_ONTOLOGY), load_cues(BUNDLED_CUES))
    out = []
    for lab in labels:
        turn = turns[lab.key]
        state = rules.dst(turn.dialogue_id, turn.last_system_utterance, turn.user_utterance, lab.prior_state)
        out.append(compute_delta(lab.prior_state, state))
    return out


_DIALOGUES: list = []


@pytest.fixture(scope="module")
def few_turns(dev_dialogues):
    _DIALOGUES[:] = dev_dialogues[:1]
    return [t for d in _DIALOGUES for t in d][:4]


@pytest.mark.parametrize("how", ["override", "gaps"])
def test_rules_first_hybrids_keep_every_rule_value(fast_job, schema, tiny_lm, embedder, few_turns, how):
    from tests.support.labellers import make_labeller

    labels = make_labeller(hybrid_job(fast_job, how), schema, tiny_lm, embedder).label(few_turns)
    for lab, ruled in zip(labels, replay_rule_deltas(schema, labels), strict=True):
        for service, slots in ruled.items():
            for slot, value in slots.items():
                assert lab.delta.get(service, {}).get(slot) == value, (lab.key, slot)
        if how == "gaps":  # the LM added only free-text slots
            extra = {(svc, slot) for svc, slots in lab.delta.items() for slot in slots if slot not in ruled.get(svc, {})}
            assert all(not schema.service(svc).slot(slot).categorical for svc, slot in extra)


def test_the_rule_label_competes_as_a_candidate(fast_job, schema, tiny_lm, embedder, few_turns):
    from labelling.method.canonical import Canonicaliser
    from labelling.method.prompts import DST_PREFIX, PromptBuilder
    from labelling.method.rules import merge_states
    from tests.support.labellers import make_labeller

    job = hybrid_job(fast_job, "candidate", mode="noisy_channel_joint")
    labels = make_labeller(job, schema, tiny_lm, embedder).label(few_turns)
    canon, builder = Canonicaliser(schema), PromptBuilder(schema)
    for lab, ruled in zip(labels, replay_rule_deltas(schema, labels), strict=True):
        text = builder.intent_string(lab.prior_state, merge_states(lab.prior_state, {}, ruled))
        rule_text = canon.dst(text[len(DST_PREFIX) :], lab.prior_state, []).text
        assert rule_text in [c.canonical for c in lab.dst.candidates], lab.key


def test_rules_on_a_schema_of_ones_own_need_its_cue_file(tmp_path):
    from labelling.data import BUNDLED_SCHEMA

    mine = tmp_path / "schema.json"
    mine.write_text(BUNDLED_SCHEMA.read_text())
    with pytest.raises(ConfigError, match="rules.cues.*cue file for your schema.*cpu-qwen"):
        rules_job(schema_path=str(mine))
    assert rules_job(schema_path=str(mine), rules={"cues": str(BUNDLED_CUES)}).rules.cues == str(BUNDLED_CUES)


def test_a_job_file_naming_a_model_for_a_module_the_rules_label_is_refused(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"dst": {"model": {"model_name_or_path": "bigcode/starcoder"}}}))
    with pytest.raises(ConfigError, match="dst.model.model_name_or_path: names a model, but dst label by rules"):
        job_config.load(path)
    assert job_config.load(path, "cpu-qwen").dst.model.model_name_or_path == "bigcode/starcoder"
    greedy = {"model": {"model_name_or_path": "smollm2"}, "generation_cfg": {"generation_mode": "greedy"}}
    path.write_text(json.dumps({"dst": greedy}))
    assert job_config.load(path).dst.uses_lm
