"""Candidate completions -> canonical labels: parse, map onto the schema, and re-render.

Two samples that mean the same thing get the same canonical string, so they are scored once and the
final label never depends on how the model happened to spell it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from labelling.acts import Act, Entity
from labelling.method.parsing import ActParser, DstParser
from labelling.method.prompts import ACT_PREFIX, DST_PREFIX, PromptBuilder
from labelling.schema import Schema
from labelling.states import SchemaNormalizer, State, compute_delta, restrict


@dataclass
class DstLabel:
    """A DST candidate after canonicalisation: the intent string that is scored and the state it leads to."""

    text: str
    state: State
    delta: State
    failed: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass
class ActLabel:
    """An act candidate after canonicalisation: the act string that is scored and the acts it holds."""

    text: str
    acts: list[Act]
    failed: bool = False
    errors: list[str] = field(default_factory=list)


class Canonicaliser:
    """Turns raw completions into canonical labels for one schema."""

    def __init__(self, schema: Schema, normalize: bool = True):
        self.schema = schema
        self.builder = PromptBuilder(schema)
        self.normalizer = SchemaNormalizer(schema) if normalize else None
        self._dst = DstParser(schema)
        self._acts = ActParser(schema)

    def dst(self, completion: str, prior: State, turn_text: Sequence[str]) -> DstLabel:
        """Parse a DST completion (text after ``[agent.``) onto ``prior``; a failed parse keeps ``prior``."""
        parsed = self._dst.parse(DST_PREFIX + completion, prior)
        state = self.normalizer.normalize(parsed.state) if self.normalizer else restrict(parsed.state, self.schema)
        if parsed.failed:
            state = restrict(prior, self.schema)
        return DstLabel(
            text=self.builder.intent_string(prior, state, turn_text),
            state=state,
            delta=compute_delta(prior, state),
            failed=parsed.failed,
            errors=parsed.errors,
        )

    def acts(self, completion: str) -> ActLabel:
        """Parse an act completion (text after ``[``); entity fields are put in schema order."""
        parsed = self._acts.parse(ACT_PREFIX + completion)
        acts = list(dict.fromkeys(self.order(a) for a in parsed.acts))
        return ActLabel(text=self.builder.acts_string(acts), acts=acts, failed=parsed.failed, errors=parsed.errors)

    def order(self, act: Act) -> Act:
        """The same act with its entity fields in the schema's slot order (extra fields such as ``choice`` last)."""
        if act.entity is None:
            return act
        service = self.schema.service(act.entity.kind.lower()) if act.entity.kind.lower() in self.schema else None
        # A generic Entity gets one fixed order too (every service's slots), so field order never splits candidates.
        order = [s.identifier for s in service.slots] if service else self.schema.identifiers
        rank = {name: i for i, name in enumerate(order)}
        fields = tuple(sorted(act.entity.fields, key=lambda kv: rank.get(kv[0], len(rank))))
        return Act(act.kind, Entity(act.entity.kind, fields), act.service, act.values, act.num_choices)
