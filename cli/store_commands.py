"""``labelling export`` and ``labelling evaluate``: a group's labels from MongoDB, as a dataset or as scores against gold."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)


def export(
    group: str = typer.Option(..., "--group", "-g", help="The labelling group to export."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder to save the DatasetDict (train, train_minus_64, valid_64) and README.md in."
    ),
    push_to_hub: str | None = typer.Option(
        None, "--push-to-hub", help="Also upload to this Hugging Face dataset repo (USER/NAME); the token is read from HF_TOKEN."
    ),
    private: bool = typer.Option(True, "--private/--public", help="Visibility of the hub repo when it is created."),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="Export the completed partitions even when others are not done yet."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out when it already exists and is not empty."),
    min_confidence: float | None = typer.Option(
        None,
        "--min-confidence",
        min=0.0,
        max=1.0,
        help="Keep each dialogue only up to its first label whose confidence is below X (0 to 1); the card says how "
        "many turns were kept.",
        show_default="every label",
    ),
) -> None:
    """Merge a group's completed partitions into a Hugging Face dataset named manifest_self_labelled_GROUP_N_HASH.

    Rows hold the predicted labels in the reference's turn fields; a README.md card records the group, counts,
    job config, per-partition metrics and the manifest entries the name's hash covers.
    """
    from labelling.fleet import store

    with store.connect() as conn:
        console.print(f"store: {escape(conn.masked_uri)}")
        export_and_show(
            group,
            out,
            push_to_hub=push_to_hub,
            private=private,
            allow_partial=allow_partial,
            overwrite=overwrite,
            min_confidence=min_confidence,
        )


def export_and_show(
    group: str,
    out: Path,
    *,
    push_to_hub: str | None = None,
    private: bool = True,
    allow_partial: bool = False,
    overwrite: bool = False,
    min_confidence: float | None = None,
) -> None:
    """Export a group over the open store connection and print what was written (``export`` and the demo)."""
    from labelling.fleet import export as exporter

    result = exporter.export_group(group, out, allow_partial=allow_partial, overwrite=overwrite, min_confidence=min_confidence)
    table = Table(title=result.name, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("written to", escape(str(out)))
    table.add_row("dialogues / turns", f"{result.num_dialogues:,} / {result.num_turns:,}")
    for name, size in result.split_sizes.items():
        table.add_row(f"split {name}", f"{size:,} turns")
    if exporter.VALID not in result.split_sizes:
        table.add_row(f"split {exporter.VALID}", f"left out: {exporter.NO_VALID}")
    if result.missing:
        table.add_row("left out (incomplete)", ", ".join(result.missing))
    if result.examples:
        table.add_row("seed examples", f"{result.examples['turns']:,} turns, label_provenance given/self-labelled")
    if result.abstention:
        table.add_row("kept", escape(result.abstention.line))
    if push_to_hub:
        table.add_row("pushed to", exporter.push_to_hub(out, push_to_hub, private=private))
    Console().print(table)


def evaluate(
    group: str = typer.Option(..., "--group", "-g", help="The labelling group to score."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    html: Path | None = typer.Option(
        None, "--html", help="Also write an HTML report (tables and a PNG chart per partition) into this folder."
    ),
) -> None:
    """Score a group's labels against gold, overall and per partition: exact JGA, turn accuracy and act F1 on
    (act type, domain, slot) triples, then the state slots and act types most often missed or invented.

    Running partitions count with the turns labelled so far; turns without gold are not counted.
    """
    from labelling.fleet import store
    from labelling.fleet.evaluation import group_scores

    with store.connect():
        report = group_scores(group)
    page = None
    if html is not None:
        from labelling.fleet import report as html_report

        page = html_report.write(report, html)
    if json_output:
        print(json.dumps({**report, "html": str(page) if page else None}, indent=2))
        return
    Console().print(_scores_table(report))
    Console().print(_errors_table(report["errors"]))
    if report.get("abstention"):
        Console().print(_abstention_table(report["abstention"]))
    if page is not None:
        Console().print(f"HTML report: {escape(str(page.resolve()))}", soft_wrap=True)  # a path must not wrap


def _scores_table(report: dict) -> Table:
    from labelling.fleet.export import SCORE_CELLS, score_cells
    from labelling.method.metrics import METRIC_TITLES

    table = Table(title=f"group {escape(report['group'])}")
    for name in ("partition", "status", "turns", *(METRIC_TITLES[key] for key in SCORE_CELLS), "flagged"):
        table.add_column(name, justify="left" if name in ("partition", "status") else "right")
    for row in report["partitions"]:
        turns = f"{row['turns_done']}/{row['turns_total']}"
        table.add_row(row["split"], row["status"], turns, *score_cells(row["metrics"]), _flagged(row["flags"]))
    done = sum(r["turns_done"] for r in report["partitions"])
    total = sum(r["turns_total"] for r in report["partitions"])
    table.add_row("all", "", f"{done}/{total}", *score_cells(report["overall"]), _flagged(report["flags"]), style="bold")
    return table


def _abstention_table(points: list[dict]) -> Table:
    """Precision against coverage at a few thresholds: what `export --min-confidence X` would keep, and how good it is."""
    from labelling.fleet.abstention import SHOWN

    table = Table(title="abstention: each dialogue kept up to its first label below the threshold (export --min-confidence)")
    for name in ("min confidence", "turns kept", "coverage", "JGA (exact)", "slot F1", "act F1 (triples)"):
        table.add_column(name, justify="right")
    for p in points:
        if p["threshold"] in SHOWN:
            scores = ["-" if p[k] is None else f"{p[k]:.3f}" for k in ("jga", "state_f1", "acts_f1")]
            table.add_row(f"{p['threshold']:g}", f"{p['kept']}/{p['turns']}", f"{p['coverage']:.1%}", *scores)
    return table


def _errors_table(errors: dict) -> Table:
    """Most-missed and most-invented state slots and act types, side by side."""
    table = Table(title="most errors (missed = in gold, not predicted; invented = predicted, not in gold)")
    for name in ("state slot", "missed", "invented", "act type", "missed", "invented"):
        table.add_column(name, justify="left" if name in ("state slot", "act type") else "right")
    slots, acts = errors["slots"], errors["acts"]
    for i in range(max(len(slots), len(acts))):
        cells = [list(map(str, rows[i])) if i < len(rows) else ["", "", ""] for rows in (slots, acts)]
        table.add_row(*cells[0], *cells[1])
    return table


def _flagged(flags: dict[str, int]) -> str:
    from labelling.records import FLAGGED_TURNS

    return str(flags.get(FLAGGED_TURNS, 0))
