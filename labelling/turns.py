"""The one turn record every module exchanges, and its flat row form for Hugging Face datasets.

A turn t holds the system utterance before the user's (``system_utterances[-1]``, ``""`` at t=0), the user
utterance (``user_utterances[-1]``) and the system response after it. Gold fields are optional: None
means "no gold", which is different from an empty state.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace

from labelling.acts import Act, acts_from_gold, acts_to_json
from labelling.schema import Schema
from labelling.states import State, compute_delta, fill, strip_blanks

GOLD_FIELDS = ("slot_values", "last_slot_values", "turn_slot_values", "system_response_acts", "last_system_response_acts")


@dataclass
class Turn:
    """One user turn of a dialogue, with its context and (optionally) gold labels."""

    dialogue_id: str
    turn_id: int
    user_utterances: list[str]
    system_utterances: list[str]
    system_response: str
    domains: list[str] = field(default_factory=list)
    slot_values: State | None = None
    last_slot_values: State | None = None
    turn_slot_values: State | None = None
    system_response_acts: list[Act] | None = None
    last_system_response_acts: list[Act] | None = None

    @property
    def user_utterance(self) -> str:
        """This turn's user utterance."""
        return self.user_utterances[-1]

    @property
    def last_system_utterance(self) -> str:
        """The system utterance the user is answering (``""`` at turn 0)."""
        return self.system_utterances[-1]

    @property
    def key(self) -> tuple[str, int]:
        """(dialogue_id, turn_id): unique within a corpus."""
        return (self.dialogue_id, self.turn_id)

    @property
    def has_gold_state(self) -> bool:
        """Whether gold dialogue states are known for this turn."""
        return self.slot_values is not None

    @property
    def has_gold_acts(self) -> bool:
        """Whether gold system acts are known for this turn."""
        return self.system_response_acts is not None

    def without_gold(self) -> Turn:
        """A copy with every gold field removed: what the labeller is allowed to see."""
        return replace(self, domains=[], **{f: None for f in GOLD_FIELDS})

    def with_labels(self, **labels) -> Turn:
        """The turn's text with only the given label fields set: a retrieval query or an example built from predictions."""
        return replace(self.without_gold(), **labels)

    def to_row(self, schema: Schema) -> dict:
        """The reference's flat row: filled state structs, acts as JSON strings (``[""]`` for none), plus ``has_gold``."""
        return {
            "dialogue_id": self.dialogue_id,
            "turn_id": self.turn_id,
            "domains": list(self.domains),
            "system_utterances": list(self.system_utterances),
            "user_utterances": list(self.user_utterances),
            "system_response": self.system_response,
            "slot_values": fill(self.slot_values, schema),
            "last_slot_values": fill(self.last_slot_values, schema),
            "turn_slot_values": fill(self.turn_slot_values, schema),
            "system_response_acts": acts_to_json(self.system_response_acts or []) or [""],
            "last_system_response_acts": acts_to_json(self.last_system_response_acts or []) or [""],
            "has_gold": self.has_gold_state,
            "has_gold_acts": self.has_gold_acts,
        }

    @classmethod
    def from_row(cls, row: dict) -> Turn:
        """Inverse of :meth:`to_row`; rows without ``has_gold`` (the reference's format) count as gold when states are present."""
        gold = row.get("has_gold", row.get("slot_values") is not None)
        gold_acts = row.get("has_gold_acts", row.get("system_response_acts") is not None)
        last = strip_blanks(row.get("last_slot_values")) if gold else None
        now = strip_blanks(row.get("slot_values")) if gold else None
        return cls(
            dialogue_id=row["dialogue_id"],
            turn_id=int(row["turn_id"]),
            user_utterances=list(row["user_utterances"]),
            system_utterances=list(row["system_utterances"]),
            system_response=row.get("system_response") or "",
            domains=list(row.get("domains") or []),
            slot_values=now,
            last_slot_values=last,
            turn_slot_values=compute_delta(last, now) if gold else None,
            system_response_acts=_acts(row.get("system_response_acts")) if gold_acts else None,
            last_system_response_acts=_acts(row.get("last_system_response_acts")) if gold_acts else None,
        )


def _acts(items: list[str] | None) -> list[Act]:
    """Stored act strings in either of the reference's formats: JSON of typed acts, or MultiWOZ rows as dict strings."""
    typed: list[Act] = []
    rows: dict[str, list] = {}
    for item in items or []:
        text = (item or "").strip()
        if text.startswith('{"'):
            typed.append(Act.from_json(text))
        elif text:
            row = ast.literal_eval(text)  # a literal parser: the dict string is data, never code
            rows.setdefault(f"{row.get('service', 'general')}-{row.get('act', '')}", []).append(
                [row.get("slot_name") or "none", row.get("value") or "none"]
            )
    return typed + acts_from_gold(rows)
