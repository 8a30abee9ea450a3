"""Dialogue states as plain nested dicts (service -> schema slot name -> value), and the operations on them.

A *state* is cumulative; a *delta* is what one turn changed, with ``DELETE`` marking a removed slot.
"""

from __future__ import annotations

import re

from rapidfuzz import fuzz

from labelling.schema import DONTCARE, Schema

State = dict[str, dict[str, str]]
DELETE = "[DELETE]"
UNSET_VALUES = frozenset({"", "none", "not mentioned"})
_DONTCARE_SPELLINGS = frozenset({"dontcare", "dont care", "don't care", "do n't care", "do nt care", "any"})
_PUNCT = re.compile(r"[^\w\s]")


def clean_value(value: object) -> str:
    """Lower-case and strip a raw value; the several MultiWOZ spellings of "don't care" become ``dontcare``."""
    text = str(value).strip().lower()
    return DONTCARE if text in _DONTCARE_SPELLINGS else text


def strip_blanks(state: State | None) -> State:
    """A copy of ``state`` without unset values and without services left empty."""
    out: State = {}
    for service, slots in (state or {}).items():
        kept = {k: v for k, v in slots.items() if v is not None and str(v).strip().lower() not in UNSET_VALUES}
        if kept:
            out[service] = kept
    return out


def fill(state: State | None, schema: Schema) -> State:
    """Every informable slot of ``schema`` present, ``""`` for unset: the fixed struct a dataset column needs."""
    state = state or {}
    return {svc: {slot: state.get(svc, {}).get(slot, "") for slot in slots} for svc, slots in schema.informable().items()}


def restrict(state: State, schema: Schema) -> State:
    """Only the informable slots of ``schema`` (drops other services and request-only slots)."""
    return strip_blanks({svc: {k: v for k, v in slots.items() if schema.is_informable(svc, k)} for svc, slots in state.items()})


def compute_delta(prior: State | None, new: State | None) -> State:
    """What changed from ``prior`` to ``new``: changed values, then added slots, then removed ones as ``DELETE``."""
    prior, new = strip_blanks(prior), strip_blanks(new)
    delta: State = {}
    for service in [*new, *[s for s in prior if s not in new]]:
        before, after = prior.get(service, {}), new.get(service, {})
        changed = {k: v for k, v in after.items() if k in before and before[k] != v}
        added = {k: v for k, v in after.items() if k not in before}
        removed = {k: DELETE for k in before if k not in after}
        if changed or added or removed:
            delta[service] = {**changed, **added, **removed}
    return delta


def apply_delta(prior: State | None, delta: State) -> State:
    """``prior`` updated by ``delta``; ``DELETE`` or an empty value removes a slot."""
    out = {svc: dict(slots) for svc, slots in strip_blanks(prior).items()}
    for service, slots in delta.items():
        target = out.setdefault(service, {})
        for slot, value in slots.items():
            if value == DELETE or str(value).strip() == "":
                target.pop(slot, None)
            else:
                target[slot] = value
    return strip_blanks(out)


def flatten(state: State | None) -> dict[tuple[str, str], str]:
    """(service, slot) -> value for every set slot."""
    return {(svc, k): v for svc, slots in strip_blanks(state).items() for k, v in slots.items()}


def _key(text: str) -> str:
    return _PUNCT.sub("", text.lower()).strip()


class SchemaNormalizer:
    """Maps service names, slot names and categorical values fuzzily onto the schema (ratio >= threshold).

    Values of categorical slots that match no possible value are dropped; free-text values pass through.
    Ties go to the best ratio, then to schema order, so no input can make it fail.
    """

    def __init__(self, schema: Schema, threshold: float = 90.0):
        self.schema = schema
        self.threshold = threshold

    def _best(self, text: str, choices: list[str]) -> str | None:
        if text in choices:
            return text
        key = _key(text)
        scored = [(fuzz.ratio(key, _key(c)), -i, c) for i, c in enumerate(choices)]
        best = max(scored, default=None)
        return best[2] if best and best[0] >= self.threshold else None

    def value(self, service: str, slot: str, value: str) -> str | None:
        """The schema's spelling of ``value`` for this slot, or None when a categorical value matches nothing."""
        value = clean_value(value)
        spec = self.schema.service(service).slot(slot)
        if value == DONTCARE or spec is None or not spec.categorical:
            return value
        if value == "free" and "yes" in spec.values:
            return "yes"  # MultiWOZ writes free parking/internet as "free"; the schema keeps one spelling per meaning
        return self._best(value, list(spec.values))

    def normalize(self, state: State) -> State:
        """A copy of ``state`` with every name and categorical value in the schema's spelling; unmappable parts dropped."""
        out: State = {}
        for raw_service, slots in strip_blanks(state).items():
            service = self._best(raw_service.lower(), list(self.schema.names))
            if service is None:
                continue
            svc = self.schema.service(service)
            names = [s.name for s in svc.informable_slots]
            for raw_slot, raw_value in slots.items():
                slot = self._best(raw_slot.lower().replace("_", " "), names)
                value = self.value(service, slot, raw_value) if slot else None
                if slot and value:
                    out.setdefault(service, {})[slot] = value
        return out
