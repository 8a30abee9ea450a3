"""The benchmark: the plain path (a) computes what the optimised path (b) does, only wastefully; the command runs end to end.

Prompts are the labeller's real DST prompts (a ~1.4k-token schema preamble) built from dev-set turns; the model is the
tiny random Llama behind the real SmolLM2 tokenizer.
"""

from __future__ import annotations

import json

import pytest

from labelling.bench.speed import PlainPath, agreement, canonical_label
from labelling.engine.kv_cache import shared_prefixes
from labelling.engine.lm import LanguageModel, SamplingParams
from labelling.method.prompts import DST_STOPS, Example, PromptBuilder
from tests.support.cli_helpers import run_cli
from tests.support.tiny_models import smollm2_tokenizer, tiny_llama

TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    built = tiny_llama()
    built.config.max_position_embeddings = 8192  # RoPE has no table to outgrow; the DST preamble is ~1.4k tokens
    return built


@pytest.fixture(scope="module")
def prompts(schema, dev_dialogues):
    """Three turns' DST prompts (one wave: two turns per plain batch, then one) and their channel prompts."""
    builder = PromptBuilder(schema)
    turns = [d[1] for d in dev_dialogues[:3]]
    targets = [Example(t.last_slot_values, t.last_system_utterance, t.user_utterance, t.system_response) for t in turns]
    example = Example({}, "", turns[0].user_utterances[0], turns[0].system_utterances[1], "[agent.no_change()]")
    direct = [builder.prompt("dst", [example], target) for target in targets]
    channel = [builder.prompt("dst_channel", [example], target) for target in targets]
    return direct, channel


def plain_and_fast(model) -> tuple[PlainPath, LanguageModel]:
    tok = smollm2_tokenizer()
    # (b) holds the whole wave in one pass, as on a GPU, so its prompts share passes and leading tokens.
    fast = LanguageModel.from_model(model, tok, max_batch_tokens=1 << 16)
    return PlainPath(LanguageModel.from_model(model, tok, reuse_prefix=False)), fast


def test_plain_path_scores_as_the_optimised_one(model, prompts):
    plain, fast = plain_and_fast(model)
    requests = [(p, ["find_hotel(area='north')]", " no", "book_train(day='friday')]\n", "x"]) for p in prompts[1]]
    got = plain.score_many(requests)
    want = fast.score_many(requests)
    assert [row == pytest.approx(w, abs=TOL) for row, w in zip(got, want, strict=True)] == [True] * 3
    assert len({round(s, 3) for row in got for s in row}) > 4  # distinct, non-trivial scores
    # Every candidate re-encoded its whole prompt, against one encoding of the preamble and of each body; the bodies
    # share their leading example, which is encoded once.
    preamble = fast.count_tokens(prompts[1][0].preamble)
    bodies = sum(fast.count_tokens(p.body) for p in prompts[1])
    ((shared, members),) = shared_prefixes([fast._encode(p.body) for p in prompts[1]])
    assert members == [0, 1, 2] and fast.stats.prompt_tokens == preamble + bodies - 2 * shared
    assert plain.stats.prompt_tokens == 4 * (3 * preamble + bodies)
    assert plain.score(*requests[0]) == pytest.approx(want[0], abs=TOL)


def test_plain_path_samples_as_the_optimised_one_and_counts_its_wasted_pass(model, prompts):
    plain, fast = plain_and_fast(model)
    params = SamplingParams(n=3, max_new_tokens=10, seed=42, top_p=0.9, top_k=50, stop=DST_STOPS)
    got, want = plain.sample(prompts[0], params), fast.sample(prompts[0], params)
    assert [[(s.text, s.n_tokens, s.stopped) for s in row] for row in got] == [
        [(s.text, s.n_tokens, s.stopped) for s in row] for row in want
    ]
    assert [s.logprob for row in got for s in row] == pytest.approx([s.logprob for row in want for s in row], abs=TOL)
    assert len({s.text for row in got for s in row}) > 3
    # The discarded greedy pass is one greedy generation per prompt, and it shows in the counters.
    greedy = LanguageModel.from_model(model, smollm2_tokenizer())
    greedy.sample(prompts[0], SamplingParams(n=1, temperature=0, max_new_tokens=10, stop=DST_STOPS))
    assert plain.discarded_tokens == greedy.stats.generated_tokens > 0
    assert plain.stats.generated_tokens == fast.stats.generated_tokens + plain.discarded_tokens
    assert not hasattr(fast, "discarded_tokens") and not hasattr(fast.stats, "discarded_tokens")


def test_plain_path_refuses_a_reusing_model(model):
    with pytest.raises(ValueError, match="reuse_prefix=False"):
        PlainPath(LanguageModel.from_model(model, smollm2_tokenizer()))


def test_agreement_counts_state_acts_and_both():
    state = canonical_label({"hotel": {"area": "east", "stars": "4"}}, [])
    assert state == canonical_label({"hotel": {"stars": "4", "area": "east"}}, [])  # key order does not matter
    other_state = canonical_label({"hotel": {"area": "west"}}, [])
    a = {"d#0": state, "d#1": state, "d#2": state, "d#3": state, "only-a#0": state}
    b = {
        "d#0": dict(state),
        "d#1": {**state, "state": other_state["state"]},
        "d#2": {**state, "acts": '["x"]'},
        "d#3": {"state": other_state["state"], "acts": '["x"]'},
        "only-b#0": state,
    }
    got = agreement(a, b)
    assert got["turns"] == 4
    assert (got["same_state"], got["same_acts"], got["same_label"]) == (0.5, 0.5, 0.25)
    assert got["differing_turns"] == ["d#1", "d#2", "d#3"]
    assert agreement({}, {})["same_label"] is None


@pytest.mark.slow  # two spawned processes, ~15 s: runs in the CI step for slow end-to-end checks
def test_bench_command_writes_both_paths_and_their_ratio(monkeypatch, capsys, tmp_path, model):
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    smollm2_tokenizer().save_pretrained(folder)
    module = {
        "model": {"model_name_or_path": str(folder)},
        "generation_cfg": {"sampling_args": {"n": 3, "best_of": 3, "max_new_tokens": 8}},
        "retriever": {"k_examples": 2, "example_warmup": 1},
    }
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"dst": module, "act_tag": module}))
    out = tmp_path / "report" / "bench.json"
    args = ["--config", config, "--limit-dialogues", "1", "--limit-turns", "2", "--threads", "1", "--out", out]
    code, stdout, err = run_cli(monkeypatch, capsys, "bench", *args)
    assert code == 0, err
    rep = json.loads(out.read_text())
    a, b = rep["paths"]["a"], rep["paths"]["b"]
    assert rep["setup"]["turns"] == a["turns"] == b["turns"] == 2 and rep["setup"]["dialogues"] == 1
    assert a["stats"]["discarded_tokens"] > 0 and a["stats"]["prompt_tokens"] > 2 * b["stats"]["prompt_tokens"]
    assert b["stats"]["prefix_hits"] > 0 and a["stats"]["prefix_hits"] == 0
    assert 0 < a["peak_rss_mb"] and 0 < b["peak_rss_mb"] and a["threads"] == b["threads"] == 1
    assert rep["ratio_b_over_a"]["turns_per_s"] == pytest.approx(b["turns_per_s"] / a["turns_per_s"])
    assert rep["agreement"]["turns"] == 2 and 0 <= rep["agreement"]["same_label"] <= 1
    assert "turns/s" in stdout and "b/a" in stdout
    table = out.with_suffix(".md").read_text()
    assert "| turns/s |" in table and "same label" in table


def test_bench_rejects_an_unknown_path(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "bench", "--paths", "a,c", "--out", tmp_path / "x.json")
    assert code == 2 and "unknown path c" in err
