"""Candidate completions -> canonical labels: parse, map onto the schema, and re-render.

Two samples that mean the same thing get the same canonical string, so they are scored once and the
final label never depends on how the model happened to spell it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from labelling.acts import Act, Entity
from labelling.method.parsing import ActParser, DstParser
from labelling.method.prompts import ACT_PREFIX, DST_PREFIX, PromptBuilder, mentioned
from labelling.schema import DONTCARE, Schema
from labelling.states import DELETE, SchemaNormalizer, State, compute_delta, restrict, strip_blanks

# Values a turn rarely says in so many words: "free wifi" is internet=yes. Never dropped as unsaid.
_UNSPOKEN_VALUES = frozenset({"yes", "no", DONTCARE.lower(), DELETE.lower()})


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

    def dst(self, completion: str, prior: State, turn_text: Sequence[str], grounded: bool = False) -> DstLabel:
        """Parse a DST completion (text after ``[agent.``) onto ``prior``; a failed parse keeps ``prior``.

        ``grounded`` drops the new values the turn never said (:func:`ground_state`), each named in ``errors``."""
        parsed = self._dst.parse(DST_PREFIX + completion, prior)
        state = self.normalizer.normalize(parsed.state) if self.normalizer else restrict(parsed.state, self.schema)
        errors = list(parsed.errors)
        if parsed.failed:
            state = restrict(prior, self.schema)
        elif grounded:
            state, dropped = ground_state(prior, state, turn_text)
            errors += [f"unsaid value dropped: {svc}-{slot}={value!r}" for svc, slot, value in dropped]
        return DstLabel(
            text=self.builder.intent_string(prior, state, turn_text),
            state=state,
            delta=compute_delta(prior, state),
            failed=parsed.failed,
            errors=errors,
        )

    def acts(self, completion: str, response: str | None = None) -> ActLabel:
        """Parse an act completion (text after ``[``); entity fields are put in schema order.

        With ``response`` (the system turn the acts describe), entity fields whose value it never says are dropped, and
        an act left with no fields at all goes too (:func:`ground_acts`)."""
        parsed = self._acts.parse(ACT_PREFIX + completion)
        acts = list(dict.fromkeys(self.order(a) for a in parsed.acts))
        errors = list(parsed.errors)
        if response is not None and not parsed.failed:
            acts, dropped = ground_acts(acts, response)
            errors += [f"unsaid value dropped: {kind}.{name}={value!r}" for kind, name, value in dropped]
        return ActLabel(text=self.builder.acts_string(acts), acts=acts, failed=parsed.failed, errors=errors)

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


def said(value: str, text: Sequence[str]) -> bool:
    """Whether a label's value is backed by the text: said there (:func:`prompts.mentioned`), or a value such as yes,
    no or dontcare that people rarely say in so many words."""
    return value.lower() in _UNSPOKEN_VALUES or mentioned(value, text)


def ground_state(prior: State, state: State, turn_text: Sequence[str]) -> tuple[State, list[tuple[str, str, str]]]:
    """``state`` with each value this turn set but never said put back as it was in ``prior``, and the dropped
    (service, slot, value) triples. A value equal to any value of the prior state counts as said: it may be copied
    ("the same area as the hotel"; the prompt writes such a copy as a reference, ``PromptBuilder.intent_string``).

    On the bundled corpus (every split but the quality slice) 88% of gold new values are said in the turn, 4% are copied
    from the prior state and most of the rest are yes/no, so grounding costs gold little; a small model's invented
    values (copied from its demonstrations or examples) are what it removes.
    """
    before = strip_blanks(prior)
    known = {v.lower() for slots in before.values() for v in slots.values()}
    out = {svc: dict(slots) for svc, slots in strip_blanks(state).items()}
    dropped = []
    for svc, slots in compute_delta(before, out).items():
        for slot, value in slots.items():
            if said(value, turn_text) or value.lower() in known:
                continue
            dropped.append((svc, slot, value))
            if slot in before.get(svc, {}):
                out[svc][slot] = before[svc][slot]
            else:
                del out[svc][slot]
    return {svc: slots for svc, slots in out.items() if slots}, dropped


def ground_acts(acts: Sequence[Act], response: str) -> tuple[list[Act], list[tuple[str, str, str]]]:
    """The acts with each entity field whose value ``response`` never says removed (an act whose every field went is
    removed too), and the dropped (act, field, value) triples. Gold acts on the bundled corpus say 100% of their
    entity values in the response, yes/no aside."""
    out, dropped = [], []
    for act in acts:
        if act.entity is None or not act.entity.fields:
            out.append(act)
            continue
        kept = tuple((k, v) for k, v in act.entity.fields if said(v, [response]))
        dropped += [(act.kind, k, v) for k, v in act.entity.fields if (k, v) not in kept]
        if kept:
            out.append(Act(act.kind, Entity(act.entity.kind, kept), act.service, act.values, act.num_choices))
    return list(dict.fromkeys(out)), dropped
