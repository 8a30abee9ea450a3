"""Label records: what the labeller decides for a turn (:class:`TurnLabel`, :class:`ModuleOutput`), the flag names,
and the labelled turn as a retrievable example. The store, runner and export depend on these records, not on the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from labelling.acts import Act, acts_from_json, acts_to_json
from labelling.states import State
from labelling.turns import Turn

FLAG_DST_UNPARSEABLE = "dst_unparseable"
FLAG_ACTS_UNPARSEABLE = "acts_unparseable"
FLAG_EXAMPLES_DROPPED = "examples_dropped"
FLAG_PROMPT_TOO_LONG = "prompt_too_long"  # not even the target fits: the turn keeps its prior state and gets no acts
FLAG_CHANNEL_UNSCORED = "channel_unscored"  # the channel prompt does not fit: candidates ranked by sample log-prob
FLAGGED_TURNS = "flagged_turns"  # metrics key counting turns with any flag; each flag also counts as flag_<name>


@dataclass
class Candidate:
    """One distinct canonical candidate: how often it was sampled, its best sample log-prob, and its channel score."""

    canonical: str
    raw: list[str]
    sample_logprob: float
    score: float | None = None

    def to_dict(self) -> dict:
        """Stored form (raw samples, canonical string, scores)."""
        return {"canonical": self.canonical, "raw": self.raw, "sample_logprob": self.sample_logprob, "score": self.score}


@dataclass(frozen=True, kw_only=True)
class PoolRefresh:
    """One growth of a partition's example pool: before batch ``batch`` (0: at the start) the labels of the completed partitions
    ``splits`` (``examples`` turns) joined the example indexes, at Unix time ``at``. Resuming replays the same ones."""

    batch: int  # stored as "wave", its name before batches and turn-id waves were told apart
    splits: list[str]
    examples: int
    at: float

    def to_dict(self) -> dict:
        """Stored form (an entry of the partition's ``pool`` list)."""
        return {"at": self.at, "wave": self.batch, "splits": list(self.splits), "examples": self.examples}

    @classmethod
    def from_dict(cls, data: dict) -> PoolRefresh:
        """Inverse of :meth:`to_dict`."""
        return cls(batch=int(data["wave"]), splits=list(data["splits"]), examples=int(data.get("examples", 0)), at=data["at"])


@dataclass
class ModuleOutput:
    """What one module decided for one turn, with the evidence: candidates, scores, examples used."""

    chosen: str
    candidates: list[Candidate]
    examples: list[tuple[str, int]]
    dropped_examples: int = 0
    errors: list[str] = field(default_factory=list)
    cut_samples: int = 0  # constrained samples that ran out of max_new_tokens before the grammar's end: dropped
    confidence: float | None = None  # in [0, 1], as labelling/method/confidence.py defines it for the mode; None: none

    def to_dict(self) -> dict:
        """Stored form."""
        return {
            "chosen": self.chosen,
            "candidates": [c.to_dict() for c in self.candidates],
            "examples": [list(e) for e in self.examples],
            "dropped_examples": self.dropped_examples,
            "errors": self.errors,
            "cut_samples": self.cut_samples,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModuleOutput:
        """Inverse of :meth:`to_dict`."""
        return cls(
            chosen=data["chosen"],
            candidates=[Candidate(c["canonical"], list(c["raw"]), c["sample_logprob"], c["score"]) for c in data["candidates"]],
            examples=[tuple(e) for e in data["examples"]],
            dropped_examples=data.get("dropped_examples", 0),
            errors=list(data.get("errors", [])),
            cut_samples=data.get("cut_samples", 0),
            confidence=data.get("confidence"),
        )


@dataclass
class TurnLabel:
    """The labels of one turn: cumulative state, its delta, system acts, per-module evidence, flags and metrics."""

    dialogue_id: str
    turn_id: int
    prior_state: State
    state: State
    delta: State
    acts: list[Act]
    dst: ModuleOutput
    act: ModuleOutput
    flags: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        """(dialogue_id, turn_id)."""
        return (self.dialogue_id, self.turn_id)

    @property
    def confidence(self) -> float | None:
        """The turn's confidence: its state's (:func:`turn_confidence`); None for labels stored before confidences."""
        return turn_confidence(self.dst.confidence, self.act.confidence)

    def to_dict(self) -> dict:
        """JSON-ready form used by the JSONL output and the store."""
        return {
            "dialogue_id": self.dialogue_id,
            "turn_id": self.turn_id,
            "prior_state": self.prior_state,
            "state": self.state,
            "delta": self.delta,
            "acts": acts_to_json(self.acts),
            "dst": self.dst.to_dict(),
            "act": self.act.to_dict(),
            "flags": self.flags,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TurnLabel:
        """Inverse of :meth:`to_dict`."""
        return cls(
            dialogue_id=data["dialogue_id"],
            turn_id=int(data["turn_id"]),
            prior_state=data["prior_state"],
            state=data["state"],
            delta=data["delta"],
            acts=acts_from_json(data["acts"]),
            dst=ModuleOutput.from_dict(data["dst"]),
            act=ModuleOutput.from_dict(data["act"]),
            flags=list(data.get("flags", [])),
            metrics=dict(data.get("metrics", {})),
        )


def turn_confidence(dst: float | None, act: float | None) -> float | None:
    """A turn's confidence from its modules': the state's. The state is cumulative, so a doubt about it is what later
    turns inherit and what abstention cuts on; the acts' confidence is kept beside it (export column
    ``acts_confidence``). Taking the least sure of the two was measured and ranked worse: on the held-out slice the act
    tagger's 3 samples rarely agree, so nearly every turn fell to 1/3 (benchmarks/confidence_curve.py)."""
    return dst


def labelled_examples(turns: Iterable[Turn], labels: Mapping[tuple[str, int], TurnLabel]) -> list[Turn]:
    """The labelled ones of ``turns``, in the order given, as retrievable examples (:func:`example_turn`); the previous
    turn's predicted acts fill ``last_system_response_acts``, as the reference's ``apply_self_labels`` does."""
    out = []
    for turn in turns:
        if turn.key in labels:
            previous = labels.get((turn.dialogue_id, turn.turn_id - 1))
            out.append(example_turn(turn, labels[turn.key], previous.acts if previous else []))
    return out


def example_turn(turn: Turn, label: TurnLabel, last_acts: list[Act]) -> Turn:
    """A labelled turn as a retrievable example: the turn's text with predicted labels in the label fields."""
    return turn.with_labels(
        domains=sorted(set(label.state) | {a.entity.kind.lower() for a in label.acts if a.entity}),
        slot_values=label.state,
        last_slot_values=label.prior_state,
        turn_slot_values=label.delta,
        system_response_acts=label.acts,
        last_system_response_acts=last_acts,
    )
