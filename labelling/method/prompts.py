"""The four code-style prompts (direct/channel x DST/acts) and the strings they embed: states, intents and act lists.

A prompt is a Python module the model is asked to continue: a schema preamble (shared by every prompt of
its mode, so its KV cache can be reused), retrieved examples written as ``agent.handle_turn(...)`` calls,
and a target call left open at the argument to predict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from rapidfuzz.distance import Levenshtein

from labelling.acts import ACT_FIELDS, Act, Entity
from labelling.engine.generation import Prompt
from labelling.schema import DONTCARE, Schema, Service, Slot
from labelling.states import DELETE, State, compute_delta, strip_blanks

INDENT = "    "
ARG_INDENT = INDENT * 2
DST_PREFIX = "[agent."
ACT_PREFIX = "["
# The list ends at a bracket followed by a line break; a bare "]" would cut "[DELETE]" (the reference's bug).
DST_STOPS = ("]\n", "],\n", "\n\n")
ACT_STOPS = ("]\n", "],\n", "\n\n")
DST_CONNECTIVE = f",\n{ARG_INDENT}user_utterance="
ACT_CONNECTIVE = f",\n{ARG_INDENT}system_response="

# Argument order of the handle_turn call per mode; the last one is what the model writes.
MODE_ARGUMENTS = {
    "dst": ("belief_state", "last_system_utterance", "user_utterance", "user_intent"),
    "dst_channel": ("belief_state", "last_system_utterance", "user_intent", "user_utterance"),
    "act": ("system_response", "system_acts"),
    "act_channel": ("system_acts", "system_response"),
}
TASKS = {
    "dst": "Write the intent calls that capture what the user asks for in this turn.",
    "dst_channel": "Write a user utterance that expresses the given user_intent calls.",
    "act": "Write the dialogue acts performed by the observed system response.",
    "act_channel": "Write a system response that performs the given dialogue acts.",
}
_FORMAT_NOTE = "Integers are bare ints, times are 'hh:mm' strings, and multi-word values keep their spaces."
_ACT_DOCS = {
    "Inform": "Tell the user facts about an entity.",
    "Offer": "Propose one or more matching entities; num_choices says how many were found.",
    "Confirm": "Ask the user to confirm the details before booking.",
    "Affirm": "Agree with what the user said.",
    "Negate": "Disagree with what the user said.",
    "NotifySuccess": "Report that a booking or other transaction succeeded.",
    "NotifyFailure": "Report that nothing matched or a transaction failed.",
    "Request": "Ask the user for the values of the named slots.",
    "RequestAlternatives": "Ask whether the user needs anything else.",
    "Acknowledge": "Acknowledge the user without adding information.",
    "Goodbye": "Close the conversation.",
    "Greeting": "Greet the user or welcome them.",
    "ThankYou": "Thank the user.",
}


def quote(value: str) -> str:
    """A string literal that Python's parser reads back to ``value`` (JSON escaping, double quotes)."""
    return json.dumps(value, ensure_ascii=False)


def render_value(slot: Slot | None, value: str) -> str:
    """A slot value as code: a bare int for integer slots holding a canonical integer, else a string literal."""
    if slot is not None and slot.type_hint == "int" and value.isdigit() and str(int(value)) == value:
        return value
    return quote(value)


@dataclass(frozen=True)
class Example:
    """What one in-context example (or the target) shows: the argument values of its handle_turn call."""

    belief_state: State
    last_system_utterance: str
    user_utterance: str
    system_response: str
    user_intent: str | None = None
    system_acts: str | None = None


class PromptBuilder:
    """Renders states, intents, acts and whole prompts for one schema; preambles are built once and reused."""

    def __init__(self, schema: Schema):
        self.schema = schema

    # --- strings embedded in prompts ------------------------------------------------------------------

    def state_string(self, state: State) -> str:
        """``BeliefState(hotel=dict(area="east", stars=4))``: services alphabetical, slots in schema order."""
        state = strip_blanks(state)
        parts = []
        for name in sorted(s for s in state if s in self.schema):
            service = self.schema.service(name)
            slots = [s for s in service.informable_slots if s.name in state[name]]
            args = ", ".join(f"{s.identifier}={render_value(s, state[name][s.name])}" for s in slots)
            parts.append(f"{name}=dict({args})")
        return f"BeliefState({', '.join(parts)})"

    def intent_string(self, prior: State, new: State, turn_text: Sequence[str] = ()) -> str:
        """The calls that turn ``prior`` into ``new``: ``[agent.find_hotel(area="east")]``, or ``[agent.no_change()]``.

        Removed slots are passed ``"[DELETE]"``; a value copied from another slot of the prior state and not
        said in ``turn_text`` is written as a reference (``agent.state.hotel.area``).
        """
        delta = compute_delta(prior, new)
        calls = []
        for service in self.schema.services:
            changed = delta.get(service.name)
            if not changed:
                continue
            intent = _covering_intent(service, changed)
            args = [
                f"{slot.identifier}={self._intent_value(service, slot, changed[slot.name], prior, turn_text)}"
                for slot in service.informable_slots
                if slot.name in changed
            ]
            calls.append(f"agent.{intent}({', '.join(args)})")
        return f"[{', '.join(calls)}]" if calls else "[agent.no_change()]"

    def _intent_value(self, service: Service, slot: Slot, value: str, prior: State, turn_text: Sequence[str]) -> str:
        if value == DELETE:
            return quote(DELETE)
        source = _reference_source(self.schema, service.name, slot.name, value, prior, turn_text)
        if source is not None:
            svc, other = source
            return f"agent.state.{svc}.{self.schema.service(svc).slot(other).identifier}"
        return render_value(slot, value)

    def acts_string(self, acts: Sequence[Act]) -> str:
        """``[Inform(entity=Hotel(area='east')), Request(service='hotel', values=['price_range'])]``."""
        return f"[{', '.join(self.act_string(a) for a in acts)}]"

    def act_string(self, act: Act) -> str:
        """One act as a constructor call, arguments in ``ACT_FIELDS`` order."""
        args = []
        for name, value in act.arguments():
            if isinstance(value, Entity):
                args.append(f"{name}={self.entity_string(value)}")
            elif isinstance(value, tuple):
                args.append(f"{name}=[{', '.join(repr(v) for v in value)}]")
            elif name == "num_choices" and value.isdigit():
                args.append(f"{name}={value}")
            else:
                args.append(f"{name}={value!r}")
        return f"{act.kind}({', '.join(args)})"

    def entity_string(self, entity: Entity) -> str:
        """An entity as ``Hotel(area='east', stars=4)``; integer slots are bare when their value is an integer."""
        service = self._entity_service(entity.kind)
        parts = []
        for key, value in entity.fields:
            slot = service.slot_by_identifier(key) if service else None
            rendered = render_value(slot, value)
            parts.append(f"{key}={repr(value) if rendered.startswith(chr(34)) else rendered}")
        return f"{entity.kind}({', '.join(parts)})"

    def _entity_service(self, kind: str) -> Service | None:
        name = kind.lower()
        return self.schema.service(name) if name in self.schema else None

    # --- preambles -------------------------------------------------------------------------------------

    @cached_property
    def _dst_schema_text(self) -> str:
        lines = [
            "from abc import ABC, abstractmethod",
            "from dialogue import BeliefState, Intent",
            "",
            "",
            "class TravelAgent(ABC):",
            f'{INDENT}"""A travel assistant. Each user turn becomes a list of intent calls updating the belief state.',
            "",
            f'{INDENT}Pass only the arguments the user sets or changes. Pass "{DELETE}" to remove a value the user',
            f"{INDENT}takes back, and agent.state.<service>.<slot> to reuse a value already in the state.",
            f'{INDENT}"""',
            "",
            f"{INDENT}state: BeliefState",
            "",
            f"{INDENT}def handle_turn(self, belief_state, last_system_utterance, user_utterance, user_intent):",
            f'{ARG_INDENT}"""Record the user_intent calls for this turn and answer the user."""',
            "",
            f"{INDENT}@abstractmethod",
            f"{INDENT}def no_change(self) -> Intent:",
            f'{ARG_INDENT}"""The user adds, changes and removes nothing in this turn."""',
        ]
        for service in self.schema.services:
            lines += self._service_methods(service)
        return "\n".join(lines)

    def _service_methods(self, service: Service) -> list[str]:
        lines: list[str] = []
        full: dict[tuple[str, ...], str] = {}
        for intent in sorted(service.intents, key=lambda i: i.transactional):
            if intent.slots in full:
                lines += [
                    "",
                    f"{INDENT}def {intent.name}(self, **kwargs) -> Intent:",
                    f"{ARG_INDENT}return self.{full[intent.slots]}(**kwargs)",
                ]
                continue
            full[intent.slots] = intent.name
            slots = [service.slot(s) for s in intent.slots]
            signature = ", ".join(f"{s.identifier}: {s.type_hint} = None" for s in slots)
            lines += ["", f"{INDENT}@abstractmethod", f"{INDENT}def {intent.name}(self, {signature}) -> Intent:"]
            lines += _docstring(intent.description.capitalize() + ".", slots)
        return lines

    @cached_property
    def _act_schema_text(self) -> str:
        lines = [
            "from dataclasses import dataclass",
            "from typing import List",
            "",
            "",
            "# Entities describe things a service can find or book; acts carry them.",
            "@dataclass",
            "class Entity:",
            f'{INDENT}"""Details of a booking that belong to no single service (reference numbers, dates, party size)."""',
        ]
        for service in self.schema.services:
            lines += ["", "", "@dataclass", f"class {service.entity_class()}(Entity):"]
            lines += [line[len(INDENT) :] for line in _docstring(service.description.capitalize() + ".", service.slots)]
            lines += [f"{INDENT}{s.identifier}: {s.type_hint} = None" for s in service.slots]
            lines.append(f"{INDENT}choice: str = None  # how many entities match, as the system says it")
        lines += ["", "", "@dataclass", "class Act:", f'{INDENT}"""A dialogue act of the system."""']
        for kind, fields in ACT_FIELDS.items():
            lines += ["", "", "@dataclass", f"class {kind}(Act):", f'{INDENT}"""{_ACT_DOCS[kind]}"""']
            lines += [f"{INDENT}{f}: {_ACT_FIELD_TYPES[f]} = None" for f in fields]
        services = ", ".join(repr(s) for s in self.schema.names)
        lines += ["", "", f"SERVICES = [{services}]  # the values Request.service and NotifySuccess.service take"]
        lines += [
            "",
            "",
            "class SystemAgent:",
            f"{INDENT}def handle_turn(self, system_response: str, system_acts: List[Act]):",
            f'{ARG_INDENT}"""Annotate one system response with the acts it performs."""',
        ]
        return "\n".join(lines)

    @cached_property
    def example_acts(self) -> list[Act]:
        """A few acts built from the schema, shown in the act preamble so even a zero-shot prompt shows the call syntax:
        the kinds of ``EXAMPLE_ACT_KINDS`` paired with the services in turn (docs/method.md §4.4)."""
        services = self.schema.services
        return [_example_act(kind, services[i % len(services)]) for i, kind in enumerate(EXAMPLE_ACT_KINDS)]

    def preamble(self, mode: str) -> str:
        """The shared head of every prompt of ``mode``: schema code, example acts (act modes), the task and format notes."""
        schema_text = self._dst_schema_text if mode.startswith("dst") else self._act_schema_text
        agent = "TravelAgent" if mode.startswith("dst") else "SystemAgent"
        examples = ""
        if not mode.startswith("dst"):
            calls = "".join(f"{INDENT}{self.act_string(act)}\n" for act in self.example_acts)
            examples = f"{INDENT}# Acts are written as constructor calls with keyword arguments, like these:\n{calls}"
        return (
            f'{schema_text}\n\n\nif __name__ == "__main__":\n{INDENT}agent = {agent}()\n{examples}'
            f"{INDENT}# {TASKS[mode]}\n{INDENT}# {_FORMAT_NOTE}"
        )

    @cached_property
    def preambles(self) -> dict[str, str]:
        """Every mode's preamble, built once."""
        return {mode: self.preamble(mode) for mode in MODE_ARGUMENTS}

    # --- examples and targets --------------------------------------------------------------------------

    def _argument(self, name: str, example: Example) -> str:
        if name == "belief_state":
            return self.state_string(example.belief_state)
        if name in ("user_intent", "system_acts"):
            return getattr(example, name)
        return quote(getattr(example, name))

    def example_block(self, mode: str, number: int, example: Example) -> str:
        """A complete in-context example: ``# Example n`` and a closed handle_turn call."""
        args = [f"{ARG_INDENT}{name}={self._argument(name, example)}" for name in MODE_ARGUMENTS[mode]]
        return f"{INDENT}# Example {number}\n{INDENT}response = agent.handle_turn(\n" + ",\n".join(args) + f"\n{INDENT})"

    def target_block(self, mode: str, number: int, example: Example) -> str:
        """The open call to complete: context arguments, then the predicted argument with its list opened."""
        names = MODE_ARGUMENTS[mode]
        predicted = "user_intent" if mode.startswith("dst") else "system_acts"
        shown = names[: names.index(predicted)]
        if mode == "act_channel":
            shown = ()  # the channel model must explain the response from the acts alone
        args = [f"{ARG_INDENT}{name}={self._argument(name, example)},\n" for name in shown]
        prefix = DST_PREFIX if mode.startswith("dst") else ACT_PREFIX
        return (
            f"{INDENT}# Example {number}\n{INDENT}response = agent.handle_turn(\n"
            + "".join(args)
            + f"{ARG_INDENT}{predicted}={prefix}"
        )

    def prompt(self, mode: str, examples: Sequence[Example], target: Example) -> Prompt:
        """The whole prompt for ``mode``: shared preamble, examples (most relevant first), open target."""
        blocks = [self.example_block(mode, i + 1, ex) for i, ex in enumerate(examples)]
        blocks.append(self.target_block(mode, len(examples) + 1, target))
        return Prompt(preamble=self.preambles[mode] + "\n\n", body="\n\n".join(blocks))


# The act kinds of the act preamble's example calls: one asking, three carrying an entity, one with no arguments.
EXAMPLE_ACT_KINDS = ("Request", "Offer", "Inform", "Affirm", "ThankYou")


def _example_act(kind: str, service: Service) -> Act:
    """An act of ``kind`` about ``service``: a Request names its first two slots; an entity act carries the first
    possible value of its first two categorical slots."""
    if kind == "Request":
        return Act(kind, service=service.name, values=tuple(s.identifier for s in service.informable_slots[:2]))
    if "entity" not in ACT_FIELDS[kind]:
        return Act(kind)
    slots = [s for s in service.informable_slots if s.categorical][:2]
    fields = tuple((s.identifier, next(v for v in s.values if v != DONTCARE)) for s in slots)
    return Act(kind, entity=Entity(service.entity_class(), fields) if fields else None)


_ACT_FIELD_TYPES = {"entity": "Entity", "service": "str", "values": "List[str]", "num_choices": "int"}


def _docstring(summary: str, slots: Sequence[Slot]) -> list[str]:
    lines = [f'{ARG_INDENT}"""{summary}', "", f"{ARG_INDENT}Args:"]
    for slot in slots:
        described = f"{ARG_INDENT}{INDENT}{slot.identifier} ({slot.type_hint}): {slot.description}"
        if slot.categorical:
            shown = ", ".join(render_value(slot, v) for v in slot.values[:5])
            described += f"; one of {shown}{', ...' if len(slot.values) > 5 else ''}"
        lines.append(described)
    return [*lines, f'{ARG_INDENT}"""']


def _covering_intent(service: Service, changed: dict[str, str]) -> str:
    """The first non-transactional intent whose slots cover every changed slot (find_* before book_*)."""
    for intent in sorted(service.intents, key=lambda i: i.transactional):
        if set(changed) <= set(intent.slots):
            return intent.name
    return sorted(service.intents, key=lambda i: (-len(set(changed) & set(i.slots)), i.transactional))[0].name


_BOOLEAN_VALUES = frozenset({"yes", "no", DONTCARE})


def near_match(value: str, text: str, max_distance: int) -> bool:
    """Whether some stretch of ``text`` is within ``max_distance`` edits of ``value``, missing at most one of its characters."""
    size = len(value)
    for length in range(max(1, size - 1), size + max_distance + 1):  # shorter than size - 1 would need two deletions
        for start in range(len(text) - length + 1):
            if Levenshtein.distance(value, text[start : start + length], score_cutoff=max_distance) <= max_distance:
                return True
    return False


# Numbers as people say them ("for four people", "a table for eight"): a number said as a word is said.
NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty"
).split()


def mentioned(value: str, turn_text: Sequence[str]) -> bool:
    """Whether ``value`` is said in the turn (docs/method.md §4.5): a whole word for numbers (in digits, or in words
    up to twenty) and values under 5 characters, else a near match allowing 1 edit (5 characters) or 2 edits (6 or more)."""
    text = " ".join(turn_text).lower()
    value = value.lower()
    if len(value) < 5 or value.isdigit():
        spellings = [value]
        if value.isdigit() and int(value) < len(NUMBER_WORDS):
            spellings.append(NUMBER_WORDS[int(value)])
        return any(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) for word in spellings)
    return near_match(value, text, 1 if len(value) == 5 else 2)


def _is_scalar(slot: Slot) -> bool:
    """Numbers and yes/no values mean something only together with their slot name (6 people are not 6 nights)."""
    return slot.type_hint == "int" or (slot.categorical and set(slot.values) <= _BOOLEAN_VALUES)


def _reference_source(
    schema: Schema, service: str, slot: str, value: str, prior: State, turn_text: Sequence[str]
) -> tuple[str, str] | None:
    """The prior slot a new value was copied from, when it was not said aloud (e.g. "same area as the hotel").

    A number or yes/no can only come from the slot of the same name in another service; other values from any slot.
    """
    if value == DONTCARE:
        return None
    spec = schema.service(service).slot(slot)
    same_name_only = spec is not None and _is_scalar(spec)
    sources = [
        (svc, other)
        for svc, slots in strip_blanks(prior).items()
        for other, old in slots.items()
        if (svc, other) != (service, slot) and old.lower() == value.lower() and (other == slot or not same_name_only)
    ]
    if not sources or mentioned(value, turn_text):
        return None
    return sources[0]
