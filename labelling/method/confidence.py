"""How sure the labeller is of each label it stores: one number in [0, 1] per module, from the evidence its mode has.

- greedy: the geometric-mean probability of the completion's tokens, ``exp(mean token log-prob)`` under the model
  (masked and renormalised to the schema grammar when sampling is constrained). A completion the model wrote with
  every token near-certain scores near 1.
- noisy channel (joint or conditional): how far the chosen candidate's channel score is ahead of the runner-up's,
  ``sigmoid(best - second)`` (the chosen candidate's probability if only those two competed). One distinct candidate
  has no runner-up: the share of samples that read as it, as in a vote. A turn whose channel prompt did not fit
  (``channel_unscored``) also falls back on that share.
- vote: the share of the drawn samples that read as the chosen label (unparseable and cut samples count as
  disagreeing).
- a turn that got the module's "nothing" answer (its prompt cannot fit, or every constrained sample was cut): 0.
- a hybrid (``with_rules`` other than off): 1 when the LM's own choice and the rule label are the same label, else half
  the LM's confidence: two labellers that fail differently agreeing is the strongest signal either has.
- rules alone: None (no signal: the rules give no degree of belief, and there is no second labeller to agree with).

A turn's confidence is its state's (:func:`labelling.records.turn_confidence`): the state is cumulative, so that is
what later turns inherit; the acts' confidence is stored and exported beside it.

Other modes plug in with :func:`register`: a function taking the mode's :class:`Evidence` (its ``extra`` carries
what only that mode knows, e.g. the rule label for ``rules``) and returning a float in [0, 1], or None for "no signal".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from labelling.engine.generation import Sample
from labelling.method.channel import CONDITIONAL, GREEDY, JOINT, VOTE
from labelling.records import Candidate, turn_confidence

__all__ = ["MEASURES", "Evidence", "agreement", "channel", "greedy", "of", "register", "turn_confidence", "vote"]


@dataclass(frozen=True)
class Evidence:
    """What one module saw for one turn when it chose: its mode, the distinct candidates (with their scores), the
    chosen one, the samples drawn for the turn (kept after ``best_of``) and how many were cut by ``max_new_tokens``."""

    mode: str
    candidates: Sequence[Candidate]
    chosen: Candidate
    samples: Sequence[Sample] = ()
    cut: int = 0
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def drawn(self) -> int:
        """Samples the turn drew: those kept (at least the ones behind the candidates) and those cut."""
        behind = sum(len(c.raw) for c in self.candidates)
        return max(len(self.samples), behind, 1) + self.cut


Measure = Callable[[Evidence], "float | None"]


def greedy(evidence: Evidence) -> float:
    """Geometric-mean token probability of the greedy completion (log-probs of the model's own, unfiltered choice)."""
    sample = max(evidence.samples, key=lambda s: s.logprob, default=None)
    if sample is None or sample.n_tokens <= 0:
        return vote(evidence)
    return _unit(math.exp(sample.logprob / sample.n_tokens))


def channel(evidence: Evidence) -> float:
    """``sigmoid(best - second)`` of the channel scores; the vote share when there is one candidate or no scores."""
    others = [c.score for c in evidence.candidates if c is not evidence.chosen and c.score is not None]
    if evidence.chosen.score is None or not others:
        return vote(evidence)
    margin = evidence.chosen.score - max(others)
    return _unit(1.0 / (1.0 + math.exp(-margin)) if margin > -700 else 0.0)


def vote(evidence: Evidence) -> float:
    """Share of the drawn samples that read as the chosen label."""
    return _unit(len(evidence.chosen.raw) / evidence.drawn)


MEASURES: dict[str, Measure] = {GREEDY: greedy, JOINT: channel, CONDITIONAL: channel, VOTE: vote}


def register(mode: str, measure: Measure) -> None:
    """Define the confidence of a generation mode (e.g. ``rules``: agreement of the rule label and the LM)."""
    MEASURES[mode] = measure


def of(evidence: Evidence) -> float | None:
    """The confidence of the chosen label, or None for a mode with no measure registered."""
    measure = MEASURES.get(evidence.mode)
    return None if measure is None else measure(evidence)


def agreement(sure: float | None, lm_label, rule_label) -> float:
    """A hybrid's confidence: 1 when the LM's own label (``lm_label.text``) is the rule label, else half the LM's."""
    if lm_label.text == rule_label.text:
        return 1.0
    return _unit(0.5 * (sure if sure is not None else 0.0))


def _unit(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 6)
