"""``labelling bench``: label the same turns along the plain path (a) and the optimised path (b) and compare them."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.options import profile_option
from labelling import config as job_config
from labelling.errors import LabellingError
from labelling.limits import MAX_DIALOGUES, MAX_THREADS, MAX_TURNS
from labelling.turns import Turn

console = Console(stderr=True)


def bench(
    dataset: Path | None = typer.Option(
        None, "--dataset", help="A dataset folder written by `labelling ingest --out`.", show_default="the bundled dev corpus"
    ),
    split: str = typer.Option("train_0_50", "--split", help="The split whose first dialogues are labelled."),
    limit_dialogues: int = typer.Option(
        3, "--limit-dialogues", min=1, max=MAX_DIALOGUES, help="Label the first N dialogues of the split."
    ),
    limit_turns: int | None = typer.Option(
        None, "--limit-turns", min=1, max=MAX_TURNS, help="Keep only the first N turns of each dialogue."
    ),
    profile: str = profile_option("cpu-small", "cpu-small gives the engine's recorded figures."),
    config: Path | None = typer.Option(None, "--config", help="A job config (JSON or YAML) laid over the profile."),
    seed: int | None = typer.Option(None, "--seed", help="Override the job seed (the same for both paths)."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        max=MAX_THREADS,
        help="torch CPU threads per path.",
        show_default="$LABELLING_TORCH_THREADS, else torch's",
    ),
    paths: str = typer.Option("a,b", "--paths", help="Which paths to run, comma-separated: a (plain), b (optimised)."),
    out: Path = typer.Option(Path("bench.json"), "--out", help="Where to write the JSON report."),
    markdown_out: Path | None = typer.Option(
        None, "--markdown", help="Where to write the markdown table.", show_default="--out with a .md suffix"
    ),
) -> None:
    """Label the same turns, with the same job and seed, along (a) the reference's plain computation (no KV reuse, 2 turns
    per batch, a discarded greedy pass, every candidate re-encoding its prompt) and (b) the optimised engine, each in its
    own process; print turns/s, generated and prompt tokens/s, peak memory, the ratios b/a and how often they agree.

    Both paths decode as the reference does (noisy channel, joint for DST and conditional for acts, unconstrained),
    whatever the profile's own decoding: that is the computation the plain path reproduces."""
    from labelling.bench import speed as lib
    from labelling.corpus import first_dialogues

    chosen = [p.strip() for p in paths.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in lib.PATHS]
    if not chosen or unknown:
        raise LabellingError(f"--paths {paths!r}: unknown path {', '.join(unknown) or '(none)'}", "use a, b or a,b")
    job = job_config.with_reference_decoding(job_config.load(config, profile))
    from labelling.fleet.preflight import check_devices

    check_devices(job)
    if seed is not None:
        job.seed = seed
    turns = first_dialogues(_split_turns(job, dataset, split), limit_dialogues, limit_turns)
    if not turns:
        raise LabellingError(f"split {split!r} has no turns to label")
    results = {}
    for path in dict.fromkeys(chosen):
        with console.status(f"path ({path}) {lib.PATHS[path]}: labelling {len(turns)} turns in a fresh process"):
            results[path] = lib.run_isolated(job, turns, path, threads)
    setup = {
        "dataset": str(dataset) if dataset else "bundled MultiWOZ 2.1 dev",
        "split": split,
        "dialogues": len({t.dialogue_id for t in turns}),
        "turns": len(turns),
        "profile": profile,
        "config": str(config) if config else None,
        "seed": job.seed,
        "lm": job.dst.model.model_name_or_path,
        "decoding": dict(job_config.REFERENCE_DECODING),
        "max_batch_tokens": job.max_batch_tokens,
    }
    rep = lib.report(results, setup)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    md = markdown_out or out.with_suffix(".md")
    md.write_text(lib.markdown(rep), encoding="utf-8")
    Console().print(_table(rep, lib.table_rows(rep)))
    console.print(f"report: {out}, table: {md}")


def _split_turns(job: job_config.JobConfig, dataset: Path | None, split: str) -> list[Turn]:
    """The split's turns: from an ingested folder as `label-split` reads them, else cut from the bundled corpus."""
    if dataset is not None:
        from cli.label import load_split

        return load_split(dataset, split)
    from labelling.corpus import bundled_splits

    splits = bundled_splits(job.load_schema())
    if split not in splits:
        raise LabellingError(f"the bundled corpus has no split {split!r}", f"e.g. {', '.join(list(splits)[:3])}")
    return splits[split]


def _table(rep: dict, header_rows: tuple[list[str], list[list[str]]]) -> Table:
    header, rows = header_rows
    setup = rep["setup"]
    table = Table(
        title=f"bench: {setup['turns']} turns of {setup['dialogues']} dialogues, {setup['split']}, seed {setup['seed']}"
    )
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table
