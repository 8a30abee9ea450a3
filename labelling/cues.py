"""Cue words: the per-schema data file that tells the rule labeller how people say slot values and acts.

One JSON file per schema (``labelling/data/multiwoz_cues.json`` for MultiWOZ). Its keys:

- ``services``: words naming each service ("guesthouse" -> hotel);
- ``synonyms``: other spellings of slot values, per service (``"*"``: any) and slot ("center" -> centre);
- ``flags``: yes/no slots and the words that raise them ("wifi" -> internet); a negation before one says "no";
- ``counts``: the nouns after a number that name a count slot ("3 nights" -> book stay);
- ``time_roles`` / ``place_roles``: the words before a time or a place that say which slot it fills;
- ``dontcare``, ``any_words``, ``slot_words``, ``negation``: "don't care" phrases, and the words around them;
- ``number_words``, ``day_words``, ``time_words``: spelled-out numbers, day abbreviations, named times;
- ``day_slots``, ``time_slots``, ``place_slots``: which slot of each service a day, time or place fills;
- ``acts``, ``request_slots``, ``inform_patterns``, ``inform_services``: the act tagger's phrases and patterns.

Nothing in it comes from gold labels; a user's own schema brings its own file (config key ``rules.cues``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labelling.errors import LabellingError

MAX_CUES_BYTES = 4 << 20
REQUIRED_KEYS = ("services", "synonyms", "flags", "counts", "time_roles", "place_roles", "dontcare", "negation", "acts")


class CuesError(LabellingError):
    """A cue file that cannot be used."""


@dataclass(frozen=True)
class Cues:
    """A cue file's contents (see the module docstring for each key); ``path`` says where it came from."""

    data: Mapping
    path: str

    def get(self, key: str, default: object = None):
        """One key of the file; the optional keys default to empty."""
        return self.data.get(key, {} if default is None else default)


def load_cues(path: str | Path) -> Cues:
    """Read and check a cue file; a missing key or a wrong shape is a CuesError naming it."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CUES_BYTES + 1)
        if len(raw) > MAX_CUES_BYTES:
            raise CuesError(f"{path} is over {MAX_CUES_BYTES:,} bytes", "give a smaller cue file")
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as error:
        raise CuesError(
            f"cannot read the cue file {path}: {error}", "give a JSON file shaped as labelling/cues.py says"
        ) from error
    if not isinstance(data, Mapping):
        raise CuesError(f"{path} is not a JSON object", "give a JSON file shaped as labelling/cues.py says")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CuesError(f"{path} lacks {', '.join(missing)}", "every cue file needs " + ", ".join(REQUIRED_KEYS))
    return Cues(data, str(path))
