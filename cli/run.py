"""``labelling run``: label a group's partitions, the seed split first and alone, on the fleet or in this process.

Heavy modules (Celery, torch) are imported inside the functions, so ``labelling --help`` stays fast.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from cli.console import PartitionBars, console, report, status_table, step
from cli.options import examples_dialogues_option, examples_option, profile_option
from labelling import config as job_config
from labelling.errors import ConfigError, FleetError, LabellingError
from labelling.limits import MAX_DIALOGUES, MAX_SPLIT_SIZE

if TYPE_CHECKING:
    from labelling.fleet.launches import Launch


def run(
    corpus: str | None = typer.Option(
        None, "--corpus", help="The ingested corpus to label (see `labelling ingest --corpus`); an existing group knows its own."
    ),
    group: str = typer.Option(..., "--group", "-g", help="The labelling group: its partitions, labels and manifest."),
    config: list[Path] = typer.Option(
        [],
        "--config",
        "-c",
        help=(
            "A job config (JSON or YAML) in the reference's schema, laid over --profile. Repeat it, or give "
            "a folder, for the reference's per-partition job files (identical apart from data.eval_set_split_name)."
        ),
    ),
    profile: str | None = profile_option(None),
    seed_split: str | None = typer.Option(
        None, "--seed-split", help="The split labelled first, alone.", show_default="the corpus's first"
    ),
    local: bool = typer.Option(
        False, "--local", help="Label in this process, with no broker (the default when LABELLING_BROKER_URL is unset)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the fleet's progress with a bar per partition until the run ends."),
    limit_dialogues: int | None = typer.Option(
        None, "--limit-dialogues", min=1, max=MAX_DIALOGUES, help="Label only the corpus's first N dialogues."
    ),
    split_size: int | None = typer.Option(
        None, "--split-size", min=1, max=MAX_SPLIT_SIZE, help="Re-cut the (limited) corpus into partitions of N dialogues."
    ),
    resubmit: bool = typer.Option(
        False, "--resubmit", help="Submit even though a launch of the group looks live (its tasks were lost)."
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Label the group's failed partitions again, with the group's own corpus and config."
    ),
    examples: Path | None = examples_option("dialogues of the corpus are skipped from them"),
    examples_dialogues: int | None = examples_dialogues_option(),
) -> None:
    """Label every partition of CORPUS as group G: the seed split first, alone, then the others in parallel on the fleet.

    Everything is checked before anything is submitted: the job config, the corpus, the broker and the group (a group
    one run is labelling is not launched again). --limit-dialogues / --split-size label a slice of the corpus, stored as
    corpus NAME.firstN.byS.
    """
    from labelling.fleet.groups import existing_corpus, load_jobs, prepare_group
    from tasks.app import broker_url, check_broker

    if retry_failed and (limit_dialogues or split_size or seed_split):
        hint = "leave out --limit-dialogues, --split-size and --seed-split"
        raise ConfigError("--retry-failed resumes a group as it was created", hint)
    job, named = load_jobs(config, profile)
    with_examples(job, examples, examples_dialogues)
    if not local and broker_url() is None:
        console.print("LABELLING_BROKER_URL is unset: labelling in this process (the embedded mode)")
        local = True
    if not local:
        from labelling.fleet.preflight import check_paths

        check_paths(job, models=False)  # the workers check their models at start; the schema is read here too
        check_broker("labelling run")
    else:  # labelled here: a device this machine lacks fails now, before the group, launch or partitions are written
        from labelling.fleet.preflight import check_devices

        check_devices(job)
    from labelling.fleet import store

    connection = store.connect()
    try:
        if retry_failed:
            corpus, job = _failed_to_retry(group, config, job)
        elif corpus is None:
            corpus = existing_corpus(group)
        if local:  # the models load here: checked before the group is written, after the corpus (no network needed)
            from labelling.fleet.preflight import check_models

            store.check_name(group, "group")
            store.corpus_splits(corpus)  # an unknown corpus fails here, listing the known ones
            check_models(job)
        from labelling.fleet import group_examples

        pool = group_examples.read_for_group(job, group, corpus, limit_dialogues)  # a bad example corpus: nothing written
        corpus, seed = prepare_group(corpus, group, job, named, seed_split, limit_dialogues, split_size)
        group_examples.record(group, pool, job, lambda line: console.print(escape(line)))
        if complete(group):
            return
        ok = launch_local(group, corpus, seed, resubmit) if local else _submit(group, corpus, seed, resubmit, wait)
    finally:
        if local:  # a fleet's workers may share an embedded server this command started: leave it running for them
            connection.close()
    if not ok:
        raise typer.Exit(1)


def with_examples(job: job_config.JobConfig, examples: Path | None, dialogues: int | None) -> job_config.JobConfig:
    """``job`` with ``--examples`` / ``--examples-dialogues`` laid over its ``examples`` keys (validated)."""
    if examples is None and dialogues is not None and not job.examples:
        raise ConfigError("--examples-dialogues needs --examples", "name the labelled corpus with --examples SRC")
    if examples is not None:
        job.examples = str(examples)
    if dialogues is not None:
        job.examples_dialogues = dialogues
    return job.validate()


def _failed_to_retry(group: str, config: Sequence[Path], job: job_config.JobConfig) -> tuple[str, job_config.JobConfig]:
    """The group's corpus and job config (its own unless --config is given), after checking it has failed partitions."""
    from labelling.fleet import store
    from labelling.fleet.groups import failed_splits

    failed = failed_splits(group)  # an unknown group fails here, listing the known ones
    head = store.group_run(group)
    console.print(f"retrying the failed partitions of {escape(group)}: {', '.join(failed)}")
    return head.corpus, (job if config else store.group_config(group))


def complete(group: str) -> bool:
    """True (saying so, and how to export) when every partition of the group is done: nothing to launch."""
    from labelling.fleet import store

    if all(p.status == store.DONE for p in store.partitions(group)):
        report.print(f"group {escape(group)} is complete: nothing to label")
        report.print(f"export:  labelling export --group {escape(group)} --out DIR")
        return True
    return False


def launch_local(group: str, corpus: str, seed: str, resubmit: bool) -> bool:
    """The embedded mode: the chord in this process, with a bar per partition; True when every partition is done."""
    from labelling.fleet.launches import LOCAL, claim_launch, end_launch
    from tasks.local import run_local

    launch = claim_launch(group, corpus, seed, LOCAL, resubmit)
    where = f"group {escape(group)}, corpus {escape(corpus)}"
    report.print(f"run {launch.run_id}: {where}, labelled in this process, seed {escape(seed)} first")
    # SIGTERM as an exception, so the partition in progress is marked failed and freed, not left claimed for a lease.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        _prepare_models(group)
        with PartitionBars(group, poll_s=1.0) as bars:
            run_local(group, seed, on_progress=lambda *_: bars.refresh())
    finally:
        signal.signal(signal.SIGTERM, previous)
        end_launch(launch)
    return _summarise(group)


def _prepare_models(group: str) -> None:
    """Convert the group's GGUF language models before the bars start: a one-off step of ours, shown with its time."""
    from labelling.engine.model_files import cache_dir, pending_conversion, resolve_lm
    from labelling.fleet import store

    job = store.group_config(group)
    for name in dict.fromkeys(module.model.model_name_or_path for module in (job.dst, job.act_tag) if module.uses_lm):
        gguf = pending_conversion(name)
        if gguf is not None:
            done = f"converted {gguf.name} to safetensors in {cache_dir() / 'models'} (once per machine)"
            with step(f"converting {gguf.name} to safetensors (once per machine)", done):
                resolve_lm(name)


def _submit(group: str, corpus: str, seed: str, resubmit: bool, wait: bool) -> bool:
    """Send the run's chord to the fleet, print how to watch and export it, and follow it when asked."""
    from labelling.fleet import store
    from labelling.fleet.launches import FLEET, claim_launch, end_launch
    from labelling.redact import mask_uri
    from tasks.app import app, bind_result_backend
    from tasks.partition import submit_run

    backend = bind_result_backend()
    launch = claim_launch(group, corpus, seed, FLEET, resubmit)
    try:
        submit_run(group, seed, launch.run_id)
    except Exception as e:  # the broker went away after the check: release the group, report in one line
        end_launch(launch)
        raise LabellingError(
            f"submitting run {launch.run_id} failed ({type(e).__name__}: {e})", "nothing was labelled; run again"
        ) from e
    count = len(store.partitions(group))
    report.print(f"run {launch.run_id} submitted: group {escape(group)}, corpus {escape(corpus)}, {count} partitions")
    report.print(f"  seed {escape(seed)} runs first, alone; then {count - 1} more in parallel")
    report.print(f"  broker {escape(mask_uri(app.conf.broker_url))}, results {escape(backend)}")
    report.print(
        f"watch:   labelling status --group {escape(group)} --watch   (or Flower: `labelling flower`, http://127.0.0.1:5555)"
    )
    report.print(f"export:  labelling export --group {escape(group)} --out DIR   (once every partition is done)")
    return follow(launch) if wait else True


def follow(launch: Launch, interval_s: float = 2.0) -> bool:
    """Draw a bar per partition until the launched run settles; True when every partition is done."""
    from labelling.fleet import store
    from labelling.fleet.groups import settled
    from tasks.partition import seed_task

    seed = launch.seed_split
    with PartitionBars(launch.group) as bars:
        while not settled(parts := bars.refresh(), seed, launch.submitted_at):
            seed_part = next(p for p in parts if p.split == seed)
            if seed_part.status != store.RUNNING and seed_task(launch.run_id, seed).failed():
                raise FleetError(
                    f"the seed task of run {launch.run_id} failed before it could claim {seed}", "see the worker's log or Flower"
                )
            time.sleep(interval_s)
    return _summarise(launch.group)


def _summarise(group: str) -> bool:
    from labelling.fleet import store

    report.print(status_table(group))
    failed = [p.split for p in store.partitions(group) if p.status != store.DONE]
    if failed:
        report.print(f"not done: {', '.join(failed)}; `labelling run` again resumes them")
    else:
        report.print(f"export:  labelling export --group {escape(group)} --out DIR")
    return not failed
