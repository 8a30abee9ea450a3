"""Smoke tests on the real embedded SmolLM2-135M (slow: the first run also converts the GGUF, ~20-45 s, once)."""

from __future__ import annotations

import math

import pytest

from labelling.engine.lm import LanguageModel, Prompt, SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm() -> LanguageModel:
    return LanguageModel.load("smollm2")


def test_samples_are_cut_before_the_stop(lm):
    prompt = Prompt("# Small Python helpers\n\n", "def add(a, b):\n    return")
    params = SamplingParams(n=2, max_new_tokens=24, stop=("\n", "def "), seed=0)
    (samples,) = lm.sample([prompt], params)
    assert len(samples) == 2
    for sample in samples:
        assert "\n" not in sample.text and "def " not in sample.text and sample.text == sample.text.rstrip()
        assert math.isfinite(sample.logprob) and sample.logprob <= 0
        assert 0 < sample.n_tokens <= 24
    assert any(s.stopped for s in samples)
    assert lm.sample([prompt], params) == [samples]


def test_scores_are_plausible_and_path_independent(lm):
    prompt = Prompt("Facts about Europe.\n", "The capital of France is")
    good, bad = lm.score(prompt, [" Paris.", " a purple spoon."])
    assert math.isfinite(good) and math.isfinite(bad) and bad < good < 0
    plain = LanguageModel.from_model(lm.model, lm.tokenizer, reuse_prefix=False)
    assert plain.score(prompt, [" Paris.", " a purple spoon."]) == pytest.approx([good, bad], abs=1e-3)
