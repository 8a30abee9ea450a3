"""``labelling demo``: the whole product in one command on a machine with nothing installed (no broker, no MongoDB)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape

from cli.console import console, report
from cli.options import examples_dialogues_option, examples_option, profile_option
from cli.run import complete, launch_local, with_examples
from labelling import config as job_config
from labelling.data import BUNDLED_CORPUS
from labelling.errors import LabellingError

DEMO_CORPUS, DEMO_DIALOGUES, DEMO_MAX_TURNS, DEMO_SPLIT_SIZE = "demo", 6, 5, 2


def demo_job(profile: str | None = None) -> job_config.JobConfig:
    """The profile (by default the default profile) with 2 examples per prompt, so the demo takes minutes on 2 cores."""
    job = job_config.load(None, profile)
    for module in (job.dst, job.act_tag):
        module.retriever.k_examples = 2
    return job.validate()


def _demo_dialogues(job: job_config.JobConfig) -> list:
    """The first few short dialogues of the bundled corpus: labelling time grows with the number of turn waves, so short
    dialogues keep the demo to minutes while it still shows a seed and two dependents."""
    from labelling.corpus import bundled_dialogues

    return [d for d in bundled_dialogues(job.load_schema()) if len(d) <= DEMO_MAX_TURNS][:DEMO_DIALOGUES]


def _demo_examples(job: job_config.JobConfig, dialogues: list):
    """The job's examples, read and checked before the store is touched (None: none); a group that already holds
    examples keeps its own (``group_examples.record`` stores these only for a new one)."""
    from labelling.examples import read_examples

    if not job.examples:
        return None
    exclude = {d[0].dialogue_id for d in dialogues}
    return read_examples(job.examples, job.load_schema(), job.examples_dialogues, exclude)


def _ingest_demo(job: job_config.JobConfig, short: list) -> None:
    """``short`` (:func:`_demo_dialogues`) as corpus ``demo``, in partitions of 2 dialogues."""
    from labelling.corpus import cut_into_splits
    from labelling.fleet import store

    schema = job.load_schema()
    splits = cut_into_splits(short, DEMO_SPLIT_SIZE)
    turns = store.ingest_corpus(DEMO_CORPUS, splits, schema)
    what = f"the first {DEMO_DIALOGUES} dialogues of at most {DEMO_MAX_TURNS} turns ({turns} turns)"
    console.print(f"ingested {BUNDLED_CORPUS.name}: {what} as corpus {DEMO_CORPUS}, {len(splits)} partitions")


def demo(
    out: Path = typer.Option(Path(".state/demo/export"), "--out", "-o", help="Where to save the exported dataset."),
    group: str = typer.Option("demo", "--group", "-g", help="The labelling group (an existing complete one is exported again)."),
    profile: str = profile_option(note="cpu-small is the fastest and labels worse."),
    examples: Path | None = examples_option("dialogues the demo labels are skipped from them"),
    examples_dialogues: int | None = examples_dialogues_option(),
) -> None:
    """The whole product in one command, with no services: ingest 6 short dialogues of the bundled MultiWOZ dev set in 3
    partitions, label them in process with the embedded models (seed partition first), show status, export, then
    evaluate and write an HTML report."""
    from cli.store_commands import evaluate, export_and_show
    from labelling.fleet import group_examples, store
    from labelling.fleet.groups import prepare_group

    started = time.perf_counter()
    job = with_examples(demo_job(profile), examples, examples_dialogues)
    short = _demo_dialogues(job)
    pool = _demo_examples(job, short)  # a bad example corpus fails here: nothing written, no store touched
    with store.connect() as connection:
        console.print(f"store: {escape(connection.masked_uri)}")
        if group_examples.group_has_examples(group):
            pool = None
        _ingest_demo(job, short)
        corpus, seed = prepare_group(DEMO_CORPUS, group, job)
        group_examples.record(group, pool, job, lambda line: console.print(escape(line)))
        if not complete(group) and not launch_local(group, corpus, seed, resubmit=False):
            raise LabellingError(f"the demo's group {group!r} did not finish", f"see `labelling status --group {group}`")
        export_and_show(group, out, overwrite=True)
    report.print(f"dataset: {escape(str(out.resolve()))}  (datasets.load_from_disk({str(out)!r}))")
    # Last, so the demo ends on its quality table and the path of the HTML report beside the export.
    evaluate(group=group, json_output=False, html=out.parent / "report")
    report.print(f"demo finished in {time.perf_counter() - started:.0f} s")
