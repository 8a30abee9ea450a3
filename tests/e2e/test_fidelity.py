"""Fidelity to the reference (docs/deviations.md): state references, mentions, the act preamble, zero-shot prompts,
index growth per batch, unparseable samples, best_of, and the reference's own job files."""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest

from labelling import config
from labelling.engine.generation import Sample
from labelling.method.canonical import Canonicaliser
from labelling.method.labeller import PartitionLabeller, _distinct, _likeliest, batches, schedule
from labelling.method.parsing import ActParser, reference_reads_cut
from labelling.method.prompts import EXAMPLE_ACT_KINDS, MODE_ARGUMENTS, PromptBuilder, mentioned
from labelling.method.retrieval import build_index
from labelling.records import TurnLabel
from tests.support.cli_helpers import run_cli
from tests.support.mongo_fixture import ingest_small, new_group, short_dialogues
from tests.support.partition_worker import tiny_job, tiny_labeller_factory

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "reference"
REFERENCE_JOBS = ("job_0.json", "train_50_100.json")
_REFERENCE_ARG = re.compile(r"(\w+)=agent\.state\.(\w+)\.(\w+)")


def _builder(schema) -> PromptBuilder:
    return PromptBuilder(schema)


def _scalar_identifiers(schema) -> set[str]:
    """Slots holding numbers or yes/no, by identifier (the same kind in every service that has them)."""
    return {
        slot.identifier
        for svc in schema.services
        for slot in svc.informable_slots
        if slot.type_hint == "int" or (slot.categorical and set(slot.values) <= {"yes", "no", "dontcare"})
    }


# --- 1. state references (audit A9) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prior", "new", "said"),
    [  # the audit's renders: each wrote a reference to a slot of another name
        ({"hotel": {"book people": "2"}}, {"hotel": {"book people": "2", "book stay": "2"}}, "two nights please"),
        ({"hotel": {"stars": "4"}}, {"hotel": {"stars": "4"}, "restaurant": {"book people": "4"}}, "a table for four"),
        ({"hotel": {"internet": "yes"}}, {"hotel": {"internet": "yes", "parking": "yes"}}, "i also need parking"),
    ],
)
def test_numbers_and_yes_no_never_refer_to_a_slot_of_another_name(schema, prior, new, said):
    intent = _builder(schema).intent_string(prior, new, ["", said])
    assert "agent.state" not in intent, intent


def test_a_number_said_as_a_word_is_said_so_it_is_written_as_a_value_not_a_reference(schema):
    prior = {"hotel": {"book people": "4"}}
    new = {"hotel": {"book people": "4"}, "restaurant": {"book people": "4"}}
    intent = _builder(schema).intent_string(prior, new, ["", "a table for four people please"])
    assert "agent.state" not in intent and "book_people=4" in intent.replace(" ", "")
    copied = _builder(schema).intent_string(prior, new, ["", "a table for the same group please"])
    assert "book_people=agent.state.hotel.book_people" in copied


def test_a_number_copied_from_the_same_slot_of_another_service_is_a_reference(schema):
    prior = {"hotel": {"book people": "3", "area": "east"}}
    new = {**prior, "restaurant": {"book people": "3", "area": "east"}}
    intent = _builder(schema).intent_string(prior, new, ["", "a table for the same group in the same part of town"])
    assert intent == "[agent.find_restaurant(area=agent.state.hotel.area, book_people=agent.state.hotel.book_people)]"
    said = _builder(schema).intent_string(prior, new, ["", "a table for 3 in the east"])
    assert "agent.state" not in said


def test_a_name_copied_into_another_slot_is_a_reference_unless_said(schema):
    """Text values keep the reference's rule: any prior slot with that value (a taxi to the hotel)."""
    prior = {"hotel": {"name": "acorn guest house"}}
    new = {**prior, "taxi": {"destination": "acorn guest house"}}
    builder = _builder(schema)
    assert builder.intent_string(prior, new, ["", "i need a taxi to the hotel"]) == (
        "[agent.book_taxi(destination=agent.state.hotel.name)]"
    )
    assert "agent.state" not in builder.intent_string(prior, new, ["", "a taxi to the acorn guesthouse please"])


def test_mentions_allow_the_intended_edit_distance():
    """Audit A10: 1 edit for 5 characters, 2 for 6 or more, at most one missing character; whole words below 5."""
    assert mentioned("centre", ["in the center please"])  # 2 substitutions: a near match of a 6-character value
    assert mentioned("wednesday", ["on wendesday"])
    assert mentioned("lotus", ["the lotsu place"])
    assert not mentioned("lotus", ["the lats place"])  # 2 edits on 5 characters
    assert not mentioned("cambridge", ["from cambdge please"])  # two characters missing
    assert not mentioned("east", ["in the west"]) and mentioned("east", ["east of town"])
    assert not mentioned("2", ["12 people"])
    assert mentioned("4", ["a table for four people"]) and mentioned("8", ["", "a table for eight"])  # audit N4
    assert mentioned("1", ["just one person"]) and mentioned("12", ["twelve nights"])
    assert not mentioned("4", ["fourteen people"]) and not mentioned("3", ["for four people"])


def test_golden_intents_on_the_bundled_corpus_refer_only_across_services_of_one_slot_name(schema, dev_dialogues):
    """Every gold turn of the first 150 dialogues, rendered as an intent: a number or yes/no reference names its slot."""
    builder, scalar = _builder(schema), _scalar_identifiers(schema)
    references = 0
    for turn in (t for d in dev_dialogues[:150] for t in d):
        intent = builder.intent_string(turn.last_slot_values, turn.slot_values, [turn.last_system_utterance, turn.user_utterance])
        for arg, _, other in _REFERENCE_ARG.findall(intent):
            references += 1
            assert arg == other or arg not in scalar, f"{turn.key}: {intent}"
    assert references, "the slice should hold some references at all"


# --- 4. the act preamble and zero-shot prompts (audit A2, F4) ----------------------------------------------------


def test_the_act_preamble_shows_schema_derived_example_calls_that_parse(schema):
    builder = _builder(schema)
    preamble = builder.preamble("act")
    calls = [builder.act_string(a) for a in builder.example_acts]
    assert [c.split("(")[0] for c in calls] == list(EXAMPLE_ACT_KINDS)
    assert "Request(service='hotel', values=['price_range', 'type'])" in calls
    for call in calls:
        assert f"\n    {call}\n" in preamble
    parsed = ActParser(schema).parse(f"[{', '.join(calls)}]")
    assert not parsed.errors and parsed.acts == builder.example_acts
    assert builder.preamble("act_channel").count("ThankYou()\n") == 1
    assert "Request(" not in builder.preamble("dst").split('if __name__ == "__main__":')[1]


def test_fill_with_demos_is_off_unless_the_cpu_small_profile_sets_it():
    assert config.JobConfig().dst.fill_with_demos is None  # unset: resolved by the model when validated
    assert config.from_dict({"dst": {"model": {"model_name_or_path": "my/model"}}}, "cpu-qwen").dst.fill_with_demos is False
    assert config.load(REFERENCE / "job_0.json").act_tag.fill_with_demos is False
    assert config.load(profile="starcoder").dst.fill_with_demos is False
    assert config.load(profile="cpu-small").dst.fill_with_demos is True


def test_schema_constraints_follow_the_model_so_a_reference_job_file_samples_unconstrained():
    assert config.from_dict({"dst": {"model": {"model_name_or_path": "my/model"}}}, "cpu-qwen").dst.constrain_to_schema is False
    reference = config.load(REFERENCE / "job_0.json")  # laid over cpu-small, whose embedded model samples constrained
    assert reference.dst.constrain_to_schema is reference.act_tag.constrain_to_schema is False
    assert config.load(profile="cpu-small").act_tag.constrain_to_schema is True


class _PromptSpy:
    """The tiny LM, keeping every prompt it samples from and every set of sampling settings."""

    def __init__(self, inner):
        self.inner, self.prompts, self.params = inner, [], []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def sample(self, prompts, params):
        self.prompts += prompts
        self.params.append(params)
        return self.inner.sample(prompts, params)


def _short_sampling(job: config.JobConfig, n: int = 2) -> config.JobConfig:
    for module in (job.dst, job.act_tag):
        module.generation_cfg.sampling_args.n = module.generation_cfg.sampling_args.best_of = n
        module.generation_cfg.sampling_args.max_new_tokens = 6
    return job


def _labeller(job, schema, lm, embedder) -> PartitionLabeller:
    def index(kind, module):
        r = module.retriever
        return build_index(embedder, kind, k=r.k_examples, minimum_distinct=r.minimum_distinct, warmup=r.example_warmup)

    return PartitionLabeller(job, schema, lm, lm, index("dst", job.dst), index("act", job.act_tag))


def test_the_reference_job_file_prompts_zero_shot_with_no_invented_demos(schema, tiny_lm, embedder, dev_dialogues):
    job = _short_sampling(config.load(REFERENCE / "job_0.json"))
    spy = _PromptSpy(tiny_lm)
    _labeller(job, schema, spy, embedder).label(dev_dialogues[0][:2])
    assert len(spy.prompts) == 4  # DST and acts for two turns, all below the 32-item warm-up
    for prompt in spy.prompts:
        assert prompt.body.startswith("    # Example 1\n") and "# Example 2" not in prompt.body
        assert "demo" not in prompt.body and "lotus garden" not in prompt.body
    assert "Offer(entity=Train(" in spy.prompts[1].preamble  # the act prompt still shows the call syntax


# --- 2. index growth every N turns (audit F1) ----------------------------------------------------------------------


def test_turns_per_batch_cuts_waves_in_order_and_keeps_warm_up_singletons(dev_dialogues):
    turns = [t for d in dev_dialogues[:12] for t in d]
    whole = batches(turns, 2, 42, warmup=3)
    cut = batches(turns, 2, 42, warmup=3, turns_per_batch=2)
    assert [t.key for w in cut for t in w] == [t.key for w in whole for t in w]
    assert [len(w) for w in cut[:3]] == [1, 1, 1]
    assert max(len(w) for w in cut) == 2 < max(len(w) for w in whole)
    assert all(len({t.turn_id for t in w}) == 1 for w in cut)
    job = config.load(profile="starcoder")
    assert job.turns_per_batch == 2 and config.load(profile="cpu-small").turns_per_batch == 0
    assert [len(w) for w in schedule(turns, job)][24:] and max(len(w) for w in schedule(turns, job)) == 2


def test_the_index_grows_after_every_batch_of_n_turns(fast_job, schema, tiny_lm, embedder, dev_dialogues):
    fast_job.turns_per_batch, fast_job.data_num_partitions = 2, 1
    turns = [t for d in dev_dialogues[:5] for t in d[:2]]
    labeller = _labeller(_short_sampling(fast_job), schema, tiny_lm, embedder)
    sizes: list[tuple[int, int, int]] = []
    labeller.label(turns, on_batch=lambda batch: sizes.append((len(batch), len(labeller.dst.index), len(labeller.act.index))))
    assert [n for n, _, _ in sizes] == [2, 2, 1, 2, 2, 1]  # 5 turn-0s, then 5 turn-1s, two at a time
    done = 0
    for n, dst_items, act_items in sizes:
        done += n
        assert dst_items == act_items == done


def test_resume_inside_a_wave_cut_into_batches_labels_nothing_twice(fast_job, schema, tiny_lm, embedder, dev_dialogues):
    fast_job.turns_per_batch, fast_job.data_num_partitions = 2, 1
    job = _short_sampling(fast_job)
    turns = [t for d in dev_dialogues[:3] for t in d[:2]]
    reference = _labeller(job, schema, tiny_lm, embedder).label(turns)
    saved: list[TurnLabel] = []

    def crash_after_first_batch(batch):
        saved.extend(TurnLabel.from_dict(lab.to_dict()) for lab in batch)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _labeller(job, schema, tiny_lm, embedder).label(turns, on_batch=crash_after_first_batch)
    assert len(saved) == 2  # the first two turn-0s of a three-turn wave
    new: list[TurnLabel] = []
    resumed = _labeller(job, schema, tiny_lm, embedder).label(turns, done=saved, on_batch=new.extend)
    assert [lab.to_dict() for lab in resumed] == [lab.to_dict() for lab in reference]
    assert sorted(lab.key for lab in new) == sorted({t.key for t in turns} - {lab.key for lab in saved})


class _Crash(Exception):
    pass


def test_a_partition_run_resumed_inside_a_cut_wave_matches_an_uninterrupted_one(connected, dev_dialogues, schema):
    from labelling.fleet import runner, store

    job = tiny_job()
    job.turns_per_batch, job.data_num_partitions = 2, 1
    corpus, (split,) = ingest_small(short_dialogues(dev_dialogues, 3, 2), schema, split_size=3)
    factory = tiny_labeller_factory()
    whole = new_group(corpus, job)
    assert runner.run_partition(whole, split, labeller_factory=factory).new_turns == 6

    def crash_after_first_batch(done: int, total: int) -> None:
        raise _Crash

    crashed = new_group(corpus, job)
    with pytest.raises(_Crash):
        runner.run_partition(crashed, split, labeller_factory=factory, on_progress=crash_after_first_batch)
    assert store.count_labels(crashed, split) == 2  # two of the three turn-0s
    resumed = runner.run_partition(crashed, split, labeller_factory=factory, lease_s=0)
    assert resumed.status == "done" and resumed.new_turns == 4 and store.count_labels(crashed, split) == 6

    def stored(group):
        return {s.label.key: s.label.to_dict() for s in store.load_labels(group, split)}

    assert stored(crashed) == stored(whole)
    assert [s.batch for s in store.load_labels(whole, split)] == [0, 0, 1, 2, 2, 3]


# --- 3. unparseable samples (audit C4) ---------------------------------------------------------------------------


def _sample(text: str, logprob: float) -> Sample:
    return Sample(text=text, logprob=logprob, n_tokens=3, stopped=True)


def test_unparseable_samples_compete_as_no_change_unless_dropped(schema):
    canon = Canonicaliser(schema)
    prior = {"hotel": {"area": "east"}}
    samples = [_sample("find_hotel(stars=4)]", -3.0), _sample("%%% not code", -1.0), _sample("?? )(", -2.0)]

    def parse(sample):
        return canon.dst(sample.text, prior, ["", "four stars"])

    competing, labels = _distinct(samples, parse, compete=True)
    assert [c.canonical for c in competing] == ["[agent.find_hotel(stars=4)]", "[agent.no_change()]"]
    assert competing[1].raw == ["%%% not code", "?? )("] and labels["[agent.no_change()]"].state == prior
    dropped, _ = _distinct(samples, parse, compete=False)
    assert [c.canonical for c in dropped] == ["[agent.find_hotel(stars=4)]"]
    assert config.load(profile="starcoder").dst.unparseable_samples == "compete"
    assert config.load(REFERENCE / "job_0.json").act_tag.unparseable_samples == "compete"
    assert config.load(profile="cpu-small").dst.unparseable_samples == "drop"


@pytest.mark.parametrize(
    ("prefix", "text", "readable"),
    [  # the audit's cases (N2): a value or call left open is lost in the reference; a whole call survives its one `]`
        ("[agent.", 'find_restaurant(food="italian", name="curry gar', False),
        ("[agent.", 'find_train(destination="ely", leave_at="10:', False),
        ("[agent.", 'find_hotel(area="east"), agent.find_taxi(', False),
        ("[agent.", 'find_hotel(area="east")', True),
        ("[agent.", 'find_hotel(area="east")]', True),
        ("[", "Inform(entity=Hotel(name='acorn gu", False),
        ("[", "Inform(entity=Hotel(area='east')), Request(service='hotel', values=['stars'", False),
        ("[", "Inform(entity=Hotel(area='east'))", True),
    ],
)
def test_a_cut_sample_is_readable_only_where_the_reference_can_read_it(prefix, text, readable):
    assert reference_reads_cut(prefix, text) is readable


def test_a_cut_sample_the_reference_cannot_read_is_unparseable(schema, dev_dialogues):
    labeller = PartitionLabeller(config.load(REFERENCE / "job_0.json"), schema, None, None, None, None)
    turn = dev_dialogues[0][0]
    prior = {"restaurant": {"area": "centre"}}
    prepared = SimpleNamespace(turn=turn, prior=prior)
    cut = Sample('find_restaurant(food="italian", name="curry gar', -1.0, 48, stopped=False)
    whole_cut = Sample('find_restaurant(food="italian")', -2.0, 48, stopped=False)
    stopped = Sample('find_restaurant(food="italian", name="curry garden")', -3.0, 20, stopped=True)
    read = partial(PartitionLabeller._read, labeller.dst, prepared)

    assert read(cut).failed and read(cut).state == prior  # "no change", as the reference's failed exec
    assert "cut by max_new_tokens" in read(cut).errors[0]
    assert read(whole_cut).state == {"restaurant": {"area": "centre", "food": "italian"}}
    assert read(stopped).state["restaurant"]["name"] == "curry garden"
    unclosed = Sample('find_restaurant(food="italian", name="curry gar', -1.0, 10, stopped=True)  # a stop, not a cut
    assert read(unclosed).state["restaurant"]["name"] == "curry gar"  # closed and read as before (D1)
    competing, _ = _distinct([cut, stopped], read, compete=True)
    assert [c.canonical for c in competing] == ["[agent.no_change()]", stopped_text(labeller, prepared, stopped)]
    dropped, _ = _distinct([cut, stopped], read, compete=False)
    assert [c.canonical for c in dropped] == [stopped_text(labeller, prepared, stopped)]
    acts = PartitionLabeller._read(labeller.act, prepared, Sample("Inform(entity=Hotel(name='acorn gu", -1.0, 64, False))
    assert acts.failed and acts.acts == []


def stopped_text(labeller, prepared, sample) -> str:
    return labeller.dst.parse(prepared.turn, prepared.prior, sample.text).text


def test_an_unknown_unparseable_samples_setting_names_the_choices():
    with pytest.raises(config.ConfigError, match=r"dst.unparseable_samples: must be one of compete, drop"):
        config.from_dict({"dst": {"unparseable_samples": "vote"}})


# --- 5. smaller points: best_of, dtype, stop strings ---------------------------------------------------------------


def test_best_of_draws_more_and_keeps_the_n_likeliest(fast_job, schema, tiny_lm, embedder, dev_dialogues):
    samples = [_sample(str(i), lp) for i, lp in enumerate([-5.0, -1.0, -3.0, -2.0])]
    assert [s.text for s in _likeliest(samples, 2)] == ["1", "3"]
    job = _short_sampling(fast_job)
    job.dst.generation_cfg.sampling_args.best_of = 4
    spy = _PromptSpy(tiny_lm)
    label = _labeller(job, schema, spy, embedder).label(dev_dialogues[0][:1])[0]
    assert [p.n for p in spy.params] == [4, 2]  # DST draws best_of, acts (best_of = n) draw n
    assert sum(len(c.raw) for c in label.dst.candidates) == 2


def test_the_starcoder_profile_pins_bfloat16_like_the_reference():
    job = config.load(profile="starcoder")
    assert job.dst.model.torch_dtype == job.act_tag.model.torch_dtype == "bfloat16"
    assert job.dst.model.model_name_or_path == "bigcode/starcoder"


# --- the reference's own job files ---------------------------------------------------------------------------------

# Keys of the reference's job files that are warned as having no effect here (docs/deviations.md says why for each).
# What the reference's job files set that has no effect here (config.LEGACY_KEYS says why, key by key).
_MODULE_LEGACY = [
    "module_type",
    "generation_cfg.prompt_mode",
    "generation_cfg.noisy_channel_prompt_mode",
    "model.attn_implementation",
    "model.batch_size",
    "model.model_type",
    "model.stop_sequences",
    "retriever.type",
]
_MANIFEST_LEGACY = ["group_id_must_exist", "manifest_must_exist", "manifest_path", "type", "write_to_manifest"]
REFERENCE_LEGACY_KEYS = (
    ["output", "profile", "wandb", "data.eval_set_path_or_name"]
    + [f"manifest.{k}" for k in _MANIFEST_LEGACY]
    + [f"{m}.{k}" for m in ("dst", "act_tag") for k in _MODULE_LEGACY]
)


def _legacy_warnings(records) -> list[str]:
    pattern = re.compile(r"config key (\S+) is from the reference's schema")
    return [m.group(1) for r in records if r.name == "labelling.config" and (m := pattern.search(r.getMessage()))]


@pytest.mark.parametrize("name", REFERENCE_JOBS)
def test_the_reference_job_files_load_with_no_invented_settings(name, caplog):
    raw = json.loads((REFERENCE / name).read_text())
    with caplog.at_level(logging.WARNING, logger="labelling.config"):
        job = config.load(REFERENCE / name)
    assert sorted(_legacy_warnings(caplog.records)) == sorted(REFERENCE_LEGACY_KEYS)
    assert job.data.eval_set_split_name == raw["data"]["eval_set_split_name"]
    assert job.dst.retriever.example_warmup == raw["dst"]["retriever"]["example_warmup"]
    assert job.data_warmup == raw["data_warmup"] and job.data_num_partitions == 4
    assert job.manifest.seed_retrievers_from_manifest is raw["manifest"]["seed_retrievers_from_manifest"]
    for module in (job.dst, job.act_tag):
        assert module.fill_with_demos is False and module.unparseable_samples == "compete"
        assert module.model.torch_dtype == "bfloat16"
    assert job.dst.generation_cfg.sampling_args.top_p == 0.7 and job.act_tag.generation_cfg.sampling_args.top_p == 0.8


# Every setting that changes a label, as the reference runs job_0.json and its dependents (docs/method.md §2.3-2.4;
# 120 new tokens is its HF client's default for sampling, which its job files do not override).
REFERENCE_LABEL_SETTINGS = {
    "turns_per_batch": 2,  # on a GPU of 50 GiB and more
    "data_num_partitions": 4,
    "dst": {
        "model": ("bigcode/starcoder", "bfloat16", None),
        "retriever": ("sentence-transformers/all-mpnet-base-v2", True, 8, 4, "context_system_user"),
        "decoding": ("noisy_channel_joint", 8, 8, 0.7, 50, 1.0, 120),
        "behaviour": (False, "compete", False, False, True),
    },
    "act_tag": {
        "model": ("bigcode/starcoder", "bfloat16", None),
        "retriever": ("sentence-transformers/all-mpnet-base-v2", True, 6, 4, "user_response"),
        "decoding": ("noisy_channel_cond", 8, 8, 0.8, 50, 1.0, 120),
        "behaviour": (False, "compete", False, False, True),
    },
}


def _label_settings(job: config.JobConfig) -> dict:
    out = {"turns_per_batch": job.turns_per_batch, "data_num_partitions": job.data_num_partitions}
    for name in ("dst", "act_tag"):
        module = getattr(job, name)
        m, r, g = module.model, module.retriever, module.generation_cfg
        s = g.sampling_args
        out[name] = {
            "model": (m.model_name_or_path, m.torch_dtype, m.weights_quantization),
            "retriever": (r.model_name_or_path, r.use_retriever, r.k_examples, r.minimum_distinct, r.retrieval_input_format),
            "decoding": (g.generation_mode, s.n, s.best_of, s.top_p, s.top_k, s.temperature, s.max_new_tokens),
            "behaviour": (
                module.fill_with_demos,
                module.unparseable_samples,
                module.constrain_to_schema,
                module.drop_unsaid_values,
                module.add_predictions_to_index,
            ),
        }
    return out


@pytest.mark.parametrize("profile", [None, "starcoder"])
def test_the_reference_job_files_resolve_to_every_label_changing_setting_of_the_reference(profile):
    from labelling.fleet.groups import load_jobs

    seed_only = config.load(REFERENCE / "job_0.json", profile)
    group, splits = load_jobs([REFERENCE / "job_0.json", REFERENCE / "train_50_100.json"], profile)
    assert splits == ["train_0_50", "train_50_100"]
    assert _label_settings(seed_only) == REFERENCE_LABEL_SETTINGS
    assert _label_settings(group) == REFERENCE_LABEL_SETTINGS


def test_a_job_file_keeps_the_limits_it_sets_and_greedy_gets_the_reference_greedy_limit(tmp_path):
    raw = json.loads((REFERENCE / "job_0.json").read_text())
    raw["dst"]["generation_cfg"]["sampling_args"]["max_new_tokens"] = 77
    raw["act_tag"]["generation_cfg"]["generation_mode"] = "greedy"
    path = tmp_path / "job.json"
    path.write_text(json.dumps(raw))
    job = config.load(path)
    assert job.dst.generation_cfg.sampling_args.max_new_tokens == 77
    assert job.act_tag.generation_cfg.sampling_args.max_new_tokens == 128  # the reference's greedy pass


@pytest.mark.parametrize("name", REFERENCE_JOBS)
def test_labelling_run_accepts_the_reference_job_file_and_names_its_legacy_keys(
    name,
    connected,
    monkeypatch,
    capsys,
    caplog,
    tmp_path,
):
    monkeypatch.delenv("LABELLING_BROKER_URL", raising=False)
    monkeypatch.setenv("LABELLING_STATE_DIR", str(tmp_path / "state"))
    with caplog.at_level(logging.WARNING, logger="labelling.config"):
        code, _, err = run_cli(
            monkeypatch, capsys, "run", "--config", REFERENCE / name, "--corpus", "no-such-corpus", "--group", "g-ref", "--local"
        )
    # The config passed: the run stops at the next check, the corpus, which this test leaves missing on purpose.
    assert code == 2 and "unknown corpus 'no-such-corpus'" in err and "config key" not in err
    assert sorted(_legacy_warnings(caplog.records)) == sorted(REFERENCE_LEGACY_KEYS)


# --- golden prompts: every prompt kind on fixed turns of the bundled corpus ----------------------------------------


def test_golden_prompts_of_every_kind_on_fixed_turns(schema, dev_dialogues):
    labeller = PartitionLabeller(config.load(REFERENCE / "job_0.json"), schema, None, None, None, None)
    builder = labeller.builder
    dialogue = dev_dialogues[3]
    examples = [t for d in dev_dialogues[10:13] for t in d[1:3]]
    for turn in dialogue[:4]:
        for mode in MODE_ARGUMENTS:
            module = labeller.dst if mode.startswith("dst") else labeller.act
            target = module.target(turn, turn.last_slot_values, turn.slot_values)
            prompt = builder.prompt(mode, [module.render(x) for x in examples], target)
            text = prompt.preamble + prompt.body
            assert text.count("# Example ") == len(examples) + 1
            assert text.endswith(f"{'user_intent=[agent.' if mode.startswith('dst') else 'system_acts=['}")
            if mode == "act_channel":
                assert text.endswith(f"# Example {len(examples) + 1}\n    response = agent.handle_turn(\n        system_acts=[")
            if mode.startswith("act"):
                assert all(f"    {builder.act_string(a)}\n" in prompt.preamble for a in builder.example_acts)
            else:
                for arg, _, other in _REFERENCE_ARG.findall(prompt.body):
                    assert arg == other or arg not in _scalar_identifiers(schema), prompt.body


def test_every_method_section_cited_in_the_code_resolves_to_our_method_doc():
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "method.md").read_text()
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", doc, re.M))
    cited: set[str] = set()
    sources = ("labelling/**/*.py", "tests/**/*.py", "cli/*.py", "benchmarks/*")
    for path in [p for pattern in sources for p in root.glob(pattern)]:
        if path.is_file():
            for match in re.finditer(r"method\.md[^§\n]{0,40}§(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?", path.read_text()):
                cited.update(g for g in match.groups() if g)
    assert cited and not cited - headings, f"cited but not in docs/method.md: {sorted(cited - headings)}"
    outside = re.compile("spec" + r"/method\.md|shared/" + "spec")  # split so this file does not match itself
    sources = [p for p in [*root.glob("**/*.py"), *root.glob("**/*.md")] if ".venv" not in p.parts]
    assert not [p.name for p in sources if outside.search(p.read_text())]
