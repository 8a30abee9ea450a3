"""Choosing one label among candidates: the noisy-channel scores (joint for DST, conditional for acts), a vote of the
samples, or greedy.

Joint:       score(y) = log p(c(y) + F + q(x) | z)     -- channel prior and likelihood together
Conditional: score(y) = log p(q(x) | z + c(y) + F)     -- likelihood of the observation only
where z is the channel prompt, c(y) the canonical candidate after its list prefix, F the connective
naming the observed argument, and q(x) the observed utterance as a string literal.
"""

from __future__ import annotations

from collections.abc import Sequence

from labelling.engine.generation import Prompt
from labelling.method.prompts import quote
from labelling.records import Candidate

JOINT, CONDITIONAL, GREEDY, VOTE = "noisy_channel_joint", "noisy_channel_cond", "greedy", "vote"
RULES = "rules"  # no LM: the rule labeller's label is the only candidate (method/rules.py)


def scoring_requests(
    mode: str, channel: Prompt, candidates: Sequence[Candidate], prefix: str, connective: str, observed: str
) -> list[tuple[Prompt, list[str]]]:
    """The LM scoring requests for one turn; joint mode shares one prompt, conditional needs one per candidate."""
    tails = [c.canonical[len(prefix) :] if c.canonical.startswith(prefix) else c.canonical for c in candidates]
    if mode == JOINT:
        return [(channel, [t + connective + quote(observed) for t in tails])]
    if mode == CONDITIONAL:
        return [(Prompt(channel.preamble, channel.body + t + connective), [quote(observed)]) for t in tails]
    raise ValueError(f"no channel scoring in mode {mode!r}")


def needs_scoring(mode: str, candidates: Sequence[Candidate]) -> bool:
    """Scoring only matters with a channel mode and more than one distinct candidate."""
    return mode in (JOINT, CONDITIONAL) and len(candidates) > 1


def tally(candidates: Sequence[Candidate]) -> None:
    """Vote: each candidate's score becomes the number of samples that read as it (self-consistency), so
    :func:`choose` takes the label most samples agree on, ties broken by the likeliest sample. No LM call."""
    for cand in candidates:
        cand.score = float(len(cand.raw))


def choose(candidates: Sequence[Candidate]) -> Candidate:
    """The best candidate: highest channel score, ties and unscored sets by sample log-prob, then first sampled."""
    return max(enumerate(candidates), key=lambda ic: (_or(ic[1].score), ic[1].sample_logprob, -ic[0]))[1]


def _or(score: float | None) -> float:
    return score if score is not None else float("-inf")
