"""`labelling ingest`: read a MultiWOZ corpus or a turn dataset, check it, cut it into splits and save it as a DatasetDict."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labelling.corpus import (
    DEFAULT_SPLIT_SIZE,
    CorpusFormat,
    CorpusSummary,
    check_output,
    cut_into_splits,
    detect_format,
    read_corpus,
    summary,
    write_dataset,
)
from labelling.errors import LabellingError
from labelling.limits import MAX_SPLIT_SIZE
from labelling.schema import EVALUATED_SERVICES, Schema


def ingest(
    source: Path = typer.Argument(
        ...,
        help=(
            "The corpus: a MultiWOZ 2.1 ConvLab .json or .zip, a MultiWOZ 2.2 folder of dialogues_NNN.json (or one such file), "
            "a datasets save_to_disk folder of turn rows, or a Hugging Face hub dataset name."
        ),
        show_default=False,
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder to save the splits in (a datasets.DatasetDict). Without it the corpus is only read, checked and summarised.",
    ),
    format: CorpusFormat | None = typer.Option(
        None, "--format", "-f", help="Input format; detected from the file or folder when left out.", case_sensitive=False
    ),
    split_size: int = typer.Option(
        DEFAULT_SPLIT_SIZE,
        "--split-size",
        min=1,
        max=MAX_SPLIT_SIZE,
        help="Dialogues per split, in corpus order; the last split holds the rest.",
    ),
    prefix: str = typer.Option("train", "--prefix", help="Split-name prefix: a split named PREFIX_A_B holds dialogues A to B-1."),
    schema: Path | None = typer.Option(
        None,
        "--schema",
        help="A MultiWOZ 2.2 schema.json to map slot names with.",
        show_default="the bundled schema",
    ),
    services: str = typer.Option(
        ",".join(EVALUATED_SERVICES),
        "--services",
        help="Comma-separated services to keep; gold states and domains of the others are dropped.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out when it already exists and is not empty."),
    corpus: str | None = typer.Option(
        None,
        "--corpus",
        help=(
            "Also write the turns to MongoDB as corpus NAME ($LABELLING_MONGODB_URI, else the embedded server); "
            "ingesting the same corpus again changes nothing."
        ),
    ),
) -> None:
    """Read a dialogue corpus into turn records and cut it into splits of SPLIT_SIZE dialogues (train_0_50, train_50_100, ...).

    The splits are saved as a dataset folder (--out), written to MongoDB as a corpus (--corpus), or both.
    Slot names are mapped to the schema's; gold states and acts are kept when the source has them, for metrics only.
    A gold label naming a service or slot the schema lacks stops the ingest with an error naming the file, dialogue, turn
    and name (a misspelt slot would otherwise silently lower every score); services the schema has but --services leaves
    out are dropped quietly.
    A summary table (dialogues, turns, splits, domains, turns with gold) is printed either way.
    """
    if corpus is not None:  # an empty --corpus '' is a mistake to name, not a request to skip the store
        from labelling.fleet.store import check_name

        check_name(corpus, "corpus")
    chosen = Schema.load(schema, services=_service_list(services))
    if out is not None:
        check_output(out, overwrite)  # fail before the slow part, not after it
    fmt = format.value if format else detect_format(source)
    splits = cut_into_splits(read_corpus(source, chosen, fmt), split_size, prefix)
    if out is not None:
        write_dataset(splits, out, chosen, overwrite=overwrite)
    stored = _store_corpus(corpus, splits, chosen) if corpus is not None else None
    Console().print(_summary_table(source, fmt, summary(splits), list(splits), out, stored))


def _store_corpus(name: str, splits: dict, schema: Schema) -> str:
    """Write the splits to MongoDB as corpus ``name``; returns where, for the summary (password masked)."""
    from labelling.fleet import store  # lazy: mongoengine is not needed for a plain ingest

    with store.connect() as conn:
        count = store.ingest_corpus(name, splits, schema)
        return f"corpus {name} ({count:,} turns) at {conn.masked_uri}"


def _service_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    if not names:
        raise LabellingError(f"--services {text!r} names no service", f"e.g. --services {','.join(EVALUATED_SERVICES)}")
    return names


def _summary_table(
    source: Path, fmt: str, counts: CorpusSummary, names: list[str], out: Path | None, stored: str | None = None
) -> Table:
    table = Table(title=f"Ingested {escape(str(source))}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    split_range = f"{names[0]} … {names[-1]}" if len(names) > 1 else names[0]
    rows = [
        ("format", fmt),
        ("dialogues", f"{counts.dialogues:,}"),
        ("turns", f"{counts.turns:,}"),
        ("splits", f"{counts.splits:,} ({split_range})"),
        ("domains", ", ".join(f"{name} {n:,}" for name, n in counts.domains.items()) or "none"),
        ("turns with gold state", f"{counts.gold_state_turns:,} of {counts.turns:,}"),
        ("turns with gold acts", f"{counts.gold_acts_turns:,} of {counts.turns:,}"),
        ("written to", escape(str(out)) if out is not None else "nothing written (no --out)"),
    ]
    if stored is not None:
        rows.append(("stored in MongoDB", escape(stored)))
    for row in rows:
        table.add_row(*row)
    return table
