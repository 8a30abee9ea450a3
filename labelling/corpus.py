"""Corpus ingestion: read MultiWOZ 2.1, MultiWOZ 2.2 or turn-level Hugging Face datasets into `Turn` records,
cut them into dialogue-aligned splits, and write those splits as one `datasets.DatasetDict`.

Every reader yields dialogues (lists of turns, in corpus order) with schema slot names, so later stages never
see which format a corpus came from. Gold labels are optional everywhere.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from labelling import settings
from labelling.acts import ACT_ONLY_DOMAINS, Act, acts_from_actions, acts_from_gold
from labelling.bounded import NESTING, JsonMeter, TooBig, read_chunks, wide_encoding
from labelling.data import BUNDLED_CORPUS
from labelling.errors import CorpusError, LabellingError
from labelling.limits import MAX_DIALOGUE_TEXT_BYTES, MAX_UTTERANCE_BYTES
from labelling.outputs import check_output, staged
from labelling.schema import Schema, clean_slot_name
from labelling.states import UNSET_VALUES, SchemaNormalizer, State, clean_value, compute_delta, restrict
from labelling.turns import Turn

if TYPE_CHECKING:
    from datasets import Dataset, Features

log = logging.getLogger(__name__)
Dialogue = list[Turn]

# Act annotations also use these pseudo-domains; they belong to no service but carry real acts (bye, book, ...).
DEFAULT_SPLIT_SIZE = 50  # dialogues per split when a corpus is cut (ingest, run slices, bench)
_DIALOGUE_FILES = "dialogues_*.json"
_ACTS_FILE = "dialog_acts.json"
_HF_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")
_HF_REQUIRED = ("dialogue_id", "turn_id", "user_utterances", "system_utterances")
_SPLIT_NAME = re.compile(r"(\w+?)_(\d+)_(\d+)")
_HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+")
_SHAPE_21 = 'MultiWOZ 2.1 (ConvLab): {dialogue_id: {"goal": {...}, "log": [user, system, ...]}}'
_SHAPE_22 = 'MultiWOZ 2.2: a list of {"dialogue_id", "services", "turns": [{"speaker", "utterance", "frames"}]}'
_PROGRESS_MIN = 200  # dialogues; smaller corpora read too fast for a bar to help
_JSON_HINT = "expected a MultiWOZ JSON file"
_FOLDER_HINT = "expected dialogues_NNN.json files (MultiWOZ 2.2) or a datasets save_to_disk folder"


class CorpusFormat(str, Enum):
    """The corpus formats ``read_corpus`` understands."""

    multiwoz21 = "multiwoz21"
    multiwoz22 = "multiwoz22"
    hf = "hf"


FORMATS = tuple(f.value for f in CorpusFormat)


# --- public API -------------------------------------------------------------------------------------------


def read_corpus(source: str | Path, schema: Schema | None = None, format: str | None = None) -> list[Dialogue]:
    """Read ``source`` into dialogues of turns, in corpus order; ``format`` (see FORMATS) overrides detection."""
    if format is not None and format not in FORMATS:
        raise CorpusError(f"unknown corpus format {format!r}", f"expected one of: {', '.join(FORMATS)}")
    schema = schema or Schema.load()
    fmt = CorpusFormat(format).value if format else detect_format(source)
    reader = {"multiwoz21": _read_multiwoz21, "multiwoz22": _read_multiwoz22, "hf": _read_hf}[fmt]
    gold = _Gold(schema)
    dialogues = reader(source, gold)
    gold.report()
    if not dialogues:
        raise CorpusError(f"{source}: holds no dialogues", "expected at least one dialogue with a user turn")
    _check_unique_ids(dialogues, source)
    return dialogues


def detect_format(source: str | Path) -> str:
    """Guess the format of ``source`` from its folder contents or the first character of its JSON."""
    path = Path(source)
    if not path.exists():
        if _HUB_NAME.fullmatch(str(source)) and path.suffix.lower() not in (".json", ".zip"):
            return CorpusFormat.hf.value
        raise CorpusError(f"{source}: no such file or folder", "pass a MultiWOZ .json/.zip file, a folder, or a hub dataset name")
    if path.is_dir():
        return _detect_folder(path)
    if path.name == _ACTS_FILE:
        raise CorpusError(
            f"{path}: this is the MultiWOZ 2.2 acts file", "pass the folder that holds it and the dialogues_NNN.json files"
        )
    name, read = _json_reader(path)
    _check_utf8_head(name, read(4))
    head = _first_byte(read)
    if head == b"{":
        return CorpusFormat.multiwoz21.value
    if head == b"[":
        return CorpusFormat.multiwoz22.value
    _parse_json(name, read(-1))  # raises the decoder's error for text that is not JSON
    raise CorpusError(f"{name}: JSON of the wrong shape (neither an object nor a list)", f"expected {_SHAPE_21}, or {_SHAPE_22}")


def _first_byte(read: Callable[[int], bytes]) -> bytes:
    """The first byte of the JSON after a byte-order mark and whitespace, reading longer prefixes only while the ones
    read so far are all blank (100,000 spaces before ``{}`` are still an object)."""
    for n in (64, 1 << 16, 1 << 24, -1):
        prefix = read(n)
        head = prefix.lstrip(b"\xef\xbb\xbf").lstrip(b" \t\r\n")[:1]
        if head or n < 0 or len(prefix) < n:
            return head
    return b""


def cut_into_splits(
    dialogues: Sequence[Dialogue], size: int = DEFAULT_SPLIT_SIZE, prefix: str = "train"
) -> dict[str, list[Turn]]:
    """Cut dialogues, in order, into splits of ``size`` named ``{prefix}_{a}_{b}`` (half-open dialogue indices)."""
    if size < 1:
        raise LabellingError(f"split size must be at least 1, got {size}")
    if not re.fullmatch(r"\w+", prefix):
        raise LabellingError(f"split prefix {prefix!r} is not a valid split name", "use letters, digits and underscores")
    n = len(dialogues)
    return {f"{prefix}_{a}_{min(a + size, n)}": [t for d in dialogues[a : a + size] for t in d] for a in range(0, n, size)}


def first_dialogues(turns: Sequence[Turn], dialogues: int | None = None, per_dialogue: int | None = None) -> list[Turn]:
    """The turns of the first ``dialogues`` dialogues (all when None), in corpus order, each cut to its first
    ``per_dialogue`` turns (all when None): the one rule behind ``--limit-dialogues`` and the benchmarks' slices, so
    "the first N dialogues" names the same turns in every command."""
    order = list(dict.fromkeys(t.dialogue_id for t in turns))
    keep = set(order if dialogues is None else order[:dialogues])
    return [t for t in turns if t.dialogue_id in keep and (per_dialogue is None or t.turn_id < per_dialogue)]


def bundled_dialogues(schema: Schema) -> list[Dialogue]:
    """The bundled MultiWOZ 2.1 dev set read with ``schema``: read once per process and schema (a read takes seconds);
    each call gets new lists, and a caller copies a turn before changing it (``with_labels``, ``without_gold``)."""
    return [list(dialogue) for dialogue in _bundled(schema)]


def bundled_splits(schema: Schema) -> dict[str, list[Turn]]:
    """The bundled dev set cut as ``labelling ingest`` cuts a corpus (:data:`DEFAULT_SPLIT_SIZE` dialogues a split), so
    a split name means the same dialogues in the benchmarks, ``bench`` and an ingested copy; new lists each call."""
    return {name: list(turns) for name, turns in _bundled_splits(schema).items()}


@functools.lru_cache(maxsize=2)
def _bundled(schema: Schema) -> tuple[Dialogue, ...]:
    return tuple(read_corpus(BUNDLED_CORPUS, schema))


@functools.lru_cache(maxsize=2)
def _bundled_splits(schema: Schema) -> dict[str, list[Turn]]:
    return cut_into_splits(_bundled(schema), DEFAULT_SPLIT_SIZE)


def dataset_features(schema: Schema) -> Features:
    """The `datasets.Features` of a turn row, so empty lists and unset states still get their proper types."""
    from datasets import Features, List, Value

    state = {service: {slot: Value("string") for slot in slots} for service, slots in schema.informable().items()}
    text_list = List(Value("string"))
    return Features(
        {
            "dialogue_id": Value("string"),
            "turn_id": Value("int16"),  # the reference used int8; long dialogues in other corpora would overflow it
            "domains": text_list,
            "system_utterances": text_list,
            "user_utterances": text_list,
            "system_response": Value("string"),
            "slot_values": state,
            "last_slot_values": state,
            "turn_slot_values": state,
            "system_response_acts": text_list,
            "last_system_response_acts": text_list,
            "has_gold": Value("bool"),
            "has_gold_acts": Value("bool"),
        }
    )


def write_dataset(splits: Mapping[str, Sequence[Turn]], out_dir: str | Path, schema: Schema, overwrite: bool = False) -> Path:
    """Save ``splits`` as a DatasetDict at ``out_dir``; it is written beside it first and renamed, so it is never half-written."""
    import datasets

    out = Path(out_dir)
    check_output(out, overwrite)
    features = dataset_features(schema)
    data = datasets.DatasetDict({name: _split_dataset(turns, schema, features) for name, turns in splits.items()})
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one line per split on stderr is noise; saving takes well under a second
    try:
        with staged(out) as tmp:
            data.save_to_disk(str(tmp))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    return out


def _split_dataset(turns: Sequence[Turn], schema: Schema, features: Features) -> Dataset:
    """One split as a Dataset, built from an Arrow table with a given fingerprint.

    ``Dataset.from_list`` would encode every row in Python and hash the whole table for a cache fingerprint we never use,
    which is ten times slower on the dev set.
    """
    import datasets
    import pyarrow as pa

    table = pa.Table.from_pylist([t.to_row(schema) for t in turns], schema=features.arrow_schema)
    return datasets.Dataset(
        datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=features), fingerprint=uuid.uuid4().hex
    )


@dataclass(frozen=True)
class CorpusSummary:
    """Counts describing an ingested corpus; ``domains`` counts dialogues per gold domain."""

    dialogues: int
    turns: int
    splits: int
    domains: dict[str, int] = field(default_factory=dict)
    gold_state_turns: int = 0
    gold_acts_turns: int = 0


def summary(splits: Mapping[str, Sequence[Turn]]) -> CorpusSummary:
    """Count dialogues, turns, splits, dialogues per domain and turns with gold labels."""
    turns = [t for part in splits.values() for t in part]
    first_turns = {t.dialogue_id: t for t in turns if t.turn_id == 0}
    domains = Counter(d for t in first_turns.values() for d in t.domains)
    return CorpusSummary(
        dialogues=len({t.dialogue_id for t in turns}),
        turns=len(turns),
        splits=len(splits),
        domains=dict(domains.most_common()),
        gold_state_turns=sum(t.has_gold_state for t in turns),
        gold_acts_turns=sum(t.has_gold_acts for t in turns),
    )


# --- shared: gold labels and turn building -----------------------------------------------------------------


class _Gold:
    """Checks raw gold names against the full schema (unknown names are errors) and keeps the selected services."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.full = Schema.load(schema.source or None, services=None)
        # Gold goes through the normaliser that predictions go through, so a gold spelling ("night club", "free")
        # never differs from the schema's one a prediction is snapped to. A categorical value the schema lacks
        # (26 of the dev set's 7,365 turns carry one, e.g. attraction type "church") is dropped from gold as it
        # would be from a prediction: no label could ever match it.
        self.normalizer = SchemaNormalizer(self.full)
        self.lost: dict[str, list[str]] = {}  # why gold was missing -> where (reported once, after reading)

    def missing(self, why: str, where: str) -> None:
        """Note a turn or file whose gold labels the source lacks, so the loss is reported rather than silent."""
        self.lost.setdefault(why, []).append(where)

    def report(self) -> None:
        """One warning per reason gold labels were lost, with a count and the first place."""
        for why, places in self.lost.items():
            more = f" and {len(places) - 1} more" if len(places) > 1 else ""
            log.warning("%s: at %s%s; the turns concerned are not scored", why, places[0], more)

    def _service(self, raw: str, where: str) -> str:
        name = str(raw).strip().lower()
        if name not in self.full:
            raise CorpusError(f"{where}: unknown service {raw!r}", f"expected one of: {', '.join(self.full.names)}")
        return name

    def state(self, raw: Mapping, where: str) -> State:
        """service -> raw slot -> raw value, as schema names and clean values of the selected services only."""
        out: State = {}
        for raw_service, slots in _expect(raw, Mapping, where, "a state object").items():
            service = self._service(raw_service, where)
            if service not in self.schema:
                continue
            spec = self.full.service(service)
            for raw_slot, raw_value in _expect(slots, Mapping, f"{where}, service {service}", "an object of slots").items():
                value = clean_value(raw_value)
                if value in UNSET_VALUES:
                    continue  # an unset slot carries nothing, so an odd name there (2.1's train "ticket") is harmless
                slot = clean_slot_name(str(raw_slot), service)
                if spec.slot(slot) is None:
                    valid = ", ".join(s.name for s in spec.slots)
                    raise CorpusError(f"{where}: unknown slot {raw_slot!r} of service {service!r}", f"expected one of: {valid}")
                value = self.normalizer.value(service, slot, value)
                if value:
                    out.setdefault(service, {})[slot] = value
        return restrict(out, self.schema)

    def acts(self, dialog_act: object, where: str) -> list[Act]:
        """Typed acts from a MultiWOZ ``dialog_act`` dict, without the acts of unselected services."""
        kept = {}
        for key, rows in _expect(
            dialog_act, Mapping, where, 'a dialog_act object like {"Hotel-Inform": [["area", "east"]]}'
        ).items():
            domain = str(key).partition("-")[0].lower()
            if domain in ACT_ONLY_DOMAINS or self._service(domain, where) in self.schema:
                kept[key] = rows
        return acts_from_gold(kept, where)

    def domains(self, names: Iterable[str]) -> list[str]:
        """The selected services among ``names``, in schema order."""
        wanted = {str(n).strip().lower() for n in names}
        return [s for s in self.schema.names if s in wanted]


@dataclass
class _Exchange:
    """A user utterance, the system reply after it (None when the dialogue ends first), and their gold labels."""

    user: str
    system: str | None
    state: State | None
    acts: list[Act] | None


def _build_turns(dialogue_id: str, exchanges: Sequence[_Exchange], domains: list[str]) -> Dialogue:
    """Turn records for one dialogue: the system speaks first with "", and each turn sees the history up to itself."""
    turns: Dialogue = []
    users: list[str] = []
    systems = [""]
    last_state: State | None = {}
    last_acts: list[Act] | None = []
    for k, ex in enumerate(exchanges):
        users.append(ex.user)
        gold = ex.state is not None and last_state is not None  # a delta needs both ends
        turns.append(
            Turn(
                dialogue_id=dialogue_id,
                turn_id=k,
                user_utterances=list(users),
                system_utterances=list(systems),
                system_response=ex.system or "",
                domains=list(domains),
                slot_values=ex.state if gold else None,
                last_slot_values={s: dict(v) for s, v in last_state.items()} if gold else None,
                turn_slot_values=compute_delta(last_state, ex.state) if gold else None,
                system_response_acts=ex.acts,
                last_system_response_acts=list(last_acts) if ex.acts is not None and last_acts is not None else None,
            )
        )
        systems.append(ex.system or "")
        last_state, last_acts = ex.state, ex.acts
    _check_dialogue_text(dialogue_id, turns)
    return turns


def _dialogue_id(raw: object) -> str:
    """The reference keeps MultiWOZ's ``.json`` suffix (``MUL1600.json``); ConvLab drops it, so add it back."""
    text = str(raw)
    return text if text.endswith(".json") else f"{text}.json"


def _check_unique_ids(dialogues: Sequence[Dialogue], source: str | Path) -> None:
    seen: set[str] = set()
    for dialogue in dialogues:
        did = dialogue[0].dialogue_id
        if did in seen:
            raise CorpusError(f"{source}: dialogue {did} appears more than once", "expected unique dialogue ids")
        seen.add(did)


def _expect(value: object, kind: type, where: str, what: str):
    """``value`` if it is a ``kind``; otherwise a CorpusError saying what was expected there."""
    if not isinstance(value, kind):
        raise CorpusError(f"{where}: found {type(value).__name__}", f"expected {what}")
    return value


def _progress(items: Iterable, total: int, desc: str) -> Iterable:
    """A progress bar on stderr for large inputs; tqdm switches itself off when stderr is not a terminal."""
    return tqdm(
        items, total=total, desc=desc, unit="dlg", leave=False, file=sys.stderr, disable=None if total >= _PROGRESS_MIN else True
    )


# --- reading JSON from files and zips ----------------------------------------------------------------------


def _require(path: Path) -> Path:
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder", "check the path")
    return path


def _json_reader(path: Path) -> tuple[str, Callable[[int], bytes]]:
    """A display name and a ``read(n)`` for the JSON in ``path``: the file itself, or the single JSON member of a zip."""
    if path.is_dir():
        raise CorpusError(f"{path}: is a folder", "expected a .json or .zip file for this format")
    _require(path)
    if not path.is_file():
        raise CorpusError(f"{path}: is not a regular file (a device, a pipe or a socket)", "expected a .json or .zip file")
    zipped = path.suffix.lower() == ".zip" or _read_file(path, 2) == b"PK"
    if not zipped:
        _check_size(str(path), path.stat().st_size)
        return str(path), lambda n: _read_file(path, n)
    member = _zip_member(path)
    return f"{path}:{member}", lambda n: _read_zip(path, member, n)


_SPLIT_IT = "split the corpus into several files (a MultiWOZ 2.2 folder of dialogues_NNN.json), or ingest it in parts"


def _check_size(name: str, size: int, verb: str = "is") -> None:
    limit = settings.MAX_CORPUS_BYTES.get()
    if size > limit:
        raise CorpusError(
            f"{name}: {verb} {size:,} bytes, over the limit of {limit:,} bytes per corpus file",
            f"{_SPLIT_IT}; or raise {settings.MAX_CORPUS_BYTES.name}",
        )


def _meter() -> JsonMeter:
    return JsonMeter(settings.MAX_JSON_ELEMENTS.get(), settings.MAX_NESTING.get())


def _too_big(name: str, error: TooBig) -> CorpusError:
    """A corpus past the element or nesting bound, refused before it is parsed, naming the setting that raises it."""
    if error.bound == NESTING:
        return CorpusError(f"{name}: {error}, the limit", f"{_SPLIT_IT}; or raise {settings.MAX_NESTING.name}")
    return CorpusError(
        f"{name}: {error}, the limit per corpus file (parsing needs up to 80 bytes of memory for each)",
        f"{_SPLIT_IT}; or, if it is genuine, raise {settings.MAX_JSON_ELEMENTS.name}",
    )


def _read_all(name: str, read: Callable[[int], bytes], verb: str) -> bytearray:
    """Every byte ``read`` yields, in chunks each measured as JSON: past a byte, element or nesting bound it stops there."""
    try:
        data = read_chunks(read, settings.MAX_CORPUS_BYTES.get(), _meter())
    except TooBig as e:
        raise _too_big(name, e) from None
    _check_size(name, len(data), verb)
    return data


def _check_utf8_head(name: str, head: bytes) -> None:
    """A UTF-16 or UTF-32 file (json would read it, then find the wrong shape) is refused as not being UTF-8."""
    wide = wide_encoding(head)
    if wide is not None:
        raise CorpusError(f"{name}: not UTF-8 text (it starts with a {wide} byte-order mark)", "save it as UTF-8")


def _read_file(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of ``path`` (all of it for ``n < 0``, measured as it is read), never more than the limits."""
    try:
        with open(path, "rb") as f:
            if n < 0:
                return _read_all(str(path), f.read, "is")
            data = f.read(min(n, settings.MAX_CORPUS_BYTES.get() + 1))
    except OSError as e:  # unreadable: permissions, a folder named like a file, an I/O error
        raise CorpusError(f"{path}: cannot be read ({e.strerror or e})", "check the file's permissions") from e
    _check_size(str(path), len(data))  # a file that grew after it was measured
    return data


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _corrupt_zip(path, e) from e


def _zip_member(path: Path) -> str:
    with _open_zip(path) as z:
        members = [i for i in z.infolist() if i.filename.endswith(".json") and not i.filename.startswith("__MACOSX/")]
    if len(members) != 1:
        raise CorpusError(f"{path}: holds {len(members)} JSON files", "expected a zip with exactly one JSON file (e.g. val.json)")
    # The expanded size the zip declares bounds what its member can yield (zipfile stops there): a bomb is refused unread.
    _check_size(f"{path}:{members[0].filename}", members[0].file_size, "expands to")
    return members[0].filename


def _read_zip(path: Path, member: str, n: int) -> bytes:
    """The first ``n`` bytes of the member (all of it for ``n < 0``, measured as JSON as it is decompressed), in chunks
    and never past the limits."""
    try:
        with _open_zip(path) as z, z.open(member) as f:
            if n < 0:
                return _read_all(f"{path}:{member}", f.read, "expands to")
            data = f.read(min(n, settings.MAX_CORPUS_BYTES.get() + 1))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise _corrupt_zip(path, e) from e
    _check_size(f"{path}:{member}", len(data), "expands to")
    return data


def _corrupt_zip(path: Path, cause: Exception) -> CorpusError:
    return CorpusError(f"{path}: truncated or corrupt zip ({cause})", "expected a complete .zip holding one MultiWOZ JSON file")


def _parse_json(name: str, raw: bytes) -> object:
    """``raw`` (already measured as it was read) parsed as UTF-8 JSON; every way it can fail is a one-line CorpusError."""
    _check_utf8_head(name, raw[:4])
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise CorpusError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})", _JSON_HINT) from e
    except json.JSONDecodeError as e:
        raise CorpusError(f"{name}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", _JSON_HINT) from e
    except RecursionError as e:
        raise CorpusError(f"{name}: JSON nested too deeply to read", _JSON_HINT) from e


def _load_json(path: Path) -> tuple[str, object]:
    name, read = _json_reader(path)
    return name, _parse_json(name, read(-1))


# --- MultiWOZ 2.1 (ConvLab layout) -------------------------------------------------------------------------


def _read_multiwoz21(source: str | Path, gold: _Gold) -> list[Dialogue]:
    """``{dialogue_id: {"goal", "log"}}``; ``log[2k]`` is user turn k and ``log[2k+1]`` the system reply holding its state."""
    name, data = _load_json(Path(source))
    data = _expect(data, dict, name, _SHAPE_21)
    dialogues = []
    for raw_id, entry in _progress(data.items(), len(data), "reading dialogues"):
        where = f"{name}: dialogue {raw_id}"
        log = _expect(entry, dict, where, _SHAPE_21).get("log")
        if not _expect(log, list, f"{where}, log", "a list of user and system entries"):
            raise CorpusError(f"{where}: has no turns", "expected a log with at least one user entry")
        _check_turn_count(where, (len(log) + 1) // 2)
        exchanges = [_exchange21(log, i, where, gold) for i in range(0, len(log), 2)]
        goal = entry.get("goal") if isinstance(entry.get("goal"), dict) else {}
        dialogues.append(_build_turns(_dialogue_id(raw_id), exchanges, gold.domains(k for k, v in goal.items() if v)))
    return dialogues


def _exchange21(log: list, i: int, dialogue: str, gold: _Gold) -> _Exchange:
    """User entry ``log[i]`` and the system entry after it, whose metadata is the state after the user spoke."""
    user = _log_entry(log[i], f"{dialogue}, log entry {i}")
    if i + 1 == len(log):
        gold.missing("a log of odd length ends with a user entry and no system reply (no gold state or acts)", dialogue)
        return _Exchange(user["text"], None, None, None)
    where = f"{dialogue}, log entry {i + 1}"
    system = _log_entry(log[i + 1], where)
    if not system.get("metadata"):
        gold.missing("a system entry has null or empty metadata (no gold state)", where)
    state = gold.state(_state21(system["metadata"], where), where) if system.get("metadata") else None
    acts = gold.acts(system["dialog_act"], where) if "dialog_act" in system else None
    return _Exchange(user["text"], system["text"], state, acts)


def _log_entry(entry: object, where: str) -> dict:
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
        raise CorpusError(f"{where}: log entry is not an object with a 'text' string", f"expected {_SHAPE_21}")
    _check_text(entry["text"], where)
    return entry


def _check_text(text: str, where: str) -> None:
    """Refuse an utterance holding a lone surrogate (a JSON ``\\ud83d`` without its pair): no dataset or store can save
    it; or one longer than :data:`MAX_UTTERANCE_BYTES` in UTF-8."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise CorpusError(
            f"{where}: utterance is not valid Unicode (lone surrogate {text[e.start]!r} at character {e.start})",
            "fix the text in the source; JSON escapes like \\ud83d must come in pairs",
        ) from None
    if size > MAX_UTTERANCE_BYTES:
        raise CorpusError(
            f"{where}: utterance of {size:,} bytes, over the limit of {MAX_UTTERANCE_BYTES:,} bytes (1 MiB)",
            "shorten it or leave the dialogue out: every stored turn repeats it and must fit MongoDB's 16 MB document",
        )


def _check_turn_count(where: str, user_turns: int) -> None:
    """Refuse a dialogue of more user turns than LABELLING_MAX_DIALOGUE_TURNS, before its turns are built: each turn
    repeats the dialogue so far, so memory and storage grow with the square of its length (10,000 turns: gigabytes)."""
    limit = settings.MAX_DIALOGUE_TURNS.get()
    if user_turns > limit:
        raise CorpusError(
            f"{where}: has {user_turns:,} user turns, over the limit of {limit:,} per dialogue",
            "each stored turn repeats the dialogue so far, so its cost grows with the square of its turns; split it, "
            f"or raise {settings.MAX_DIALOGUE_TURNS.name}",
        )


def _check_dialogue_text(dialogue_id: str, turns: Sequence[Turn]) -> None:
    """A dialogue's last turn holds all of its utterances: refuse one past :data:`MAX_DIALOGUE_TEXT_BYTES` together."""
    if not turns:
        return
    last = turns[-1]
    texts = [*last.user_utterances, *last.system_utterances, last.system_response]
    size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    if size > MAX_DIALOGUE_TEXT_BYTES:
        raise CorpusError(
            f"dialogue {dialogue_id}: its utterances add up to {size:,} bytes, over the limit of "
            f"{MAX_DIALOGUE_TEXT_BYTES:,} bytes (8 MiB) per dialogue",
            "shorten it or leave it out: its last stored turn repeats them all and must fit MongoDB's 16 MB document",
        )


def _state21(metadata: object, where: str) -> dict:
    """Merge each domain's ``semi`` and ``book`` parts; book slots get a ``book`` prefix, and ``booked`` is not state."""
    merged = {}
    for domain, parts in _expect(metadata, dict, f"{where}, metadata", "an object of domains").items():
        parts = _expect(parts, dict, f"{where}, metadata.{domain}", 'an object with "semi" and "book"')
        book = _expect(parts.get("book") or {}, dict, f"{where}, metadata.{domain}.book", "an object of slots")
        merged[domain] = {**(parts.get("semi") or {}), **{f"book{k}": v for k, v in book.items() if k != "booked"}}
    return merged


# --- MultiWOZ 2.2 (official layout) ------------------------------------------------------------------------


def _read_multiwoz22(source: str | Path, gold: _Gold) -> list[Dialogue]:
    """A folder of ``dialogues_NNN.json`` (or one such file), with gold acts from a nearby ``dialog_acts.json`` if present."""
    path = _require(Path(source))
    files = sorted(path.glob(_DIALOGUE_FILES)) if path.is_dir() else [path]
    if not files:
        raise CorpusError(
            f"{path}: no dialogues_NNN.json files in this folder", "expected a MultiWOZ 2.2 split folder (train, dev or test)"
        )
    acts_file = _acts_file(path)
    if acts_file is None:
        gold.missing(f"no {_ACTS_FILE} in the folder or beside it (no gold acts)", str(path))
    all_acts = _expect(_load_json(acts_file)[1], dict, str(acts_file), "{dialogue_id: {turn_index: {...}}}") if acts_file else {}
    dialogues = []
    for file in files:
        name, data = _load_json(file)
        entries = _expect(data, list, name, _SHAPE_22)
        for entry in _progress(entries, len(entries), f"reading {file.name}"):
            dialogues.append(_dialogue22(entry, name, all_acts, gold))
    return dialogues


def _acts_file(path: Path) -> Path | None:
    """The official layout keeps ``dialog_acts.json`` beside the split folders, so look in the folder and its parent."""
    folder = path if path.is_dir() else path.parent
    return next((f for f in (folder / _ACTS_FILE, folder.parent / _ACTS_FILE) if f.is_file()), None)


def _dialogue22(entry: object, name: str, all_acts: dict, gold: _Gold) -> Dialogue:
    entry = _expect(entry, dict, f"{name}: dialogue", _SHAPE_22)
    raw_id = entry.get("dialogue_id")
    where = f"{name}: dialogue {raw_id}"
    turns = _expect(entry.get("turns"), list, f"{where}, turns", "a list of USER and SYSTEM turns")
    if not turns or raw_id is None:
        raise CorpusError(
            f"{where}: has no turns" if raw_id else f"{name}: a dialogue has no dialogue_id", f"expected {_SHAPE_22}"
        )
    _check_turn_count(where, (len(turns) + 1) // 2)
    for i, turn in enumerate(turns):
        expected = ("USER", "SYSTEM")[i % 2]
        speaker = str(turn.get("speaker", "")).upper() if isinstance(turn, dict) else None
        if speaker != expected or not isinstance(turn.get("utterance"), str):
            raise CorpusError(
                f"{where}, turn {i}: not a {expected} turn with an utterance (speaker {speaker!r})",
                "expected turns alternating USER and SYSTEM, starting with USER",
            )
        _check_text(turn["utterance"], f"{where}, turn {i}")
    acts = _acts22(entry, all_acts.get(raw_id, all_acts.get(str(raw_id).removesuffix(".json"))), gold, where)
    exchanges = [
        _Exchange(
            user=turns[i]["utterance"],
            system=turns[i + 1]["utterance"] if i + 1 < len(turns) else None,
            state=_state22(turns[i], gold, f"{where}, turn {i}"),
            acts=acts(i + 1) if i + 1 < len(turns) else None,
        )
        for i in range(0, len(turns), 2)
    ]
    return _build_turns(_dialogue_id(raw_id), exchanges, gold.domains(entry.get("services") or []))


def _state22(turn: dict, gold: _Gold, where: str) -> State | None:
    """The user turn's frames hold ``state.slot_values`` (``{"hotel-area": ["east"]}``); the first value is the gold one."""
    frames = [
        f
        for f in _expect(turn.get("frames") or [], list, f"{where}, frames", "a list of frames")
        if isinstance(f, dict) and "state" in f
    ]
    if not frames:
        return None
    raw: dict = {}
    for frame in frames:
        values = _expect(frame["state"], dict, f"{where}, state", "an object with slot_values").get("slot_values") or {}
        slots = raw.setdefault(frame.get("service", ""), {})  # created even when empty, so every service name gets checked
        for slot, value in _expect(values, dict, f"{where}, slot_values", "an object of slot: [values]").items():
            slots[slot] = (value[0] if value else "") if isinstance(value, list) else value
    return gold.state(raw, where)


def _acts22(entry: dict, table: object, gold: _Gold, where: str) -> Callable[[int], list[Act] | None]:
    """Gold acts per turn index: from ``dialog_acts.json`` when it covers the dialogue, else from frame ``actions`` if any."""
    if table is not None:
        table = _expect(table, dict, f"{_ACTS_FILE}: dialogue {entry.get('dialogue_id')}", '{turn_index: {"dialog_act": {...}}}')
        return lambda i: gold.acts((table.get(str(i)) or {}).get("dialog_act") or {}, f"{where}, turn {i}")
    turns = entry["turns"]
    if not any(f.get("actions") for t in turns for f in t.get("frames") or [] if isinstance(f, dict)):
        return lambda i: None
    return lambda i: [
        act
        for frame in turns[i].get("frames") or []
        if isinstance(frame, dict) and str(frame.get("service", "")).lower() in gold.schema
        for act in acts_from_actions(frame.get("actions") or [], frame["service"].lower(), f"{where}, turn {i}")
    ]


# --- turn-level Hugging Face datasets ----------------------------------------------------------------------


def _read_hf(source: str | Path, gold: _Gold) -> list[Dialogue]:
    """Rows in the reference's format (a ``save_to_disk`` folder or a hub name), grouped back into dialogues."""
    by_id: dict[str, list[Turn]] = {}
    for split, table in _hf_splits(source):
        missing = [c for c in _HF_REQUIRED if c not in table.column_names]
        if missing:
            raise CorpusError(
                f"{source}: split {split} lacks columns {missing}", f"expected turn rows with {', '.join(_HF_REQUIRED)}"
            )
        for i, row in enumerate(_progress(table, len(table), f"reading {split}")):
            where = f"{source}: split {split}, row {i}"
            turn = _turn_from_row(row, where, gold)
            by_id.setdefault(turn.dialogue_id, []).append(turn)
    for dialogue_id, turns in by_id.items():
        _check_turn_count(f"{source}: dialogue {dialogue_id}", len(turns))
    dialogues = [_ordered_turns(turns, source) for turns in by_id.values()]
    for dialogue in dialogues:
        _check_dialogue_text(dialogue[0].dialogue_id, dialogue)
    return dialogues


def _hf_splits(source: str | Path) -> list[tuple[str, Dataset]]:
    """(split name, Dataset) pairs; ``{prefix}_{a}_{b}`` splits are put back in corpus order (stores sort them as text)."""
    import datasets

    path = Path(source)
    try:
        loaded = datasets.load_from_disk(str(path)) if path.exists() else datasets.load_dataset(str(source))
    except Exception as e:  # datasets raises many unrelated types for a bad folder or an unreachable hub
        where = "not a readable save_to_disk folder" if path.exists() else "could not be loaded from the Hugging Face hub"
        raise CorpusError(
            f"{source}: {where} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            "expected a datasets save_to_disk folder or a reachable hub dataset of turn rows",
        ) from e
    if isinstance(loaded, datasets.Dataset):
        return [("(dataset)", loaded)]
    names = list(loaded)
    parsed = [_SPLIT_NAME.fullmatch(n) for n in names]
    if all(parsed) and len({m[1] for m in parsed}) == 1:
        names.sort(key=lambda n: int(_SPLIT_NAME.fullmatch(n)[2]))
    return [(n, loaded[n]) for n in names]


def _turn_from_row(row: dict, where: str, gold: _Gold) -> Turn:
    try:
        turn = Turn.from_row(row)
    except (KeyError, TypeError, ValueError, SyntaxError) as e:
        raise CorpusError(
            f"{where}: malformed turn row ({type(e).__name__}: {e})", "expected the reference's turn-row format"
        ) from e
    for text in (*turn.user_utterances, *turn.system_utterances, turn.system_response):
        _check_text(text, where)
    domains = gold.domains(turn.domains)
    if not turn.has_gold_state:
        return replace(turn, domains=domains)
    last, now = gold.state(turn.last_slot_values, where), gold.state(turn.slot_values, where)
    return replace(turn, domains=domains, last_slot_values=last, slot_values=now, turn_slot_values=compute_delta(last, now))


def _ordered_turns(turns: list[Turn], source: str | Path) -> Dialogue:
    turns.sort(key=lambda t: t.turn_id)
    if [t.turn_id for t in turns] != list(range(len(turns))):
        ids = [t.turn_id for t in turns]
        raise CorpusError(
            f"{source}: dialogue {turns[0].dialogue_id} has turn ids {ids}", "expected 0, 1, 2, ... without gaps or repeats"
        )
    return turns


# --- folders and the output --------------------------------------------------------------------------------


def _detect_folder(path: Path) -> str:
    names = {p.name for p in path.iterdir()}
    if names & set(_HF_MARKERS):
        return CorpusFormat.hf.value
    if any(path.glob(_DIALOGUE_FILES)):
        return CorpusFormat.multiwoz22.value
    if not names:
        raise CorpusError(f"{path}: folder is empty", _FOLDER_HINT)
    splits = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob(_DIALOGUE_FILES)))
    root_hint = f"this looks like the MultiWOZ 2.2 root; pass one of its split folders: {', '.join(splits)}"
    raise CorpusError(f"{path}: no corpus found in this folder", root_hint if splits else _FOLDER_HINT)
