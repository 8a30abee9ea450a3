"""``labelling quality``: label the fixed held-out slice under each configuration and print one quality table."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.options import profile_option
from labelling import config as job_config
from labelling.bounded import read_regular
from labelling.errors import LabellingError
from labelling.limits import MAX_REPORT_BYTES, MAX_THREADS, MAX_TURNS

console = Console(stderr=True)


def quality(
    profile: str = profile_option(),
    config: Path | None = typer.Option(None, "--config", help="A job config (JSON or YAML) laid over the profile."),
    configurations: str | None = typer.Option(
        None,
        "--configurations",
        help="Comma-separated configuration names to run (see the table); the always-empty baseline is always scored.",
        show_default="all",
    ),
    limit: int | None = typer.Option(
        None,
        "--limit",
        min=1,
        max=MAX_TURNS,
        help="Label only the first N turns of the slice (a smoke run, not a result).",
        show_default="all",
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, max=MAX_THREADS, help="torch CPU threads.", show_default="torch's"
    ),
    split: str | None = typer.Option(
        None,
        "--split",
        help="Label another split of the bundled corpus instead of the held-out slice: where settings are chosen, and "
        "what a pool is seeded from.",
        show_default="the held-out train_900_950",
    ),
    dialogues: int | None = typer.Option(
        None, "--dialogues", min=1, help="How many dialogues of --split to label.", show_default="9 of the slice; all of --split"
    ),
    pool_from: Path | None = typer.Option(
        None,
        "--pool-from",
        exists=True,
        dir_okay=False,
        help="Seed the example pool from the labels of an earlier quality report on another split (its first configuration).",
        show_default="an empty pool",
    ),
    learning_curve: str | None = typer.Option(
        None,
        "--learning-curve",
        help="Label with pools seeded with the gold labels of 0, 5, 10, 25 and 50 dialogues of this other split (one "
        "row each per configuration): what each hand-labelled dialogue buys.",
        show_default="no curve",
    ),
    curve_dialogues: str = typer.Option(
        "0,5,10,25,50", "--curve-dialogues", help="The gold dialogue counts of --learning-curve's pools."
    ),
    out: Path = typer.Option(Path("quality.json"), "--out", help="Where to write the JSON report."),
    markdown_out: Path | None = typer.Option(
        None, "--markdown", help="Where to write the markdown table.", show_default="--out with a .md suffix"
    ),
) -> None:
    """Label the held-out slice (the first 9 dialogues of train_900_950, 67 turns, used by no default run or test) under
    greedy, noisy-channel and vote decoding, each with and without schema constraints, and
    print JGA (exact, and the reference's fuzzy one), turn accuracy, state-slot F1, act F1 on (type, domain, slot)
    triples, the off-schema sample rate, the share of "no change" labels and seconds per turn, beside the always-empty
    baseline. Choose settings with --split (another split), never on the slice; --pool-from seeds the example pool from
    an earlier report's labels of another split, to show what a grown pool does."""
    report = _read_report(pool_from) if pool_from else None  # before the slow imports: a bad file fails at once
    from labelling.bench import quality as lib

    job = job_config.load(config, profile)
    from labelling.fleet.preflight import check_devices

    check_devices(job)
    available = lib.configurations(job)
    chosen = list(available) if configurations is None else [c.strip() for c in configurations.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in available]
    if unknown:
        raise LabellingError(f"--configurations: unknown {', '.join(map(repr, unknown))}", f"known: {', '.join(available)}")
    if threads:
        import torch

        torch.set_num_threads(threads)
    name = split or lib.HELD_OUT_SPLIT
    count = dialogues or (lib.HELD_OUT_DIALOGUES if name == lib.HELD_OUT_SPLIT else None)
    turns = lib.split_turns(job, name, count, limit)
    pool = lib.report_pool(report, lambda s: lib.split_turns(job, s), name) if report is not None else None
    if pool:
        console.print(f"example pool: {pool.note}")
    setup = {"slice": lib.describe(name, count)} | _setup(lib, job, turns, profile, config, limit)
    setup |= {"split": name, "dialogues": count, "pool": pool and pool.note, "pool_lm": pool and pool.lm}
    runs = _runs(job, chosen, pool, learning_curve, curve_dialogues, name)
    md = markdown_out or out.with_suffix(".md")
    results = [lib.baseline(turns)]
    for conf, row, examples in runs:
        partial = out.with_name(f"{out.stem}.partial.json")

        def progress(result, partial=partial) -> None:  # the figures so far, readable while a long run goes on
            partial.write_text(json.dumps(lib.report([*results, result], setup), indent=2) + "\n", encoding="utf-8")

        with console.status(f"{row}: labelling {len(turns)} turns"):
            results.append(lib.run_configuration(job, row, available[conf], turns, on_batch=progress, pool=examples))
        console.print(f"{row}: done in {results[-1].seconds:.0f} s")
        rep = _write(lib, results, setup, out, md, turns)  # after each configuration, so a long run keeps what it finished
    header, rows = lib.table_rows(rep)
    table = Table(title=f"quality: {len(turns)} turns of {setup['slice']}")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    console.print(f"report: {out}, table: {md}")


def _runs(job, chosen: list[str], pool, curve_split: str | None, counts: str, labelled: str) -> list[tuple]:
    """(configuration, row name, pool examples) per labelling run: each configuration once (with the --pool-from
    pool if any), or once per learning-curve pool."""
    if curve_split is None:  # the report's row names the pool, so tables can be merged
        return [(conf, f"{conf}, seeded pool" if pool else conf, pool.examples if pool else []) for conf in chosen]
    if pool is not None:
        raise LabellingError("--learning-curve and --pool-from both seed the pool", "pass one of them")
    from labelling.bench import learning_curve as curve

    pools = curve.pools(job, curve_split, labelled, curve.parse_counts(counts))
    return [(conf, curve.row_name(conf, p), p.examples) for conf in chosen for p in pools]


def _read_report(path: Path) -> dict:
    try:
        return json.loads(read_regular(path, MAX_REPORT_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise LabellingError(
            f"--pool-from {path}: not a readable quality report ({exc})", "pass the --out of a labelling quality run"
        ) from exc


def _setup(lib, job: job_config.JobConfig, turns: list, profile: str, config: Path | None, limit: int | None) -> dict:
    return {
        "turns": len(turns),
        "limited": limit is not None or None,
        "profile": profile,
        "config": str(config) if config else None,
        "seed": job.seed,
        "lm": job.dst.model.model_name_or_path,
        "dtype": job.dst.model.torch_dtype,
        "gold no-change share": f"{lib.gold_no_change_share(turns):.1%}",
    }


def _write(lib, results: list, setup: dict, out: Path, md: Path, turns: list) -> dict:
    from labelling.fleet.abstention import curve
    from labelling.records import TurnLabel

    rep = lib.report(results, setup)
    for figures in rep["configurations"].values():  # precision against coverage, from each row's confidences
        labels = [TurnLabel.from_dict(d) for d in figures.get("labels") or []]
        figures["abstention"] = curve(turns, labels) if labels else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    md.write_text(lib.markdown(rep), encoding="utf-8")
    return rep
