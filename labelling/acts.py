"""Typed system dialogue acts and the entities they carry, with a JSON round trip and conversion from gold MultiWOZ rows.

Entity fields are slot identifiers (``price_range``) with string values, so an act means the same thing
whether it came from gold annotations, a model completion, or a stored label.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from labelling.errors import CorpusError
from labelling.schema import clean_slot_name, slot_identifier

# Act kind -> the keyword fields it accepts, in rendering order. One place defines the act vocabulary.
ACT_FIELDS: dict[str, tuple[str, ...]] = {
    "Inform": ("entity",),
    "Offer": ("entity", "num_choices"),
    "Confirm": ("entity",),
    "Affirm": ("entity",),
    "Negate": ("entity",),
    "NotifySuccess": ("service", "entity"),
    "NotifyFailure": ("service", "entity"),
    "Request": ("service", "values"),
    "RequestAlternatives": (),
    "Acknowledge": (),
    "Goodbye": (),
    "Greeting": (),
    "ThankYou": (),
}
GENERIC_ENTITY = "Entity"
ACT_ONLY_DOMAINS = ("general", "booking")  # gold act domains that are not services: no entity class of their own
EXTRA_ENTITY_FIELDS = ("choice",)


@dataclass(frozen=True)
class Entity:
    """A bundle of slot values about one service's object (``Hotel(area='east')``); ``kind`` is the class name."""

    kind: str
    fields: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict:
        """The JSON form: ``{"__type": kind, field: value, ...}``."""
        return {"__type": self.kind, **dict(self.fields)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Entity:
        """Inverse of :meth:`to_dict`."""
        kind = data.get("__type", GENERIC_ENTITY)
        return cls(kind, tuple((k, str(v)) for k, v in data.items() if k != "__type" and v is not None))


@dataclass(frozen=True)
class Act:
    """One dialogue act; only the fields listed for its kind in ``ACT_FIELDS`` may be set."""

    kind: str
    entity: Entity | None = None
    service: str | None = None
    values: tuple[str, ...] | None = None
    num_choices: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ACT_FIELDS:
            raise ValueError(f"unknown act {self.kind!r}; known acts: {', '.join(ACT_FIELDS)}")
        extra = [
            f
            for f in ("entity", "service", "values", "num_choices")
            if getattr(self, f) is not None and f not in ACT_FIELDS[self.kind]
        ]
        if extra:
            raise ValueError(f"{self.kind} takes no {', '.join(extra)}")

    def arguments(self) -> list[tuple[str, object]]:
        """(name, value) for each set field, in rendering order."""
        return [(f, getattr(self, f)) for f in ACT_FIELDS[self.kind] if getattr(self, f) is not None]

    def to_dict(self) -> dict:
        """The JSON form used in stored labels: ``{"__type": "Inform", "entity": {"__type": "Hotel", ...}}``."""
        out: dict = {"__type": self.kind}
        for name, value in self.arguments():
            out[name] = value.to_dict() if isinstance(value, Entity) else list(value) if isinstance(value, tuple) else value
        return out

    def to_json(self) -> str:
        """One act as a JSON string (the reference's storage format)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping) -> Act:
        """Inverse of :meth:`to_dict`; raises ValueError on an unknown kind, ignores keys no act uses (e.g. ``reason``)."""
        kind = data.get("__type")
        entity = data.get("entity")
        values = data.get("values")
        num = data.get("num_choices")
        return cls(
            kind=kind,
            entity=Entity.from_dict(entity) if isinstance(entity, Mapping) else None,
            service=data.get("service"),
            values=tuple(str(v) for v in values) if values is not None else None,
            num_choices=str(num) if num is not None else None,
        )

    @classmethod
    def from_json(cls, text: str) -> Act:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def acts_to_json(acts: Iterable[Act]) -> list[str]:
    """Acts as a list of JSON strings."""
    return [a.to_json() for a in acts]


def acts_from_json(items: Iterable[str]) -> list[Act]:
    """Parse stored act strings; blanks (the ``[""]`` placeholder of an empty list) are skipped."""
    return [Act.from_json(s) for s in items if s and s.strip()]


# --- gold MultiWOZ act rows -------------------------------------------------------------------------------

_GOLD_ACT_KIND = {
    "inform": "Inform",
    "request": "Request",
    "recommend": "Offer",
    "select": "Offer",
    "offerbook": "Confirm",
    "offerbooked": "NotifySuccess",
    "book": "NotifySuccess",
    "nooffer": "NotifyFailure",
    "nobook": "NotifyFailure",
    "reqmore": "RequestAlternatives",
    "bye": "Goodbye",
    "welcome": "Greeting",
    "greet": "Greeting",
    "thank": "ThankYou",
}
_SERVICE_RENAMES = {
    "train": {"time": "duration", "id": "trainid"},
    "attraction": {"fee": "entrancefee", "open": "openhours", "price": "entrancefee"},
    "taxi": {"car": "type"},
    "booking": {"time": "book time", "day": "book day", "stay": "book stay", "people": "book people"},
    "hotel": {"price": "price range", "day": "book day"},
    "restaurant": {"price": "price range", "time": "book time", "day": "book day"},
}
_GENERIC_RENAMES = {
    "addr": "address",
    "leave": "leave at",
    "arrive": "arrive by",
    "ticket": "price",
    "depart": "departure",
    "dest": "destination",
    "people": "book people",
    "post": "postcode",
    "stay": "book stay",
}


def gold_slot_name(service: str, raw: str) -> str:
    """The schema slot name for a slot as MultiWOZ act annotations spell it (``Addr`` -> ``address``)."""
    name = raw.strip().lower()
    renamed = _SERVICE_RENAMES.get(service, {}).get(name) or _GENERIC_RENAMES.get(name)
    return renamed or clean_slot_name(name)


def _entity_kind(service: str) -> str:
    return GENERIC_ENTITY if service == "booking" else service.capitalize()


def acts_from_gold(dialog_act: Mapping[str, list], where: str = "") -> list[Act]:
    """Convert a MultiWOZ ``dialog_act`` dict (``{"Hotel-Inform": [["Area", "east"]]}``) into typed acts."""
    acts: list[Act] = []
    for key, rows in dialog_act.items():
        domain, _, act = key.lower().partition("-")
        kind = _GOLD_ACT_KIND.get(act)
        if not isinstance(rows, list):
            raise CorpusError(f"{where}: act {key!r} has rows {rows!r}", "expected a list of [slot, value] pairs")
        if kind is None:
            raise CorpusError(f"{where}: unknown dialogue act {key!r}", f"known acts: {', '.join(sorted(_GOLD_ACT_KIND))}")
        pairs = []
        for row in rows:
            if not isinstance(row, (list, tuple)) or len(row) != 2:
                raise CorpusError(f"{where}: act {key!r} has a row {row!r}", "expected [slot, value] pairs")
            slot, value = str(row[0]).strip().lower(), str(row[1]).strip().lower()
            if slot in ("", "none"):
                continue
            pairs.append((slot_identifier(gold_slot_name(domain, slot)), "yes" if value == "none" else value))
        acts.append(_gold_act(kind, domain, pairs))
    return acts


def _gold_act(kind: str, domain: str, pairs: list[tuple[str, str]]) -> Act:
    if kind == "Request":
        return Act(kind, service=domain, values=tuple(dict.fromkeys(s for s, _ in pairs)))
    if not ACT_FIELDS[kind]:
        return Act(kind)
    # A slot-less act of a service keeps its domain as an empty entity (Train-OfferBook -> Confirm(entity=Train())):
    # dropping it would turn the act into a bare Confirm() and lose the (act, domain) it scores on.
    keeps_domain = pairs or domain not in ACT_ONLY_DOMAINS
    entity = Entity(_entity_kind(domain), tuple(dict(pairs).items())) if keeps_domain else None
    if kind in ("NotifySuccess", "NotifyFailure"):  # their service field already names the domain
        return Act(kind, service=domain, entity=entity if pairs else None)
    return Act(kind, entity=entity)


def acts_from_actions(actions: Iterable[Mapping], service: str, where: str = "") -> list[Act]:
    """Convert MultiWOZ 2.2 frame ``actions`` (``{"act": "INFORM", "slot": "area", "values": [...]}``) into typed acts."""
    grouped: dict[str, list] = {}
    for action in actions:
        act = str(action.get("act", "")).lower()
        name = act.partition("-")[2] or act
        domain = act.partition("-")[0] if "-" in act else service
        key = f"{domain}-{name}"
        values = action.get("values") or ["none"]
        grouped.setdefault(key, []).extend([[action.get("slot", "none") or "none", v] for v in values[:1]])
    return acts_from_gold(grouped, where)
