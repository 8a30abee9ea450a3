"""The service schema: services, informable slots, categorical values and Python-identifier slot names.

Everything else in the package names slots the way this module does: schema names with spaces
(``"price range"``) in states, identifiers (``price_range``) in prompts and act entities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from labelling.data import BUNDLED_SCHEMA
from labelling.errors import SchemaError
from labelling.limits import MAX_SCHEMA_BYTES, MISSING, file_problem

EVALUATED_SERVICES = ("hotel", "train", "attraction", "restaurant", "taxi")
DONTCARE = "dontcare"

# MultiWOZ 2.2 writes compound slot names without separators; these are the ones that need splitting.
_SCHEMA_RENAMES = {"pricerange": "price range", "leaveat": "leave at", "arriveby": "arrive by"}
_IDENTIFIER_RENAMES = {"trainid": "id", "entrancefee": "entrance_fee", "openhours": "open_hours"}


def clean_slot_name(raw: str, service: str | None = None) -> str:
    """Map a raw MultiWOZ slot name (``hotel-bookpeople``, ``pricerange``) to the schema name (``book people``)."""
    name = raw.strip().lower()
    if service and name.startswith(f"{service}-"):
        name = name[len(service) + 1 :]
    if name in _SCHEMA_RENAMES:
        return _SCHEMA_RENAMES[name]
    if name.startswith("book") and not name.startswith("book ") and name not in ("book", "booked"):
        return f"book {name[4:]}"
    return name


def slot_identifier(slot_name: str) -> str:
    """The Python identifier used for a schema slot name in prompts (``price range`` -> ``price_range``)."""
    return _IDENTIFIER_RENAMES.get(slot_name, slot_name.replace(" ", "_"))


@dataclass(frozen=True)
class Slot:
    """One slot of a service; ``values`` holds the categorical values (with ``dontcare``) or is empty."""

    name: str
    identifier: str
    description: str
    categorical: bool
    values: tuple[str, ...]
    informable: bool

    @property
    def type_hint(self) -> str:
        """``int`` when every categorical value (ignoring dontcare) is an integer, ``float`` when numeric, else ``str``."""
        concrete = [v for v in self.values if v != DONTCARE]
        if not self.categorical or not concrete:
            return "str"
        if all(v.isdigit() for v in concrete):
            return "int"
        try:
            [float(v) for v in concrete]
        except ValueError:
            return "str"
        return "float"


@dataclass(frozen=True)
class Intent:
    """An intent of a service; ``slots`` are its informable slots in schema slot order."""

    name: str
    description: str
    transactional: bool
    slots: tuple[str, ...]


@dataclass(frozen=True)
class Service:
    """A service: its description, all its slots, and its intents."""

    name: str
    description: str
    slots: tuple[Slot, ...]
    intents: tuple[Intent, ...]

    @cached_property
    def _by_name(self) -> dict[str, Slot]:
        return {s.name: s for s in self.slots}

    @cached_property
    def _by_identifier(self) -> dict[str, Slot]:
        return {s.identifier: s for s in self.slots}

    @property
    def informable_slots(self) -> tuple[Slot, ...]:
        """Slots that may appear in a dialogue state."""
        return tuple(s for s in self.slots if s.informable)

    def slot(self, name: str) -> Slot | None:
        """The slot with this schema name, or None."""
        return self._by_name.get(name)

    def slot_by_identifier(self, identifier: str) -> Slot | None:
        """The slot with this Python identifier, or None."""
        return self._by_identifier.get(identifier)

    def entity_class(self) -> str:
        """The act-entity class name for this service (``hotel`` -> ``Hotel``)."""
        return self.name.capitalize()


@dataclass(frozen=True)
class Schema:
    """A set of services, looked up by name; built from a MultiWOZ 2.2 ``schema.json``."""

    services: tuple[Service, ...]
    source: str = field(default="", compare=False)

    @classmethod
    def load(cls, path: str | Path | None = None, services: tuple[str, ...] | None = EVALUATED_SERVICES) -> Schema:
        """Read a MultiWOZ 2.2 schema file (the bundled one by default), keeping only ``services`` (None keeps all)."""
        path = Path(path) if path else BUNDLED_SCHEMA
        from labelling.bounded import read_head

        problem = file_problem(path, MAX_SCHEMA_BYTES)
        if problem is not None and problem != MISSING:  # a device, a folder or a huge file is never read
            raise SchemaError(f"{path}: {problem}", "pass a MultiWOZ 2.2 schema.json")
        try:
            raw = _parse(path, read_head(path, MAX_SCHEMA_BYTES))
        except FileNotFoundError as e:
            raise SchemaError(f"{path}: schema file not found", "pass --schema with a MultiWOZ 2.2 schema.json") from e
        except OSError as e:
            raise SchemaError(f"{path}: cannot read ({e.strerror})", "pass --schema with a MultiWOZ 2.2 schema.json") from e
        if not isinstance(raw, list):
            raise SchemaError(f"{path}: expected a JSON list of services, got {type(raw).__name__}")
        parsed = [_parse_service(entry, path, i) for i, entry in enumerate(raw)]
        if services is not None:
            known = {s.name for s in parsed}
            missing = [s for s in services if s not in known]
            if missing:
                raise SchemaError(f"{path}: services {missing} are not in the schema", f"it has {sorted(known)}")
            parsed = [s for s in parsed if s.name in services]
            parsed.sort(key=lambda s: services.index(s.name))
        return cls(tuple(parsed), source=str(path))

    @cached_property
    def _by_name(self) -> dict[str, Service]:
        return {s.name: s for s in self.services}

    @property
    def names(self) -> tuple[str, ...]:
        """Service names in schema order."""
        return tuple(s.name for s in self.services)

    def __contains__(self, service: str) -> bool:
        return service in self._by_name

    def service(self, name: str) -> Service:
        """The service called ``name``; raises SchemaError listing the known services otherwise."""
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"unknown service {name!r}", f"known services: {', '.join(self.names)}") from None

    @cached_property
    def identifiers(self) -> tuple[str, ...]:
        """Every slot identifier of every service, each once, in schema order: the fields a generic entity may hold."""
        return tuple(dict.fromkeys(s.identifier for svc in self.services for s in svc.slots))

    def informable(self) -> dict[str, tuple[str, ...]]:
        """service -> informable slot names, in schema order."""
        return {s.name: tuple(x.name for x in s.informable_slots) for s in self.services}

    def is_informable(self, service: str, slot: str) -> bool:
        """Whether ``service``/``slot`` may appear in a dialogue state."""
        svc = self._by_name.get(service)
        found = svc.slot(slot) if svc else None
        return bool(found and found.informable)


def _parse(path: Path, raw: bytes) -> object:
    """A schema file's JSON, measured first (a 200,000-deep one is refused by its nesting, not by Python's stack), and
    read as UTF-8: every way it can fail is a one-line SchemaError."""
    from labelling import settings
    from labelling.bounded import TooBig, measure_json, wide_encoding

    wide = wide_encoding(raw[:4])
    if wide is not None:
        raise SchemaError(f"{path}: not UTF-8 text (it starts with a {wide} byte-order mark)", "save the schema as UTF-8")
    try:
        measure_json(raw, settings.MAX_JSON_ELEMENTS.get(), settings.MAX_NESTING.get())
        return json.loads(raw.decode("utf-8-sig"))
    except TooBig as e:
        raise SchemaError(
            f"{path}: {e}, the limit", f"expected a MultiWOZ 2.2 schema.json; or raise {settings.MAX_NESTING.name}"
        ) from e
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise SchemaError(f"{path}: not valid JSON ({e})", "expected a MultiWOZ 2.2 schema.json") from e


def _parse_service(entry: dict, path: Path, index: int) -> Service:
    try:
        name = entry["service_name"]
        informable = {
            clean_slot_name(s, name)
            for intent in entry["intents"]
            for s in [*intent.get("required_slots", []), *intent.get("optional_slots", {})]
        }
        slots = tuple(_parse_slot(s, name, informable) for s in entry["slots"])
        order = [s.name for s in slots]
        intents = tuple(
            Intent(
                name=i["name"],
                description=i.get("description", ""),
                transactional=bool(i.get("is_transactional", False)),
                slots=tuple(
                    sorted(
                        {clean_slot_name(s, name) for s in [*i.get("required_slots", []), *i.get("optional_slots", {})]},
                        key=order.index,
                    )
                ),
            )
            for i in entry["intents"]
        )
    except (KeyError, TypeError, ValueError) as e:
        raise SchemaError(f"{path}: service #{index} is malformed ({e!r})", "expected MultiWOZ 2.2 schema.json entries") from e
    return Service(name=name, description=entry.get("description", ""), slots=slots, intents=intents)


def _parse_slot(raw: dict, service: str, informable: set[str]) -> Slot:
    name = clean_slot_name(raw["name"], service)
    categorical = bool(raw.get("is_categorical", False))
    values = [v.lower() for v in raw.get("possible_values") or []] if categorical else []
    if set(values) == {"free", "no", "yes"}:
        values = ["yes", "no"]  # "free" means yes in MultiWOZ; keep one spelling per meaning
    if categorical and DONTCARE not in values:
        values.append(DONTCARE)
    return Slot(
        name=name,
        identifier=slot_identifier(name),
        description=raw.get("description", ""),
        categorical=categorical,
        values=tuple(values),
        informable=name in informable,
    )
