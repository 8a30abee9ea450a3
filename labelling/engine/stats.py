"""The engine's counters in one typed record: what a language model fed, drew and scored, and how its decode ran.

One :class:`EngineStats` belongs to each :class:`labelling.engine.lm.LanguageModel` (its ``stats``); the eager and
static decode loops add to it, and the speed benchmark (:mod:`labelling.bench.speed`) sums the records of its engines
and reports them. A field named wrong is an AttributeError, not a new key that silently stays 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class EngineStats:
    """Counters since the engine was built; every field only grows."""

    prompt_tokens: int = 0  # prompt tokens fed (a reused preamble counts once)
    generated_tokens: int = 0  # tokens drawn, the first of each sample included
    scored_tokens: int = 0  # continuation tokens scored
    forward_passes: int = 0
    prefix_hits: int = 0  # preambles found in the prefix cache
    prefix_misses: int = 0  # preambles encoded
    # The decode phase alone (its forwards, after each pass's prompt): tokens drawn from them, and the batch rows and
    # cache columns each ran at, summed, so a benchmark can time a bare forward loop of the same shape.
    decode_tokens: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    decode_columns: int = 0
    decode_seconds: float = 0.0
    guessed_tokens: int = 0  # prompt-lookup guesses fed
    guesses_kept: int = 0  # ... and kept (each equalled the token its row drew there)
    # Which decode loop each batch took (the static one, or eager: guesses, constraints, too many rows, or off), and
    # the graphs captured for the static one.
    static_batches: int = 0
    eager_batches: int = 0
    graph_captures: int = 0
    capture_seconds: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """The counters by name, for a JSON report."""
        return dataclasses.asdict(self)

    def __add__(self, other: EngineStats) -> EngineStats:
        """Field by field: the counters of two engines (a benchmark path's DST and act models) together."""
        return EngineStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    def __sub__(self, other: EngineStats) -> EngineStats:
        """Field by field: what a stretch of work added (the record after it, less a copy taken before)."""
        return EngineStats(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)})

    def copy(self) -> EngineStats:
        """A snapshot, to subtract from later."""
        return dataclasses.replace(self)
