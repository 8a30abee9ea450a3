"""The learning curve of ``labelling quality``: the slice labelled with pools seeded with 0, 5, 10, 25 and 50 gold
dialogues of another split, so a user sees what each hand-labelled dialogue buys. Each pool is a ``given``
:class:`labelling.examples.ExamplePool`, the same object ``--examples`` puts into a real run's pool."""

from __future__ import annotations

from collections.abc import Sequence

from labelling.config import ConfigError, JobConfig
from labelling.examples import ExamplePool, gold_pool

CURVE_DIALOGUES = (0, 5, 10, 25, 50)


def parse_counts(text: str) -> tuple[int, ...]:
    """``"0,5,10"`` -> (0, 5, 10); ConfigError naming the option for anything else."""
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or any(n < 0 for n in counts):
        raise ConfigError(f"--curve-dialogues {text!r} is not a list of dialogue counts", "e.g. --curve-dialogues 0,5,10,25,50")
    return counts


def pools(job: JobConfig, split: str, labelled: str, counts: Sequence[int] = CURVE_DIALOGUES) -> list[ExamplePool]:
    """One gold pool per count, each the first N dialogues of ``split`` (the bundled corpus); ``split`` must not be
    the split being labelled (a label must never be scored against itself)."""
    from labelling.bench.quality import split_turns

    if split == labelled:
        raise ConfigError(f"--learning-curve {split} is the split this run labels", "seed the pools from another split")
    turns = split_turns(job, split)
    available = len({t.dialogue_id for t in turns})
    if max(counts) > available:
        raise ConfigError(f"--curve-dialogues asks for {max(counts)} dialogues; {split} has {available}", "ask for fewer")
    return [gold_pool(turns, n, f"{split} (gold)") for n in counts]


def row_name(configuration: str, pool: ExamplePool) -> str:
    """The quality table's row for ``configuration`` labelled with ``pool``."""
    return f"{configuration}, {pool.dialogues} gold dialogues"
