"""The bounds on what a command reads and is asked to do, in one place (the README's Configuration and Reliability
sections list them): input past one of them is refused in one line naming the limit, before anything is written.
The input bounds a genuine corpus might pass can be raised by the settings named beside them (labelling/settings.py).

:func:`file_problem` is the one check of an input file against them (missing, not a regular file, too big), so the
schema reader, the job config and the preflight refuse a bad file in the same words."""

from __future__ import annotations

import stat
from pathlib import Path

MAX_SCHEMA_BYTES = 8 << 20  # a schema file (the bundled one is 18 KB), and a job config file
MAX_CONFIG_BYTES = MAX_SCHEMA_BYTES
# A corpus JSON file, or a zip member expanded: MultiWOZ 2.1 in full is about 280 MB (LABELLING_MAX_CORPUS_BYTES).
MAX_CORPUS_BYTES = 512 << 20
# Values and keys in one corpus JSON file, counted before it is parsed, which costs up to about 80 bytes of memory for
# each (LABELLING_MAX_JSON_ELEMENTS): the bundled dev set holds 1.4 million, MultiWOZ 2.1 in full about ten times that.
MAX_JSON_ELEMENTS = 20_000_000
MAX_NESTING = 100  # levels of JSON or YAML nesting in any file read (the dev set nests 9 deep): LABELLING_MAX_NESTING
# User turns in one dialogue (the dev set's longest has 17; LABELLING_MAX_DIALOGUE_TURNS): every stored turn repeats the
# dialogue so far, so what a dialogue costs grows with the square of its turns.
MAX_DIALOGUE_TURNS = 100
MAX_YAML_NODES = 100_000  # a YAML job config's nodes with every alias written out (LABELLING_MAX_YAML_NODES)
MAX_UTTERANCE_BYTES = 1 << 20  # one utterance, in UTF-8
# A stored turn repeats its dialogue's utterances so far; with gold and the room a label needs it must fit MongoDB's
# 16 MiB document limit, so a dialogue's utterances together are kept to half of it.
MAX_DIALOGUE_TEXT_BYTES = 8 << 20
MAX_REPORT_BYTES = 256 << 20  # a quality report read back by `quality --pool-from`
MAX_DIALOGUES = 10_000_000  # --limit-dialogues
MAX_SPLIT_SIZE = 100_000  # --split-size: dialogues per split
MAX_TURNS = 10_000_000  # --limit / --limit-turns
MAX_THREADS = 1024  # --threads, --concurrency

MISSING = "no such file"  # what file_problem says of a path with nothing there (some callers allow that)


def file_problem(path: str | Path, max_bytes: int) -> str | None:
    """What is wrong with ``path`` as an input file (missing, not a regular file, larger than ``max_bytes``), or None."""
    target = Path(path).expanduser()
    try:
        info = target.stat()
    except FileNotFoundError:
        return MISSING
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if not stat.S_ISREG(info.st_mode):
        return "is a folder, not a file" if stat.S_ISDIR(info.st_mode) else "is not a regular file (a device, a pipe or a socket)"
    if info.st_size > max_bytes:
        return f"is {info.st_size:,} bytes, over the limit of {max_bytes:,}"
    return None
