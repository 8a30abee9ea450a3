"""An ontology: the values each informable slot can take, from a schema's categorical lists and a database of entities.

The rule labeller spots values by looking for these strings in what a user says. It never reads gold labels: the
values come from the schema and from a database of the entities a service offers (MultiWOZ ships one per domain as
``<service>_db.json``, a list of objects). Times are left out on purpose: patterns find them (``labelling.cues``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from labelling.errors import LabellingError
from labelling.schema import DONTCARE, Schema, clean_slot_name

Ontology = dict[str, dict[str, tuple[str, ...]]]  # service -> schema slot name -> values (lower-case)
_TIME = re.compile(r"^\d{1,2}:\d{2}$")
MAX_ONTOLOGY_FILE_BYTES = 64 << 20  # one database or ontology file (MultiWOZ's largest, trains, is 0.75 MB)
_UNKNOWN = frozenset({"", "?", "none", "not mentioned", DONTCARE})


class OntologyError(LabellingError):
    """An ontology or database file that cannot be used."""


def from_schema(schema: Schema) -> Ontology:
    """The schema's categorical values (``dontcare`` left out: it is a cue, not a value one says)."""
    out: Ontology = {}
    for service in schema.services:
        for slot in service.informable_slots:
            values = tuple(v for v in slot.values if v not in _UNKNOWN)
            if values:
                out.setdefault(service.name, {})[slot.name] = values
    return out


def from_database(folder: str | Path, schema: Schema) -> Ontology:
    """Values of the informable slots in a folder of ``<service>_db.json`` files (lists of entity objects).

    A database key is matched to a slot the way MultiWOZ spells them (``pricerange`` -> ``price range``); keys that
    are no informable slot of the schema, non-string values and times are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OntologyError(f"no database folder at {folder}", "give a folder of <service>_db.json files")
    out: Ontology = {}
    for service in schema.services:
        path = folder / f"{service.name}_db.json"
        if not path.is_file():
            continue
        entities = _entities(path)
        informable = {slot.name for slot in service.informable_slots}
        values: dict[str, dict[str, None]] = {}
        for entity in entities:
            for key, value in entity.items():
                slot = clean_slot_name(key.replace(" ", ""))
                text = str(value).strip().lower() if isinstance(value, str) else ""
                if slot in informable and text not in _UNKNOWN and not _TIME.match(text):
                    values.setdefault(slot, {})[text] = None
        if values:
            out[service.name] = {slot: tuple(sorted(v)) for slot, v in values.items()}
    return out


def merge(*ontologies: Ontology) -> Ontology:
    """The union of several ontologies, values in first-seen order."""
    out: dict[str, dict[str, dict[str, None]]] = {}
    for ontology in ontologies:
        for service, slots in ontology.items():
            for slot, values in slots.items():
                out.setdefault(service, {}).setdefault(slot, {}).update(dict.fromkeys(values))
    return {svc: {slot: tuple(v) for slot, v in slots.items()} for svc, slots in out.items()}


def save(ontology: Ontology, path: str | Path, source: str) -> None:
    """Write an ontology as JSON, with a line saying where its values came from."""
    data = {"source": source, "values": {svc: {slot: list(v) for slot, v in slots.items()} for svc, slots in ontology.items()}}
    Path(path).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def load(path: str | Path) -> Ontology:
    """Read an ontology written by :func:`save`; a file of another shape is an OntologyError naming the fix."""
    try:
        data = json.loads(_read(Path(path)))
    except (OSError, ValueError) as error:
        raise OntologyError(
            f"cannot read the ontology {path}: {error}", "give a JSON file written by labelling.ontology.save"
        ) from error
    values = data.get("values") if isinstance(data, Mapping) else None
    if not isinstance(values, Mapping) or not all(isinstance(v, Mapping) for v in values.values()):
        raise OntologyError(f"{path} is not an ontology", 'expected {"values": {service: {slot: [values]}}}')
    return {
        str(svc): {str(slot): tuple(str(x).lower() for x in vals) for slot, vals in slots.items()}
        for svc, slots in values.items()
    }


def _entities(path: Path) -> list[Mapping]:
    try:
        data = json.loads(_read(path))
    except (OSError, ValueError) as error:
        raise OntologyError(f"cannot read the database file {path}: {error}", "give a JSON list of entity objects") from error
    if isinstance(data, Mapping):  # a service without entities (MultiWOZ's taxi file) holds a dict of lists
        return []
    if not isinstance(data, list):
        raise OntologyError(f"{path} is not a list of entities", "give a JSON list of entity objects")
    return [e for e in data if isinstance(e, Mapping)]


def _read(path: Path) -> str:
    """A file's text, refused past :data:`MAX_ONTOLOGY_FILE_BYTES` (a database is read whole)."""
    with path.open("rb") as f:
        data = f.read(MAX_ONTOLOGY_FILE_BYTES + 1)
    if len(data) > MAX_ONTOLOGY_FILE_BYTES:
        raise OntologyError(f"{path} is over {MAX_ONTOLOGY_FILE_BYTES:,} bytes", "give a smaller file")
    return data.decode("utf-8")
