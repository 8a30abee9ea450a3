"""The schema grammar accepts every gold label as prompts.py renders it, rejects what the schema lacks, and constrained
sampling on a tiny random model yields only completions the parser reads without a single error."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from labelling.engine.generation import Prompt, SamplingParams
from labelling.method.canonical import Canonicaliser
from labelling.method.grammar import MAX_TEXT, SchemaGrammar
from labelling.method.parsing import ActParser, DstParser
from labelling.method.prompts import ACT_PREFIX, ACT_STOPS, DST_PREFIX, DST_STOPS, Example, PromptBuilder
from labelling.states import SchemaNormalizer
from tests.support.labellers import make_labeller
from tests.support.tiny_models import smollm2_tokenizer

PRIOR = {"hotel": {"area": "east", "stars": "4"}, "train": {"day": "monday"}}


@pytest.fixture(scope="module")
def grammar(schema) -> SchemaGrammar:
    return SchemaGrammar(schema, smollm2_tokenizer())


def gold_completions(schema, turns):
    """(prior, DST completion, act completion) per turn, rendered as the prompts render examples.

    Gold goes through what every label goes through before it becomes an example: states are normalised onto the
    schema's spellings (as the canonicaliser does to predictions) and entity fields put in canonical order.
    """
    builder, canon, norm = PromptBuilder(schema), Canonicaliser(schema), SchemaNormalizer(schema)
    for turn in turns:
        prior, state = norm.normalize(turn.last_slot_values or {}), norm.normalize(turn.slot_values or {})
        intents = builder.intent_string(prior, state, [turn.last_system_utterance, turn.user_utterance])
        acts = builder.acts_string([canon.order(a) for a in turn.system_response_acts or []])
        yield prior, intents[len(DST_PREFIX) :] + "\n", acts[len(ACT_PREFIX) :] + "\n"


def rejected_gold(schema, grammar, turns) -> list[str]:
    """Gold completions the grammar refuses, or that the parser reads with an error (then the test data is wrong)."""
    bad, dst_parser, act_parser = [], DstParser(schema), ActParser(schema)
    for prior, dst, acts in gold_completions(schema, turns):
        assert not dst_parser.parse(DST_PREFIX + dst, prior).errors, dst
        assert not act_parser.parse(ACT_PREFIX + acts).errors, acts
        bad += [dst] * (not grammar.accepts(dst, grammar.dst_lark(prior)))
        bad += [acts] * (not grammar.accepts(acts, grammar.act_grammar))
    return bad


def test_a_spread_of_gold_labels_is_accepted(schema, grammar, dev_dialogues):
    turns = [t for d in dev_dialogues for t in d][::40]  # ~185 turns across the whole corpus; the slow test takes all
    assert rejected_gold(schema, grammar, turns) == []


@pytest.mark.slow
def test_every_gold_label_of_the_bundled_corpus_is_accepted(schema, grammar, dev_dialogues):
    turns = [t for d in dev_dialogues for t in d]
    assert len(turns) == 7365
    assert rejected_gold(schema, grammar, turns) == []


@pytest.mark.parametrize(
    "completion",
    [
        'find_hotel(name="the \\"grand\\" hotel", area="east")]\n',
        'find_hotel(stars=agent.state.hotel.area), agent.book_taxi(leave_at="[DELETE]")]\n',
        "no_change()]\n",
        "find_train(book_people=15, leave_at='09:15')]\n",
    ],
)
def test_dst_completions_in_the_schema_are_accepted(grammar, completion):
    assert grammar.accepts(completion, grammar.dst_lark(PRIOR))


@pytest.mark.parametrize(
    "completion",
    [
        'find_hotel(colour="red")]\n',  # invented slot
        'find_hotel(food="thai")]\n',  # a slot of another service
        'find_hotels(area="east")]\n',  # invented intent
        'find_hotel(area="downtown")]\n',  # categorical value not in the schema
        'find_hotel(area="east", area="west")]\n',  # duplicate keyword (a SyntaxError for Python)
        'find_hotel(area="east", name="alpha")]\n',  # slots out of schema order (name comes before area)
        "find_hotel(area=agent.state.taxi.destination)]\n",  # reference to a slot the prior state lacks
        "find_hotel(stars=04)]\n",  # not a value of stars (and a SyntaxError)
        'find_taxi(leave_at="10:00")]\n',  # taxi has only book_taxi
        'book_taxi(leave_at="10:00"), agent.find_hotel(area="east")]\n',  # services out of schema order
        "no_change(), agent.find_hotel(area='east')]\n",
        f'find_hotel(name="{"x" * (MAX_TEXT + 1)}")]\n',
        'find_hotel(name="a\nb")]\n',  # a raw line break ends the list early for the sampler and Python
        'find_hotel(name="\\N")]\n',  # an escape Python refuses
        'find_hotel(area="east")]',  # not closed by the stop string
    ],
)
def test_dst_completions_off_the_schema_are_rejected(grammar, completion):
    assert not grammar.accepts(completion, grammar.dst_lark(PRIOR))


@pytest.mark.parametrize(
    "completion",
    [
        "]\n",
        "Inform(entity=Hotel(name='alpha', area='east', choice='2')), Request(service='hotel', values=['price_range'])]\n",
        "NotifySuccess(service='booking', entity=Entity(name='alpha', ref='X1')), Goodbye()]\n",
        "Offer(entity=Train(leave_at='09:15', id='TR1234'), num_choices=3), RequestAlternatives()]\n",
        'Request(service="taxi", values=[])]\n',
        "Inform()]\n",
    ],
)
def test_act_completions_in_the_schema_are_accepted(grammar, completion):
    assert grammar.accepts(completion, grammar.act_grammar)


@pytest.mark.parametrize(
    "completion",
    [
        "Suggest(entity=Hotel(area='east'))]\n",  # invented act type
        "Inform(entity=Spa(area='east'))]\n",  # invented entity class
        "Inform(entity=Hotel(colour='red'))]\n",  # invented entity field
        "Inform(entity=Hotel(food='thai'))]\n",  # a field of another service
        "Inform(entity=Hotel(area='east', name='alpha'))]\n",  # fields out of schema order (duplicates impossible)
        "Request(service='spa', values=['area'])]\n",  # unknown service
        "Request(service='hotel', values=['food'])]\n",  # a slot the requested service lacks
        "Goodbye(entity=Hotel(area='east'))]\n",  # a field the act does not take
        "Inform(entity=Hotel(stars=04))]\n",
        ", ".join(["Goodbye()"] * 9) + "]\n",  # more than MAX_ACTS acts
    ],
)
def test_act_completions_off_the_schema_are_rejected(grammar, completion):
    assert not grammar.accepts(completion, grammar.act_grammar)


class AllowAll:
    """A constraint that forbids nothing: the constrained path must then draw exactly what the plain one draws."""

    def __init__(self, vocab: int):
        self.vocab, self.fed = vocab, []

    def allowed(self) -> torch.Tensor:
        return torch.ones(self.vocab, dtype=torch.bool)

    def advance(self, token: int) -> None:
        self.fed.append(token)


def test_a_constraint_that_allows_everything_changes_no_sample(tiny_lm):
    prompts = [Prompt("def f():\n", "    return ["), Prompt("def f():\n", "x = [")]
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, top_k=50, max_new_tokens=12, stop=("]\n",), seed=5)
    plain = tiny_lm.sample(prompts, params)
    made: list[AllowAll] = []

    def factory() -> AllowAll:
        made.append(AllowAll(len(tiny_lm.tokenizer)))
        return made[-1]

    assert tiny_lm.sample(prompts, params, constraints=[factory, factory]) == plain
    assert len(made) == 6 and all(c.fed for c in made)


def test_constrained_samples_of_a_random_model_all_parse_on_the_schema(schema, grammar, tiny_lm, dev_dialogues):
    """A random model writes garbage unconstrained; constrained, every sample parses with no error at all."""
    builder, canon = PromptBuilder(schema), Canonicaliser(schema)
    turns = [t for t in dev_dialogues[0][:3]]
    priors = [{}, *(t.slot_values for t in turns[:-1])]
    targets = [
        Example(p, t.last_system_utterance, t.user_utterance, t.system_response) for t, p in zip(turns, priors, strict=True)
    ]
    params = SamplingParams(n=4, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=400, seed=3)
    dst_prompts = [builder.prompt("dst", [], t) for t in targets]
    act_prompts = [builder.prompt("act", [], t) for t in targets]
    dst = tiny_lm.sample(dst_prompts, replace(params, stop=DST_STOPS), [lambda p=p: grammar.dst(p) for p in priors])
    acts = tiny_lm.sample(act_prompts, replace(params, stop=ACT_STOPS), [grammar.acts] * len(targets))
    for prior, samples in zip(priors, dst, strict=True):
        for sample in samples:
            assert sample.stopped, sample.text
            assert not DstParser(schema).parse(DST_PREFIX + sample.text, prior).errors, sample.text
            assert not canon.dst(sample.text, prior, []).failed
    for samples in acts:
        for sample in samples:
            assert sample.stopped and not ActParser(schema).parse(ACT_PREFIX + sample.text).errors, sample.text
    unconstrained = tiny_lm.sample(dst_prompts, replace(params, stop=DST_STOPS, max_new_tokens=30))
    assert any(DstParser(schema).parse(DST_PREFIX + s.text, {}).errors for ss in unconstrained for s in ss)


def test_labeller_with_constraints_records_no_parse_error(fast_job, schema, tiny_lm, embedder, dev_dialogues):
    turns = [d[0] for d in dev_dialogues[:2]]  # one wave: two turn-0s
    for module in (fast_job.dst, fast_job.act_tag):
        module.constrain_to_schema = True
        module.drop_unsaid_values = False  # a random model's values are unsaid; grounding's notes are not parse errors
        module.generation_cfg.sampling_args.max_new_tokens = 300
    labels = make_labeller(fast_job, schema, tiny_lm, embedder).label(turns)
    assert len(labels) == len(turns)
    for lab in labels:
        assert lab.dst.errors == [] and lab.act.errors == [] and not lab.flags, lab.to_dict()
        assert all(c.raw for c in lab.dst.candidates + lab.act.candidates)


def test_constrained_samples_cut_by_max_new_tokens_are_dropped_and_counted(fast_job, schema, tiny_lm, embedder, dev_dialogues):
    """A random model's constrained samples cut after 3 tokens are grammar prefixes: none may become a candidate."""
    turns = [d[0] for d in dev_dialogues[:2]]
    for module in (fast_job.dst, fast_job.act_tag):
        module.constrain_to_schema = True
        module.generation_cfg.sampling_args.max_new_tokens = 3
    labels = make_labeller(fast_job, schema, tiny_lm, embedder).label(turns)
    outputs = [out for lab in labels for out in (lab.dst, lab.act)]
    n = fast_job.dst.generation_cfg.sampling_args.n
    assert sum(out.cut_samples for out in outputs) > 0
    for out in outputs:
        kept = sum(len(c.raw) for c in out.candidates)
        assert kept + out.cut_samples >= min(n, fast_job.act_tag.generation_cfg.sampling_args.n)
        assert not any(e.startswith(m) for e in out.errors for m in ("unknown", "not an act")), out.errors
        if not out.candidates:  # every sample cut: the module's "nothing" answer, and the error says why
            assert out.chosen in ("[agent.no_change()]", "[]") and "ran past max_new_tokens=3" in out.errors[0]
    assert [lab.to_dict() for lab in labels] == [type(lab).from_dict(lab.to_dict()).to_dict() for lab in labels]


def test_the_switch_is_per_module_on_only_for_embedded_models_and_type_checked(tmp_path):
    from labelling import config
    from labelling.errors import ConfigError

    for profile in config.PROFILES:  # the reference's profiles sample unconstrained; the embedded ones inside the grammar
        job = config.load(profile=profile)
        assert job.dst.constrain_to_schema == job.act_tag.constrain_to_schema == profile.startswith("cpu-")
    path = tmp_path / "job.yaml"
    path.write_text("dst:\n  constrain_to_schema: false\n")
    job = config.load(path, profile="cpu-small")
    assert not job.dst.constrain_to_schema and job.act_tag.constrain_to_schema
    with pytest.raises(ConfigError, match="act_tag.constrain_to_schema: expected bool, got str"):
        config.from_dict({"act_tag": {"constrain_to_schema": "yes"}}, "cpu-small")


def test_generic_entity_fields_get_one_canonical_order_the_grammar_accepts(schema, grammar):
    canon = Canonicaliser(schema)
    a = canon.acts("NotifySuccess(service='booking', entity=Entity(ref='X1', book_day='monday', name='alpha'))]")
    b = canon.acts("NotifySuccess(service='booking', entity=Entity(name='alpha', ref='X1', book_day='monday'))]")
    assert a.text == b.text and not a.errors
    assert grammar.accepts(a.text[len(ACT_PREFIX) :] + "\n", grammar.act_grammar)
