"""The rule labeller: dialogue states and system acts from an ontology, patterns and cue words, with no LM.

It is the floor an LM labeller must beat and a half of the hybrid labeller. DST spots the values a user says (the
ontology's strings, times, counts, days, yes/no flags, "don't care") and files each under a service chosen by cue
words; act tagging reads the system response for phrases and patterns. A value equal to the prior state's is not a
change, so the rules never restate. Inputs are the turn's text and the labeller's own prior state: never gold.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from labelling.acts import Act, Entity
from labelling.cues import Cues
from labelling.ontology import Ontology
from labelling.schema import DONTCARE, Schema, slot_identifier
from labelling.states import DELETE, State

_TIME = re.compile(r"\b(\d{1,2})(?:[:.](\d{2}))?\s*(a\.?m\.?|p\.?m\.?|o'clock)?(?![\d:])")
_NUMBER = r"(\d+|{words})"
_SENTENCE = re.compile(r"(?<=[.?!])\s+")
_WINDOW = 40  # characters before a value searched for its role or negation (about six words)


def normalise(text: str) -> str:
    """Lower case, MultiWOZ's tokenised spacing undone (``do n't`` -> ``don't``), padded with spaces for whole-word
    matching."""
    text = text.lower().replace(" n't", "n't").replace(" 'm", "'m").replace(" 're", "'re").replace(" 'll", "'ll")
    text = re.sub(r"\s*'s\b", "s", text)  # possessives as a database spells names: "sheep 's green" -> "sheeps green"
    text = re.sub(r"(?<=[a-z])\s+-\s+(?=[a-z])", "-", text)  # "mid - range" -> "mid-range"
    text = re.sub(r"\s+([?.!,;:])", r"\1", text)
    return f" {' '.join(text.split())} "


def find(phrase: str, text: str) -> list[int]:
    """Start offsets of ``phrase`` as whole words in ``text``."""
    if phrase not in text:  # most phrases are absent: a substring test is far cheaper than the regex
        return []
    return [m.start() for m in _word(phrase).finditer(text)]


@functools.lru_cache(maxsize=65536)
def _word(phrase: str) -> re.Pattern:
    return re.compile(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])")


def _nearest(phrases: Iterable[str], text: str, end: int) -> tuple[str, int] | None:
    """The phrase that ends closest before ``end`` (within the window), longest first on ties."""
    best: tuple[str, int] | None = None
    for phrase in sorted(phrases, key=len, reverse=True):
        for start in find(phrase, text[max(0, end - _WINDOW) : end]):
            stop = max(0, end - _WINDOW) + start + len(phrase)
            if best is None or stop > best[1]:
                best = (phrase, stop)
    return best


@dataclass
class Mention:
    """A value found in the text: where, for which slot (of which services), and its canonical value."""

    slot: str
    value: str
    at: int
    services: tuple[str, ...] = ()  # empty: any active service that has the slot


@dataclass
class _Dialogue:
    """What the rules remember of a dialogue: the services it was last about."""

    active: list[str] = field(default_factory=list)


class RuleLabeller:
    """Labels turns by rules; one instance per partition (it keeps each dialogue's active services)."""

    def __init__(self, schema: Schema, ontology: Ontology, cues: Cues):
        self.schema = schema
        self.ontology = ontology
        self.cues = cues
        self._dialogues: dict[str, _Dialogue] = {}
        self._slots = {s.name: {slot.name for slot in s.informable_slots} for s in schema.services}
        words = "|".join(re.escape(w) for w in sorted(cues.get("number_words"), key=len, reverse=True)) or "zero"
        self._number = _NUMBER.format(words=words)

    # --- DST ----------------------------------------------------------------------------------------

    def dst(self, dialogue_id: str, system: str, user: str, prior: State) -> State:
        """The new state after a user turn: ``prior`` with every value the user said laid over it."""
        text, before = normalise(user), normalise(system)
        memory = self._dialogues.setdefault(dialogue_id, _Dialogue())
        named = self._services_named(text)
        # Where a value with no service of its own goes: the services the user names, then those the system named,
        # then those the dialogue was last about, then any in the state so far.
        ranked = list(dict.fromkeys([*named, *self._services_named(before), *memory.active, *prior]))
        state = {svc: dict(slots) for svc, slots in prior.items()}
        for mention, service in self._mentions(text, ranked):
            state.setdefault(service, {})[self._service_slot(service, mention.slot)] = mention.value
        for service, slot in self._dontcares(text, before, ranked):
            state.setdefault(service, {})[slot] = DONTCARE
        changed = [svc for svc in state if state[svc] != prior.get(svc)]
        memory.active = list(dict.fromkeys([*changed, *named, *memory.active]))
        return state

    def _services_named(self, text: str) -> list[str]:
        """Services the text names by a cue word or an entity name, in order of first mention."""
        found: dict[str, int] = {}
        for service, words in self.cues.get("services").items():
            for word in words:
                for at in find(word, text):
                    found[service] = min(found.get(service, at), at)
        for service, spellings in self._values("name"):
            for spelled in spellings:
                for at in find(spelled, text):
                    found[service] = min(found.get(service, at), at)
        return [svc for svc, _ in sorted(found.items(), key=lambda kv: kv[1]) if svc in self._slots]

    def _values(self, slot: str) -> list[tuple[str, dict[str, str]]]:
        """(service, spelling -> value) of one slot across services: ontology values of 4 characters and more, spelled
        as :func:`normalise` spells text, and each also without a leading "the" when two words or more remain."""
        out = []
        for service, slots in self.ontology.items():
            spellings: dict[str, str] = {}
            for value in slots.get(slot, ()):
                spelled = normalise(value).strip()
                if len(spelled) >= 4:
                    spellings[spelled] = value
                    if spelled.startswith("the ") and len(spelled.split()) >= 3:
                        spellings.setdefault(spelled[4:], value)
            out.append((service, spellings))
        return out

    def _mentions(self, text: str, ranked: list[str]) -> list[tuple[Mention, str]]:
        """Every value said in ``text`` with the service it fills, longest spellings first; a stretch of text fills one
        slot at most, and a mention no service can take claims no text."""
        taken: list[tuple[int, int]] = []
        out = []
        for spelled, mention in self._candidates(text):
            end = mention.at + len(spelled)
            if any(a < end and mention.at < b for a, b in taken):
                continue
            service = self._owner(mention, ranked)
            if service is not None:
                taken.append((mention.at, end))
                out.append((mention, service))
        return out

    def _candidates(self, text: str) -> list[tuple[str, Mention]]:
        found: list[tuple[str, Mention]] = []
        found += self._counts(text)
        found += self._times(text)
        found += self._places(text)
        found += self._names(text)
        found += self._ontology_values(text)
        found += self._flags(text)
        found += self._days(text)
        return sorted(found, key=lambda pair: -len(pair[0]))

    def _spellings(self, service: str, slot: str) -> dict[str, str]:
        """Spelling -> value for one slot: the ontology's values and the cue file's synonyms."""
        synonyms = self.cues.get("synonyms")
        out = {v: v for v in self.ontology.get(service, {}).get(slot, ())}
        for scope in ("*", service):
            out.update(synonyms.get(scope, {}).get(slot, {}))
        return out

    def _ontology_values(self, text: str) -> list[tuple[str, Mention]]:
        """Categorical and database values except names, places, days and counts (patterns and roles take those). A
        value several services share ("centre") is one mention that any of them may take; a value spelled as its
        service's name (a hotel's type "hotel") is not spotted: saying it names the service, not the value."""
        skip = {
            "name",
            "departure",
            "destination",
            "day",
            "book day",
            "book people",
            "book stay",
            "stars",
            *self.cues.get("flags"),
        }
        owners: dict[tuple[str, str, str], list[str]] = {}
        for service, slots in self._slots.items():
            for slot in slots - skip:
                for spelled, value in self._spellings(service, slot).items():
                    if spelled != service and find(spelled, text):
                        owners.setdefault((spelled, slot, value), []).append(service)
        return [
            (spelled, Mention(slot, value, at, tuple(services)))
            for (spelled, slot, value), services in owners.items()
            for at in find(spelled, text)
        ]

    def _flags(self, text: str) -> list[tuple[str, Mention]]:
        """Yes/no slots: "free wifi" says yes, "no parking" / "don't need parking" says no."""
        negation = self.cues.get("negation")
        found = []
        for slot, words in self.cues.get("flags").items():
            for word in words:
                for at in find(word, text):
                    negated = _nearest(negation, text, at) is not None
                    found.append((word, Mention(slot, "no" if negated else "yes", at)))
        return found

    def _days(self, text: str) -> list[tuple[str, Mention]]:
        days = {d: d for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")}
        days.update(self.cues.get("day_words"))
        found = []
        for spelled, day in days.items():
            for at in find(spelled, text):
                found.append((spelled, Mention("day", day, at)))
        return found

    def _counts(self, text: str) -> list[tuple[str, Mention]]:
        """ "3 people", "four nights", "a 4 star": a number followed by a count noun."""
        numbers = self.cues.get("number_words")
        found = []
        for slot, nouns in self.cues.get("counts").items():
            for noun in sorted(nouns, key=len, reverse=True):
                pattern = rf"(?<![\w:]){self._number}\s?-?\s?{re.escape(noun.lstrip('-'))}(?!\w)"
                for m in re.finditer(pattern, text):
                    value = numbers.get(m.group(1), m.group(1))
                    found.append((m.group(0), Mention(slot, value, m.start())))
        nouns = "|".join(re.escape(n.lstrip("-")) for ns in self.cues.get("counts").values() for n in ns)
        for slot, prefixes in self.cues.get("count_prefixes").items():
            for prefix in prefixes:  # "a table for 3": the count noun left out; not "for 3 nights", "for 3:15", "for 3pm"
                pattern = rf"(?<!\w){re.escape(prefix)}\s{self._number}(?![\w:.]|\s?(?:{nouns}|am|pm|o'clock)\b)"
                for m in re.finditer(pattern, text):
                    found.append((m.group(0), Mention(slot, numbers.get(m.group(1), m.group(1)), m.start())))
        return found

    def _times(self, text: str) -> list[tuple[str, Mention]]:
        """Clock times, filed by the role word before them ("leave after 9" -> leave at) or by the active service."""
        found = []
        named = {w: t for w, t in self.cues.get("time_words").items()}
        spans = [(m.group(0), m.start(), _clock(m)) for m in _TIME.finditer(text)]
        spans += [(w, at, t) for w, t in named.items() for at in find(w, text)]
        roles = self.cues.get("time_roles")
        for spelled, at, clock in spans:
            if clock is None:
                continue
            role = _nearest([w for words in roles.values() for w in words], text, at)
            slot = next((s for s, words in roles.items() if role and role[0] in words), None)
            found.append((spelled, Mention(slot or "time", clock, at)))
        return found

    def _places(self, text: str) -> list[tuple[str, Mention]]:
        """Places of the services with place slots (train stations; for a taxi, stations and entity names too): "from
        X" is a departure, "to X" a destination."""
        roles = self.cues.get("place_roles")
        role_words = [w for words in roles.values() for w in words]
        found = []
        for service, slots in self.cues.get("place_slots").items():
            for spelled, value in self._place_spellings(service).items():
                for at in find(spelled, text):
                    role = _nearest(role_words, text, at)
                    slot = next((s for s in slots if role and role[0] in roles.get(s, ())), None)
                    found.append((spelled, Mention(slot or "place", value, at, (service,))))
        return found

    @functools.cached_property
    def _taxi_places(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for service, spellings in self._values("name"):
            if service in self.cues.get("taxi_places_from", []):
                out.update(spellings)
        return out

    def _place_spellings(self, service: str) -> dict[str, str]:
        """Places a service's departure/destination can take: its own values, and for a service whose place slots have
        none (a taxi) every entity name and every other service's place."""
        out: dict[str, str] = {}
        for slot in self.cues.get("place_slots").get(service, []):
            out.update(self._spellings(service, slot))
        if not out:
            out.update(self._taxi_places)
            for other in self.cues.get("place_slots"):
                for slot in self.cues.get("place_slots")[other]:
                    out.update(self._spellings(other, slot))
        return {k: v for k, v in out.items() if len(k) >= 3}

    def _names(self, text: str) -> list[tuple[str, Mention]]:
        """Entity names from the ontology, each for its own service."""
        return [
            (spelled, Mention("name", value, at, (service,)))
            for service, spellings in self._values("name")
            for spelled, value in spellings.items()
            for at in find(spelled, text)
        ]

    def _owner(self, mention: Mention, ranked: list[str]) -> str | None:
        """The service a mention fills: the first ranked service among those it names (any, when it names none) that
        has its slot; a name with no ranked service of its own still fills its own service."""
        allowed = mention.services or tuple(ranked)
        for service in ranked:
            if service in allowed and self._service_slot(service, mention.slot) is not None:
                return service
        if mention.slot == "name" and len(mention.services) == 1 and mention.services[0] not in self.cues.get("place_slots"):
            return mention.services[0]
        for service in self.cues.get("fallback_services").get(mention.slot, []):
            if service in allowed or not mention.services:
                return service
        return None

    def _service_slot(self, service: str, slot: str) -> str | None:
        """The schema slot of ``service`` a generic mention fills, or None when the service has no such slot."""
        slots = self._slots.get(service, set())
        if slot == "day":
            slot = self.cues.get("day_slots").get(service, slot)
        elif slot == "time":
            options = self.cues.get("time_slots").get(service, [])
            slot = options[0] if options else slot
        elif slot == "place":
            options = self.cues.get("place_slots").get(service, [])
            slot = options[-1] if options else slot
        elif slot in ("leave at", "arrive by") and slot not in slots:
            options = self.cues.get("time_slots").get(service, [])
            slot = options[0] if options else slot
        return slot if slot in slots else None

    def _dontcares(self, text: str, before: str, ranked: list[str]) -> list[tuple[str, str]]:
        """(service, slot) for each "don't care": the slot named right after "any" ("any area"), or, after a "don't
        care" phrase, the slot named in the turn, else the slot the system just asked about."""
        slot_words = self.cues.get("slot_words")
        out = []
        for word in self.cues.get("any_words", []):
            for at in find(word, text):
                after = f" {' '.join(text[at + len(word) :].split()[:3])} "
                slot = next((s for s, ws in slot_words.items() if any(find(w, after) for w in ws)), None)
                out += self._dontcare_slot(slot, ranked)
        if any(find(p, text) for p in self.cues.get("dontcare")):
            named = [s for s, ws in slot_words.items() if any(find(w, text) for w in ws)]
            for slot in named or self._asked_slots(before):
                out += self._dontcare_slot(slot, ranked)
        return out

    def _dontcare_slot(self, slot: str | None, active: list[str]) -> list[tuple[str, str]]:
        if slot is None:
            return []
        for service in active:
            mapped = self._service_slot(service, slot)
            if mapped is not None:
                return [(service, mapped)]
        return []

    def _asked_slots(self, system: str) -> list[str]:
        """Slots a system utterance asks about: request cues inside its questions."""
        questions = [s for s in _SENTENCE.split(system) if s.strip().endswith("?")]
        return [slot for slot, cues in self.cues.get("request_slots").items() if any(find(c, q) for q in questions for c in cues)]

    # --- acts ---------------------------------------------------------------------------------------

    def acts(self, dialogue_id: str, response: str, state: State) -> list[Act]:
        """The system acts of one response: phrase cues for each act kind, requests from questions, informs from
        patterns and entity names. The domain is the service the response names, else the dialogue's active one."""
        text = normalise(response)
        memory = self._dialogues.setdefault(dialogue_id, _Dialogue())
        service = (self._services_named(text) or memory.active or list(state) or [None])[0]
        acts: list[Act] = []
        cues = self.cues.get("acts")
        said = {kind: any(find(p, text) for p in phrases) for kind, phrases in cues.items()}
        requested = self._requested(text, service)
        if requested:
            booking = service in ("hotel", "restaurant") and all(s.startswith("book") for s in requested)
            acts.append(Act("Request", service="booking" if booking else service, values=tuple(map(slot_identifier, requested))))
        informed = self._informed(text, service)
        if said.get("NotifySuccess") and service in ("hotel", "restaurant", "train") and "ref" in dict(informed):
            acts.append(
                Act(
                    "NotifySuccess",
                    service="booking" if service != "train" else "train",
                    entity=Entity(_kind(service, True), (("ref", "ref"),)),
                )
            )
            informed = [(k, v) for k, v in informed if k != "ref"]
        elif said.get("NotifyFailure") and service:
            acts.append(Act("NotifyFailure", service=service, entity=Entity(_kind(service), ())))
        informed = [(k, v) for k, v in informed if k != "ref"]
        if informed and service:
            kind = "Offer" if said.get("Offer") and any(k == "name" for k, _ in informed) else "Inform"
            acts.append(Act(kind, entity=Entity(_kind(service), tuple(informed))))
        if said.get("Confirm") and service:
            acts.append(Act("Confirm", entity=Entity(_kind(service), ())))
        for kind in ("RequestAlternatives", "Goodbye", "Greeting"):
            if said.get(kind):
                acts.append(Act(kind))
        return acts

    def _requested(self, text: str, service: str | None) -> list[str]:
        if service is None:
            return []
        slots = []
        for slot in self._asked_slots(text):
            mapped = self._service_slot(service, slot) if slot not in ("day", "book day") else self._service_slot(service, "day")
            if mapped and mapped not in slots:
                slots.append(mapped)
        return slots

    def _informed(self, text: str, service: str | None) -> list[tuple[str, str]]:
        """(slot identifier, value) the response gives about ``service``: patterns, entity names, spoken values."""
        if service is None:
            return []
        out: dict[str, str] = {}
        served = self.cues.get("inform_services")
        statements = " ".join(s for s in _SENTENCE.split(text) if not s.strip().endswith("?"))
        for slot, pattern in self.cues.get("inform_patterns").items():
            if service in served.get(slot, ()) and (m := re.search(pattern, statements)):
                out[slot_identifier(slot)] = m.group(0).strip()
        for _, mention in self._candidates(statements):
            slot = self._service_slot(service, mention.slot) if self._owner(mention, [service]) == service else None
            if slot is not None:
                out.setdefault(slot_identifier(slot), mention.value)
        return list(out.items())


def merge_states(prior: State, first: State, second: State) -> State:
    """``prior`` with two deltas applied, ``second`` winning where both set a slot."""
    state = {svc: dict(slots) for svc, slots in prior.items()}
    for delta in (first, second):
        for service, slots in delta.items():
            for slot, value in slots.items():
                if value == DELETE:
                    state.get(service, {}).pop(slot, None)
                else:
                    state.setdefault(service, {})[slot] = value
    return {svc: slots for svc, slots in state.items() if slots}


def free_text_gaps(schema: Schema, lm_delta: State, rule_delta: State) -> State:
    """The part of an LM's delta the rules could not have written: free-text (non-categorical) slots the rules' delta
    leaves unset."""
    out: State = {}
    for service, slots in lm_delta.items():
        if service not in schema:
            continue
        svc = schema.service(service)
        for slot, value in slots.items():
            known = svc.slot(slot)
            if known is not None and not known.categorical and slot not in rule_delta.get(service, {}):
                out.setdefault(service, {})[slot] = value
    return out


def merge_acts(first: list[Act], second: list[Act]) -> list[Act]:
    """``first``, then each act of ``second`` whose kind and domain ``first`` lacks."""
    seen = {(a.kind, a.service or (a.entity.kind if a.entity else "")) for a in first}
    return [*first, *(a for a in second if (a.kind, a.service or (a.entity.kind if a.entity else "")) not in seen)]


def _kind(service: str, booking: bool = False) -> str:
    return "Entity" if booking and service != "train" else service.capitalize()


def _clock(match: re.Match) -> str | None:
    """``9:30pm`` -> ``21:30``; a bare number is a time only with am/pm or "o'clock"; None when it is no time."""
    hour, minutes, suffix = int(match.group(1)), match.group(2), (match.group(3) or "").replace(".", "")
    if minutes is None and not suffix:
        return None
    if hour > 24 or (minutes is not None and int(minutes) > 59):
        return None
    if suffix == "pm" and hour < 12:
        hour += 12
    if suffix == "am" and hour == 12:
        hour = 0
    return f"{hour:02d}:{minutes or '00'}"


def rule_labeller(schema: Schema, ontology_path: str | None, cues_path: str | None, bundled_schema: bool) -> RuleLabeller:
    """A RuleLabeller for one partition from a job's ``rules`` files. Unset, the cue file is the bundled MultiWOZ one and
    the ontology is the bundled MultiWOZ one for the bundled schema, else the schema's own categorical values."""
    from labelling import ontology as ontologies
    from labelling.cues import load_cues
    from labelling.data import BUNDLED_CUES, BUNDLED_ONTOLOGY

    if ontology_path is not None:
        values = ontologies.merge(ontologies.from_schema(schema), ontologies.load(ontology_path))
    elif bundled_schema:
        values = ontologies.load(BUNDLED_ONTOLOGY)
    else:
        values = ontologies.from_schema(schema)
    return RuleLabeller(schema, values, load_cues(cues_path or BUNDLED_CUES))
