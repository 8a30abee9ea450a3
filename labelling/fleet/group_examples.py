"""A group's seed examples: read once when the group is created, checked against the corpus it labels, stored in the
store beside its partitions (``store.ExampleDoc``), and put into every partition's example pool before its own labels.

The group's job config names the examples (``examples``, ``examples_dialogues``), so a group asked for with other
examples is refused as any other config difference is; the examples themselves are read from the store, never from
the file again, so a resumed run, or a worker on another machine, labels with exactly the ones the group started with.
"""

from __future__ import annotations

from collections.abc import Callable

from labelling.config import JobConfig
from labelling.examples import ExamplePool, read_examples, skipped_line
from labelling.fleet import store


def read_for_group(job: JobConfig, group: str, corpus: str, limit: int | None = None) -> ExamplePool | None:
    """The examples ``job`` names, read and checked, for a group about to be created over ``corpus`` (its first
    ``limit`` dialogues); None when the job names none or the group already holds its examples. Nothing is written:
    a bad example corpus fails here, before the group exists."""
    if not job.examples or group_has_examples(group):
        return None
    exclude = set(store.corpus_dialogue_ids(corpus, limit))
    return read_examples(job.examples, job.load_schema(), job.examples_dialogues, exclude)


def group_has_examples(group: str) -> bool:
    """Whether the group exists and holds stored examples."""
    return group in store.list_groups() and bool(store.group_examples(group).turns)


def record(group: str, pool: ExamplePool | None, job: JobConfig, say: Callable[[str], None]) -> None:
    """Store ``pool`` as the group's examples (once) and say in a line or two what the group's pool starts from."""
    if pool is not None:
        line = skipped_line(pool)
        if line:
            say(line)
        store.store_examples(group, pool, job.load_schema())
    stored = store.group_examples(group)
    if stored.turns:
        given = stored.provenance.count("given")
        say(
            f"examples: {stored.dialogues} dialogues, {len(stored.turns)} turns ({given} given, "
            f"{len(stored.turns) - given} self-labelled) from {stored.source}, in the pool before the seed partition"
        )
