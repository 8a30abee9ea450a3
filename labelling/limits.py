"""The bounds on what a command reads and is asked to do, in one place (the README's Configuration section lists
them): input past one of them is refused in one line naming the limit, before anything is written."""

from __future__ import annotations

MAX_SCHEMA_BYTES = 8 << 20  # a schema file (the bundled one is 18 KB)
MAX_CORPUS_BYTES = 512 << 20  # a corpus JSON file, or a zip member expanded: MultiWOZ 2.1 in full is about 280 MB
MAX_UTTERANCE_BYTES = 1 << 20  # one utterance, in UTF-8
# A stored turn repeats its dialogue's utterances so far; with gold and the room a label needs it must fit MongoDB's
# 16 MiB document limit, so a dialogue's utterances together are kept to half of it.
MAX_DIALOGUE_TEXT_BYTES = 8 << 20
MAX_DIALOGUES = 10_000_000  # --limit-dialogues
MAX_SPLIT_SIZE = 100_000  # --split-size: dialogues per split
MAX_TURNS = 10_000_000  # --limit / --limit-turns
MAX_THREADS = 1024  # --threads, --concurrency
