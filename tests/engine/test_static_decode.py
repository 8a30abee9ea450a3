"""Decoding on the static cache (labelling/engine/static_decode.py) on tiny random models: the same samples as the eager
loop for the same seeds, whatever the row bucket and the runner, with fixed shapes and no host sync inside a step."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from labelling.engine import eager_decode, static_decode
from labelling.engine.lm import LanguageModel, Prompt, SamplingParams
from tests.support.decoding import sample_with_ids

TOL = 1e-4
SCHEMA = "class Hotel:\n    def find_hotel(self, area: str, stars: int):\n        ...\n"
PROMPTS = [
    Prompt(SCHEMA, "# user: I need a cheap hotel in the north\nagent."),
    Prompt(SCHEMA, "# user: hi"),
    Prompt(SCHEMA, "# system: anything else?\n# user: no thanks, that is all for today\nagent."),
]


class FakeGraphRunner:
    """Stands in for CUDA graphs on a CPU: capture warms the step up once (as CUDA's capture does, with real side
    effects on the arena), then each replay calls the recorded step."""

    name = "fake_graph"
    warms_up = True

    def __init__(self):
        self.captures, self.capture_seconds, self.replays, self.warming = 0, 0.0, 0, False

    def capture(self, step):
        self.warming = True
        step()  # the warm-up run: the arena's scratch mode must make it harmless
        self.warming = False
        self.captures += 1

        def replay():
            self.replays += 1
            step()

        return replay


def engines(model, tok, **options):
    eager = LanguageModel.from_model(model, tok, guess_tokens=0)
    static = LanguageModel.from_model(model, tok, guess_tokens=0, static_decode=True, **options)
    return eager, static


def assert_same(got, want):
    (samples, ids), (want_samples, want_ids) = got, want
    assert ids == want_ids
    assert [[(s.text, s.n_tokens, s.stopped) for s in row] for row in samples] == [
        [(s.text, s.n_tokens, s.stopped) for s in row] for row in want_samples
    ]
    flat = [s.logprob for row in samples for s in row]
    assert flat == pytest.approx([s.logprob for row in want_samples for s in row], abs=TOL)


def stopping_params(eager: LanguageModel, tok) -> SamplingParams:
    """Sampling with stop strings cut from the first samples' own text, so rows end at different steps."""
    params = SamplingParams(n=4, max_new_tokens=14, seed=11)
    _, drawn = sample_with_ids(LanguageModel.from_model(eager.model, tok, guess_tokens=0), PROMPTS, params)
    return replace(params, stop=tuple(tok.decode(drawn[r][: r % 6 + 2])[-2:] for r in range(0, len(drawn), 2)))


@pytest.mark.parametrize("temperature", [1.0, 0.0], ids=["sampled", "greedy"])
def test_static_cache_gives_the_eager_samples(model, tok, temperature):
    eager, static = engines(model, tok)
    params = replace(stopping_params(eager, tok), temperature=temperature)
    want = sample_with_ids(eager, PROMPTS, params)
    got = sample_with_ids(static, PROMPTS, params)
    assert_same(got, want)
    assert static.stats.static_batches == 1 and static.stats.eager_batches == 0
    assert static.stats.generated_tokens == eager.stats.generated_tokens
    if temperature > 0:  # rows did end at different steps, some on a stop string
        lengths = [s.n_tokens for row in want[0] for s in row]
        assert len(set(lengths)) > 2 and any(s.stopped for row in want[0] for s in row)


def test_eos_ends_rows_and_one_token_needs_no_decode(model, tok):
    eager, static = engines(model, tok)
    params = SamplingParams(n=4, max_new_tokens=10, seed=2)
    _, drawn = sample_with_ids(LanguageModel.from_model(model, tok, guess_tokens=0), PROMPTS, params)
    eager._eos = static._eos = {drawn[0][3]}  # a token drawn mid-sample stands for EOS: rows end on it
    want = sample_with_ids(eager, PROMPTS, params)
    assert_same(sample_with_ids(static, PROMPTS, params), want)
    assert any(s.stopped and s.n_tokens < params.max_new_tokens for row in want[0] for s in row)
    one = replace(params, max_new_tokens=1)
    assert_same(sample_with_ids(static, PROMPTS, one), sample_with_ids(eager, PROMPTS, one))
    assert static.stats.eager_batches == 1  # one token comes from the prompt's pass: nothing to decode


@pytest.mark.parametrize("buckets", [(20,), (3, 6, 12), (1, 2, 4, 8, 16, 32)], ids=["one", "odd", "powers"])
def test_samples_do_not_depend_on_the_bucket(model, tok, monkeypatch, buckets):
    eager, static = engines(model, tok)
    params = stopping_params(eager, tok)
    want = sample_with_ids(eager, PROMPTS, params)
    monkeypatch.setattr(static_decode, "BUCKETS", buckets)
    rows_per_step = []
    step = static_decode.step

    def recording(model, arena, rows, *args):
        rows_per_step.append(rows)
        return step(model, arena, rows, *args)

    monkeypatch.setattr(static_decode, "step", recording)
    assert_same(sample_with_ids(static, PROMPTS, params), want)
    assert set(rows_per_step) <= set(buckets) and rows_per_step[0] == static_decode.bucket_for(12)
    if len(buckets) > 1:  # the batch moved to smaller buckets as rows ended
        assert rows_per_step == sorted(rows_per_step, reverse=True) and rows_per_step[-1] < rows_per_step[0]


def test_more_rows_than_the_largest_bucket_decode_eagerly(model, tok, monkeypatch):
    eager, static = engines(model, tok)
    monkeypatch.setattr(static_decode, "BUCKETS", (4,))
    params = SamplingParams(n=3, max_new_tokens=5, seed=1)
    assert_same(sample_with_ids(static, PROMPTS, params), sample_with_ids(eager, PROMPTS, params))
    assert static.stats.static_batches == 0 and static.stats.eager_batches == 1


def test_stops_are_handled_one_step_late_and_the_drafts_are_the_same(model, tok, monkeypatch):
    """A row that ends at token t is still fed token t at the next step (the host has not read it yet): the steps feed
    more live rows than the eager loop's, yet every draft is the eager one."""
    eager, static = engines(model, tok)
    params = stopping_params(eager, tok)
    fed = {"eager": 0, "static": 0}
    eager_step, static_step = eager_decode._step, static_decode.step

    def counting_eager(model, state, tokens, live, *args):
        fed["eager"] += sum(live)
        return eager_step(model, state, tokens, live, *args)

    def counting_static(model, arena, rows, *args):
        fed["static"] += int(arena.alive[:rows].sum())
        return static_step(model, arena, rows, *args)

    monkeypatch.setattr(eager_decode, "_step", counting_eager)
    monkeypatch.setattr(static_decode, "step", counting_static)
    want = sample_with_ids(eager, PROMPTS, params)
    assert_same(sample_with_ids(static, PROMPTS, params), want)
    ended = sum(s.n_tokens < params.max_new_tokens for row in want[0] for s in row)
    assert ended and fed["eager"] < fed["static"] <= fed["eager"] + ended  # each ended row fed at most once more


def test_shapes_stay_fixed_within_a_bucket(model, tok, monkeypatch):
    _, static = engines(model, tok)
    monkeypatch.setattr(static_decode, "BUCKETS", (16,))  # one bucket for the whole batch
    shapes = []

    def hook(module, args, kwargs):
        if kwargs["input_ids"].shape[1] == 1:
            cache = kwargs["cache"].layers[0]
            shapes.append(
                tuple(tuple(t.shape) for t in (kwargs["input_ids"], kwargs["attention_mask"], kwargs["position_ids"], cache.keys))
            )

    handle = static.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        static.sample(PROMPTS, SamplingParams(n=4, max_new_tokens=10, seed=3, ignore_eos=True))
    finally:
        handle.remove()
    assert len(shapes) == 9 and len(set(shapes)) == 1
    ids, mask, positions, keys = shapes[0]
    assert ids == (16, 1) and positions == (16, 1) and mask[:3] == (16, 1, 1)  # a ready 4-D mask
    assert keys[0] == 16 and keys[2] == mask[3] and keys[2] % static_decode.CAPACITY_STEP == 0


class HostSync(AssertionError):
    pass


def no_host_sync(monkeypatch, calls: list):
    """Make every way a tensor reaches the host fail (the CPU stand-in for a device-to-host sync), counting attempts."""

    def refuse(name):
        def method(self, *args, **kwargs):
            calls.append(name)
            raise HostSync(f"Tensor.{name} inside a decode step")

        return method

    for name in ("tolist", "item", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse(name))
    for name in ("tensor", "as_tensor"):  # host data copied to the device: a blocking copy, and not capturable
        monkeypatch.setattr(torch, name, refuse(name))


def guarded_step(monkeypatch, calls: list, extra=None):
    step = static_decode.step

    def guarded(model, arena, *args):
        with pytest.MonkeyPatch.context() as inside:
            no_host_sync(inside, calls)
            if extra:
                extra(arena)
            step(model, arena, *args)

    monkeypatch.setattr(static_decode, "step", guarded)


@pytest.mark.parametrize("temperature", [1.0, 0.0], ids=["sampled", "greedy"])
def test_no_host_sync_inside_a_step(model, tok, monkeypatch, temperature):
    eager, static = engines(model, tok)
    params = replace(stopping_params(eager, tok), temperature=temperature, top_k=50, top_p=0.7)
    want = sample_with_ids(eager, PROMPTS, params)
    calls = []
    guarded_step(monkeypatch, calls)
    assert_same(sample_with_ids(static, PROMPTS, params), want)
    assert calls == [] and static.stats.decode_steps >= 3


def test_the_sync_guard_catches_a_sync(model, tok, monkeypatch):
    _, static = engines(model, tok)
    calls = []
    guarded_step(monkeypatch, calls, extra=lambda arena: arena.step.item())
    with pytest.raises(HostSync):
        static.sample(PROMPTS[:1], SamplingParams(n=2, max_new_tokens=4, seed=1))
    assert calls == ["item"]


def test_a_graph_runner_replays_the_eager_step(model, tok):
    """A fake runner that warms each step up once at capture (changing the arena, as CUDA's warm-up does) and then
    replays it: the same samples as the eager loop, one capture per bucket used, one replay per decode step."""
    eager, static = engines(model, tok)
    static_eager = LanguageModel.from_model(model, tok, guess_tokens=0, static_decode=True)
    runners = []
    static.runner_factory = lambda: runners.append(FakeGraphRunner()) or runners[-1]
    params = stopping_params(eager, tok)
    calls = {}

    def recording(name):
        def hook(module, args, kwargs):
            if kwargs["input_ids"].shape[1] == 1 and not (runners and runners[-1].warming):
                inputs = (kwargs["input_ids"], kwargs["attention_mask"], kwargs["position_ids"])
                calls.setdefault(name, []).append([t.clone() for t in inputs])

        return model.register_forward_pre_hook(hook, with_kwargs=True)

    handle = recording("eager runner")
    want = sample_with_ids(static_eager, PROMPTS, params)
    handle.remove()
    handle = recording("fake graphs")
    got = sample_with_ids(static, PROMPTS, params)
    handle.remove()
    assert_same(got, want)
    assert_same(got, sample_with_ids(eager, PROMPTS, params))
    (runner,) = runners
    assert runner.replays == static.stats.decode_steps > 0
    assert runner.captures == static.stats.graph_captures >= 2  # the batch shrank into a smaller bucket mid-call
    # The replays made the eager runner's model calls, input for input (ids, 4-D mask, positions).
    assert len(calls["fake graphs"]) == runner.replays
    pairs = zip(calls["fake graphs"], calls["eager runner"], strict=True)
    assert all(torch.equal(x, y) for got_call, want_call in pairs for x, y in zip(got_call, want_call, strict=True))


@torch.inference_mode()
def test_warm_up_leaves_the_arena_as_it_was(model, tok):
    lm = LanguageModel.from_model(model, tok, guess_tokens=0)
    encoded = [lm._encode_prompt(p) for p in PROMPTS]
    state = lm._states(encoded, [2] * len(encoded), 0)
    arena = static_decode.Arena(state, 8, static_decode.capacity_for(state.mask.shape[1], 6), 6)
    params = SamplingParams(n=2, max_new_tokens=6, seed=4)
    arena.load(state, torch.arange(6), torch.zeros(6), torch.rand(6, 6), [True] * 6)
    before = [t.clone() for t in (*arena.keys, *arena.values, arena.mask, *arena.small, arena.uniforms, arena.logps)]
    with arena.scratch(8):
        static_decode.step(model, arena, 8, params, 0, static_decode.static_cache(arena, 8))
    after = [*arena.keys, *arena.values, arena.mask, *arena.small, arena.uniforms, arena.logps]
    spare = arena.capacity - 1
    for old, new in zip(before, after, strict=True):
        if new.dim() == 4:  # keys and values: only the spare column may change
            assert torch.equal(old[..., :spare, :], new[..., :spare, :])
        elif new.shape[0] == arena.rows + 1:  # uniforms and log-probs: only the dummy row may change
            assert torch.equal(old[:-1], new[:-1])
        else:
            assert torch.equal(old, new)


def test_buckets_and_capacity():
    assert static_decode.bucket_for(1) == 1 and static_decode.bucket_for(9) == 16 and static_decode.bucket_for(128) == 128
    assert static_decode.bucket_for(129) == 160 and static_decode.bucket_for(static_decode.BUCKETS[-1] + 1) is None
    big = [b for b in static_decode.BUCKETS if b > 32]
    # Above 32 rows a batch pads at most a quarter of its rows.
    assert all(b / a <= 1.34 for a, b in zip([32, *big][:-1], big, strict=True))
    assert static_decode.capacity_for(100, 28) == 128 and static_decode.capacity_for(100, 29) == 192
