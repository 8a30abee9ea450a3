"""Samples with the token ids each decode loop drew (the public Sample holds text only), for the engine's tests."""

from __future__ import annotations

from labelling.engine import eager_decode, static_decode
from labelling.engine.generation import Prompt, Sample, SamplingParams
from labelling.engine.lm import LanguageModel

LOOPS = ((eager_decode, "decode"), (eager_decode, "decode_guessing"), (static_decode, "decode"))


Drawn = list[list[int]]  # each draft's token ids


def sample_with_ids(lm: LanguageModel, prompts: list[Prompt], params: SamplingParams) -> tuple[list[list[Sample]], Drawn]:
    """``lm.sample``'s samples, and the ids of every draft in the order the loops ran them (whichever loop ran: one
    token per pass, with prompt-lookup guesses, or on the static cache); each loop gets its drafts third."""
    drafts = []
    originals = [(module, name, getattr(module, name)) for module, name in LOOPS]

    def recording(loop):
        def record(*args, **kwargs):
            out = loop(*args, **kwargs)
            drafts.extend(args[2])
            return out

        return record

    for module, name, loop in originals:
        setattr(module, name, recording(loop))
    try:
        samples = lm.sample(prompts, params)
    finally:
        for module, name, loop in originals:
            setattr(module, name, loop)
    return samples, [d.ids for d in drafts]
