"""Seed examples: labelled dialogues put into the example pool before anything is labelled.

A lab that has labelled a few dialogues by hand wants them used: retrieved as in-context examples from the first turn
on, never labelled again and never scored as predictions. This module reads such a corpus (any format ``labelling
ingest`` reads: MultiWOZ 2.1 / 2.2, a turn-level Hugging Face dataset with gold, or an earlier ``labelling export``),
checks it, and turns it into an :class:`ExamplePool`. The same pool carries labels the tool made itself
(``labelling quality --pool-from``, :func:`labels_pool`), so every path that seeds a pool goes through here, with the
provenance of each example: ``given`` (a person's labels) or ``self-labelled`` (a model's).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from labelling.errors import CorpusError, LabellingError
from labelling.turns import GOLD_FIELDS, Turn

if TYPE_CHECKING:
    from labelling.records import TurnLabel
    from labelling.schema import Schema

GIVEN, SELF_LABELLED = "given", "self-labelled"
PROVENANCES = (GIVEN, SELF_LABELLED)
EXPORT_PROVENANCE_COLUMN = "label_provenance"  # what `labelling export` writes; an older export's rows are self-labelled
EXPORT_MARKER_COLUMN = "labelled_split"  # every `labelling export` row has it, and no ingested corpus does
_SHOWN = 3  # dialogue ids named in a message


@dataclass(frozen=True)
class ExamplePool:
    """Labelled turns as the example indexes take them (the labels in the label fields), with each one's provenance.

    ``skipped`` names the dialogues left out because the corpus being labelled holds them too.
    """

    examples: list[Turn]
    provenance: list[str]
    source: str
    skipped: list[str] = field(default_factory=list)

    @property
    def dialogues(self) -> int:
        """How many dialogues the pool holds."""
        return len({t.dialogue_id for t in self.examples})

    @property
    def note(self) -> str:
        """One line for the terminal and a report's setup."""
        kinds = ", ".join(f"{n} {kind}" for kind in PROVENANCES if (n := self.provenance.count(kind)))
        return f"{self.dialogues} dialogues, {len(self.examples)} turns ({kinds}) from {self.source}"

    def digest(self) -> str:
        """A short fingerprint of the examples' text and labels: a resumed run checks it still has the same ones."""
        rows = [
            [t.dialogue_id, t.turn_id, t.user_utterance, t.slot_values, [str(a) for a in t.system_response_acts or []], p]
            for t, p in zip(self.examples, self.provenance, strict=True)
        ]
        return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def as_example(turn: Turn) -> Turn:
    """A turn with gold as a retrievable example: its text with the gold labels in the label fields (nothing else)."""
    return turn.with_labels(domains=list(turn.domains), **{name: getattr(turn, name) for name in GOLD_FIELDS})


def gold_pool(turns: Sequence[Turn], dialogues: int | None, source: str) -> ExamplePool:
    """The first ``dialogues`` dialogues of ``turns`` (all when None) with their gold labels, as a ``given`` pool.
    ``labelling quality``'s learning curve seeds its pools with this."""
    keep = set(list(dict.fromkeys(t.dialogue_id for t in turns))[:dialogues]) if dialogues is not None else None
    chosen = [as_example(t) for t in turns if keep is None or t.dialogue_id in keep]
    return ExamplePool(chosen, [GIVEN] * len(chosen), source)


def labels_pool(turns: Sequence[Turn], labels: Sequence[TurnLabel], source: str) -> ExamplePool:
    """Self-labels as a pool, in the labels' order (as a dependent partition's pool holds its seed's labels); every
    label must belong to one of ``turns``."""
    from labelling.records import labelled_examples

    by_key = {t.key: t for t in turns}
    missing = [f"{lab.dialogue_id}#{lab.turn_id}" for lab in labels if lab.key not in by_key]
    if missing:
        raise CorpusError(f"{len(missing)} pool labels name turns not in {source}: {', '.join(missing[:_SHOWN])}")
    examples = labelled_examples([by_key[lab.key] for lab in labels], {lab.key: lab for lab in labels})
    return ExamplePool(examples, [SELF_LABELLED] * len(examples), source)


def read_examples(source: str | Path, schema: Schema, dialogues: int | None = None, exclude: Collection[str] = ()) -> ExamplePool:
    """The labelled dialogues of ``source`` as a pool: the first ``dialogues`` of them (all when None) that are not in
    ``exclude`` (the dialogues about to be labelled: a label must never be scored against itself).

    CorpusError, naming the fix, for a source that cannot be read, holds no dialogue, has turns without gold state or
    acts, or labels none of the schema's services; the reader's own checks (an unknown service or slot) hold too.
    """
    from labelling.corpus import read_corpus

    name = str(source)
    export = _export_provenance(Path(source)) if Path(source).is_dir() else None
    # An export holds every row in `train` and again in its held-out splits: only `train` is read.
    try:
        read = read_corpus(Path(source) / "train" if export is not None else source, schema)
    except LabellingError as e:  # the reader names the file and the problem; the option is named here
        raise CorpusError(f"--examples: {e.message}", e.hint) from e
    _check_gold(name, [t for d in read for t in d])
    skipped = [d[0].dialogue_id for d in read if d[0].dialogue_id in exclude]
    kept = [d for d in read if d[0].dialogue_id not in exclude][:dialogues]
    if not kept:
        raise CorpusError(
            f"--examples {name}: every example dialogue is also in the corpus being labelled ({_ids(skipped)})",
            "pass examples from another corpus or split: a label must never be scored against itself",
        )
    turns = [t for d in kept for t in d]
    if not any(t.slot_values or t.system_response_acts for t in turns):
        raise CorpusError(
            f"--examples {name}: no turn has a state or an act in the services this job labels ({', '.join(schema.names)})",
            "pass examples labelled in this schema's services, or set the job's services to theirs",
        )
    provenance = [export.get(t.key, SELF_LABELLED) for t in turns] if export is not None else [GIVEN] * len(turns)
    return ExamplePool([as_example(t) for t in turns], provenance, name, skipped)


def skipped_line(pool: ExamplePool) -> str | None:
    """The one line saying which example dialogues were skipped because the corpus being labelled holds them."""
    if not pool.skipped:
        return None
    return (
        f"examples: skipped {len(pool.skipped)} dialogues the corpus being labelled also holds ({_ids(pool.skipped)}): "
        "they are labelled, not used as examples"
    )


def _ids(ids: Sequence[str]) -> str:
    return ", ".join(ids[:_SHOWN]) + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


def _check_gold(name: str, turns: Sequence[Turn]) -> None:
    for what, has in (("state", Turn.has_gold_state), ("acts", Turn.has_gold_acts)):
        lacking = [t for t in turns if not has.fget(t)]
        if lacking:
            where = f"{lacking[0].dialogue_id} turn {lacking[0].turn_id}"
            raise CorpusError(
                f"--examples {name}: {len(lacking)} of {len(turns)} turns have no gold {what} (first: {where})",
                "examples must be labelled: pass MultiWOZ with states and acts, a turn dataset with gold, or a labelling export",
            )


def _export_provenance(folder: Path) -> Mapping[tuple[str, int], str] | None:
    """(dialogue, turn) -> provenance of a ``labelling export`` folder's ``train`` rows (``self-labelled`` for an export
    from before the column existed); None for any other folder."""
    import datasets

    try:
        data = datasets.load_from_disk(str(folder))
    except Exception:  # the corpus reader accepted it already; a folder datasets cannot load is no export
        return None
    table = data["train"] if isinstance(data, datasets.DatasetDict) and "train" in data else None
    if table is None or EXPORT_MARKER_COLUMN not in table.column_names:
        return None
    kinds = table[EXPORT_PROVENANCE_COLUMN] if EXPORT_PROVENANCE_COLUMN in table.column_names else None
    keys = zip(table["dialogue_id"], table["turn_id"], strict=True)
    return {(d, int(t)): (kinds[i] if kinds else SELF_LABELLED) for i, (d, t) in enumerate(keys)}
