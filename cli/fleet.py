"""``labelling run``, ``worker``, ``status``, ``flower`` and ``demo``: the fleet from the command line, and the whole
product in one command on a machine with nothing installed.

Heavy modules (Celery, mongoengine, torch) are imported inside the commands, so ``labelling --help`` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from labelling import config as job_config
from labelling import job_files
from labelling.errors import ConfigError, LabellingError, StoreError
from labelling.schema import BUNDLED_SCHEMA

if TYPE_CHECKING:
    from labelling.store import Partition
    from tasks.partition import Launch

# Logs and CI are not terminals: rich would wrap at 80 columns there and squeeze the status table's columns.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(stderr=True, width=_WIDTH)  # progress and notes
report = Console(width=_WIDTH, soft_wrap=True)  # tables and the lines a user copies
DEFAULT_PROFILE = job_config.DEFAULT_PROFILE
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
DEFAULT_SPLIT_SIZE = 50
FLOWER_USER_ENV, FLOWER_PASSWORD_ENV, FLOWER_AUTH_ENV = "LABELLING_FLOWER_USER", "LABELLING_FLOWER_PASSWORD", "FLOWER_BASIC_AUTH"
DEMO_CORPUS, DEMO_DIALOGUES, DEMO_MAX_TURNS, DEMO_SPLIT_SIZE = "demo", 6, 5, 2
BUNDLED_CORPUS = BUNDLED_SCHEMA.with_name("multiwoz21_dev.json.zip")  # the MultiWOZ 2.1 dev set shipped beside the schema


# --- job configs -----------------------------------------------------------------------------------------------


def load_jobs(paths: Sequence[Path], profile: str | None) -> tuple[job_config.JobConfig, list[str]]:
    """One job config from a profile, a job file, or the reference's per-partition job files (files or folders),
    which must be identical apart from ``data.eval_set_split_name``; returns it and the splits the files name."""
    files = _config_files(paths)
    if not files:
        return job_config.load(None, profile or DEFAULT_PROFILE), []
    loaded = job_files.load_all(files, profile)
    first_path, job = loaded[0]
    for path, other in loaded[1:]:
        where = first_difference(job_files.comparable(job), job_files.comparable(other))
        if where:
            raise ConfigError(
                f"{path} differs from {first_path} at {where}",
                "per-partition job files may differ only in data.eval_set_split_name and the seed's warm-ups",
            )
    job = job_files.merge_seed_settings(job, [other for _, other in loaded[1:]])  # job_0.json's warm-ups
    named = [other.data.eval_set_split_name for _, other in loaded if other.data.eval_set_split_name]
    job.data.eval_set_split_name = None  # a group spans every split; the files only said which one each labelled
    return job, named


def _config_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)  # a missing file fails in job_config.load with its own message
            continue
        found = sorted(p for p in path.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file())
        if not found:
            raise ConfigError(f"{path}: no job files ({', '.join(CONFIG_SUFFIXES)}) in this folder")
        files += found
    return files


def first_difference(a: object, b: object, path: str = "") -> str | None:
    """The dotted key path of the first place two plain JSON-like values differ, or None when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    return None if a == b else (path or "<top>")


# --- corpus and group checks -------------------------------------------------------------------------------------


def _schema(job: job_config.JobConfig):
    from labelling.schema import Schema

    return Schema.load(job.schema_path, tuple(job.services))


def _slice_name(corpus: str, limit: int | None, size: int | None) -> str | None:
    if limit is None and size is None:
        return None
    return corpus + (f".first{limit}" if limit else "") + f".by{size or DEFAULT_SPLIT_SIZE}"


def _stored_dialogues(corpus: str, limit: int | None) -> list[list]:
    """The corpus's dialogues in order (turns with gold), reading only as many splits as ``limit`` needs."""
    from labelling import store

    dialogues: dict[str, list] = {}
    for split in store.corpus_splits(corpus):
        for turn in store.load_turns(corpus, split):
            dialogues.setdefault(turn.dialogue_id, []).append(turn)
        if limit and len(dialogues) >= limit:
            break
    return list(dialogues.values())[:limit]


def _ingest_slice(corpus: str, name: str, limit: int | None, size: int | None, job: job_config.JobConfig) -> None:
    """Store the first ``limit`` dialogues of ``corpus`` re-cut into splits of ``size`` as corpus ``name`` (idempotent)."""
    from labelling import store
    from labelling.corpus import partition

    splits = partition(_stored_dialogues(corpus, limit), size or DEFAULT_SPLIT_SIZE)
    store.ingest_corpus(name, splits, _schema(job))
    console.print(f"corpus {escape(name)}: {len(splits)} partitions cut from {escape(corpus)}")


def _check_named_splits(corpus: str, named: Sequence[str]) -> None:
    from labelling import store

    known = store.corpus_splits(corpus)
    unknown = [s for s in named if s not in known]
    if unknown:
        shown = ", ".join(list(known)[:8]) + (f" ... ({len(known)} in all)" if len(known) > 8 else "")
        raise ConfigError(f"the job files name splits that corpus {corpus!r} lacks: {', '.join(unknown)}", f"it has {shown}")


def _check_group(group: str, corpus: str, job: job_config.JobConfig, seed_split: str | None) -> None:
    """A group that exists must keep its corpus, job config and seed: it is resumed, never silently relabelled."""
    from labelling import store

    if group not in store.list_groups():
        return
    existing = store.group_run(group)
    if existing.corpus != corpus:
        raise StoreError(f"group {group!r} labels corpus {existing.corpus!r}, not {corpus!r}", "choose another --group")
    wanted = job.to_dict()
    wanted["manifest"]["group_id"] = group
    where = first_difference(job_config.from_dict(dict(existing.config)).to_dict(), wanted)
    if where:
        raise ConfigError(
            f"group {group!r} was created with another job config (first difference: {where})",
            "a group keeps its config: pass the same one, or choose another --group",
        )
    if seed_split and seed_split != existing.seed_split:
        raise ConfigError(
            f"group {group!r} was seeded with {existing.seed_split!r}, not {seed_split!r}", "leave out --seed-split"
        )


def prepare_group(
    corpus: str,
    group: str,
    job: job_config.JobConfig,
    named: Sequence[str],
    seed_split: str | None,
    limit: int | None,
    size: int | None,
) -> tuple[str, str]:
    """Check the corpus, the named splits and an existing group, then record the group; returns (corpus, seed split)."""
    from labelling import store

    store.corpus_splits(corpus)  # an unknown corpus fails here, listing the known ones
    name = _slice_name(corpus, limit, size)
    if name is None:
        _check_named_splits(corpus, named)
    _check_group(group, name or corpus, job, seed_split)
    if name is not None:
        _ingest_slice(corpus, name, limit, size, job)
    store.create_group(group, name or corpus, job, seed_split)
    return name or corpus, store.group_run(group).seed_split


# --- progress and status ------------------------------------------------------------------------------------------


def _stale(part: Partition, now: float) -> bool:
    from labelling import store

    return part.status == store.RUNNING and now - (part.heartbeat_at or now) > store.claim_lease_s()


def _state(part: Partition, now: float) -> str:
    return f"{part.status} (stale)" if _stale(part, now) else part.status


def _rate(part: Partition) -> str:
    return f"{part.turns_per_s:.2f}" if part.turns_per_s else "-"


class PartitionBars:
    """A live progress bar per partition of a group, redrawn from the store (so it shows any worker's progress)."""

    def __init__(self, group: str):
        self.group = group
        columns = [TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[state]:<9}")]
        columns += [TextColumn("{task.fields[rate]} turns/s"), TextColumn("{task.fields[worker]}"), TimeElapsedColumn()]
        self.progress = Progress(*columns, console=console)
        self.tasks: dict[str, int] = {}

    def refresh(self) -> list[Partition]:
        """Read the group's partitions and redraw; returns them."""
        from labelling import store

        parts, now = store.partitions(self.group), time.time()
        for part in parts:
            if part.split not in self.tasks:
                self.tasks[part.split] = self.progress.add_task(part.split, total=part.turns_total, state="", rate="-", worker="")
            fields = {"state": _state(part, now), "rate": _rate(part), "worker": part.worker or ""}
            self.progress.update(self.tasks[part.split], completed=part.turns_done, **fields)
        return parts

    def __enter__(self) -> PartitionBars:
        self.progress.start()
        self.refresh()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def settled(parts: Sequence[Partition], seed_split: str, since: float) -> bool:
    """Whether a run launched at ``since`` has nothing left to do: every partition done or failed, or the seed failed.

    Failures recorded before ``since`` belong to an earlier run and do not count: this run tries those partitions again.
    """
    from labelling import store

    def finished(part: Partition) -> bool:
        return part.status == store.DONE or (part.status == store.FAILED and (part.heartbeat_at or 0.0) >= since)

    if any(p.status == store.RUNNING for p in parts):
        return False
    seed = next(p for p in parts if p.split == seed_split)
    return (seed.status == store.FAILED and finished(seed)) or all(map(finished, parts))


def status_table(group: str) -> Table:
    """The group's partitions: state, turns done / total, turns/s, JGA and act F1 so far, worker, attempts, last error."""
    from labelling import store
    from labelling.export import score_cells
    from labelling.metrics import MetricsAccumulator
    from tasks.partition import current_launch

    head, launch, now = store.group_run(group), current_launch(group), time.time()
    title = f"group {group} · corpus {head.corpus}"
    if launch is not None:
        since = launch.ended_at or launch.submitted_at  # "ended N ago" counts from the end, "submitted" from the start
        title += f" · run {launch.run_id} ({launch.mode}, {launch.state} {_ago(now - since)} ago)"
    table = Table(title=escape(title), title_justify="left")
    for name in ("partition", "state", "turns", "turns/s", "JGA", "act F1", "worker", "attempts", "last error"):
        table.add_column(name, justify="right" if name in ("turns", "turns/s", "JGA", "act F1", "attempts") else "left")
    for part in store.partitions(group):
        jga, _, act_f1 = score_cells(MetricsAccumulator.from_dict(part.metrics or {}).summary())
        label = part.split + (" (seed)" if part.split == head.seed_split else "")
        error = (part.last_error or "").strip().splitlines()[-1:] if part.status == store.FAILED else []
        cells = [label, _state(part, now), f"{part.turns_done}/{part.turns_total}", _rate(part), jga, act_f1]
        table.add_row(*map(escape, cells), escape(part.worker or "-"), str(part.attempts), escape(error[0][:80] if error else ""))
    return table


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


# --- run -------------------------------------------------------------------------------------------------------------


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
    profile: str | None = typer.Option(
        None, "--profile", help="Built-in settings: cpu-small or starcoder.", show_default=DEFAULT_PROFILE
    ),
    seed_split: str | None = typer.Option(
        None, "--seed-split", help="The split labelled first, alone.", show_default="the corpus's first"
    ),
    local: bool = typer.Option(
        False, "--local", help="Label in this process, with no broker (the default when LABELLING_BROKER_URL is unset)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the fleet's progress with a bar per partition until the run ends."),
    limit_dialogues: int | None = typer.Option(
        None, "--limit-dialogues", min=1, help="Label only the corpus's first N dialogues."
    ),
    split_size: int | None = typer.Option(
        None, "--split-size", min=1, help="Re-cut the (limited) corpus into partitions of N dialogues."
    ),
    resubmit: bool = typer.Option(
        False, "--resubmit", help="Submit even though a launch of the group looks live (its tasks were lost)."
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Label the group's failed partitions again, with the group's own corpus and config."
    ),
) -> None:
    """Label every partition of CORPUS as group G: the seed split first, alone, then the others in parallel on the fleet.

    Everything is checked before anything is submitted: the job config, the corpus, the broker and the group (a group
    one run is labelling is not launched again). --limit-dialogues / --split-size label a slice of the corpus, stored as
    corpus NAME.firstN.byS.
    """
    from tasks.app import broker_url, check_broker

    if retry_failed and (limit_dialogues or split_size or seed_split):
        hint = "leave out --limit-dialogues, --split-size and --seed-split"
        raise ConfigError("--retry-failed resumes a group as it was created", hint)
    job, named = load_jobs(config, profile)
    if not local and broker_url() is None:
        console.print("LABELLING_BROKER_URL is unset: labelling in this process (the embedded mode)")
        local = True
    if not local:
        check_broker("labelling run")
    from labelling import store

    connection = store.connect()
    try:
        if retry_failed:
            corpus, job = _failed_to_retry(group, config, job)
        elif corpus is None:
            corpus = _existing_corpus(group)
        corpus, seed = prepare_group(corpus, group, job, named, seed_split, limit_dialogues, split_size)
        if _complete(group):
            return
        ok = _run_local(group, corpus, seed, resubmit) if local else _submit(group, corpus, seed, resubmit, wait)
    finally:
        if local:  # a fleet's workers may share an embedded server this command started: leave it running for them
            connection.close()
    if not ok:
        raise typer.Exit(1)


def _existing_corpus(group: str) -> str:
    """The corpus of an existing group; ConfigError when the group is new (then --corpus is needed)."""
    from labelling import store

    if group not in store.list_groups():
        raise ConfigError(f"group {group!r} does not exist yet", "pass --corpus NAME to create it")
    return store.group_run(group).corpus


def _failed_to_retry(group: str, config: Sequence[Path], job: job_config.JobConfig) -> tuple[str, job_config.JobConfig]:
    """The group's corpus and job config (its own unless --config is given), after checking it has failed partitions."""
    from labelling import store

    head = store.group_run(group)  # an unknown group fails here, listing the known ones
    failed = [p.split for p in store.partitions(group) if p.status == store.FAILED]
    if not failed:
        raise ConfigError(f"group {group!r} has no failed partitions", f"see `labelling status --group {group}`")
    console.print(f"retrying the failed partitions of {escape(group)}: {', '.join(failed)}")
    return head.corpus, (job if config else store.group_config(group))


def _complete(group: str) -> bool:
    from labelling import store

    if all(p.status == store.DONE for p in store.partitions(group)):
        report.print(f"group {escape(group)} is complete: nothing to label")
        report.print(f"export:  labelling export --group {escape(group)} --out DIR")
        return True
    return False


def _run_local(group: str, corpus: str, seed: str, resubmit: bool) -> bool:
    """The embedded mode: the chord in this process, with a bar per partition; True when every partition is done."""
    from tasks.local import run_local
    from tasks.partition import LOCAL, claim_launch, end_launch

    launch = claim_launch(group, corpus, seed, LOCAL, resubmit)
    where = f"group {escape(group)}, corpus {escape(corpus)}"
    report.print(f"run {launch.run_id}: {where}, labelled in this process, seed {escape(seed)} first")
    # SIGTERM as an exception, so the partition in progress is marked failed and freed, not left claimed for a lease.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        with PartitionBars(group) as bars:
            run_local(group, seed, on_progress=lambda *_: bars.refresh())
    finally:
        signal.signal(signal.SIGTERM, previous)
        end_launch(launch)
    return _summarise(group)


def _submit(group: str, corpus: str, seed: str, resubmit: bool, wait: bool) -> bool:
    """Send the run's chord to the fleet, print how to watch and export it, and follow it when asked."""
    from labelling import store
    from labelling.redact import mask_uri
    from tasks.app import app, bind_result_backend
    from tasks.partition import FLEET, claim_launch, end_launch, submit_run

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
    from labelling import store
    from tasks.app import FleetError
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
    from labelling import store

    report.print(status_table(group))
    failed = [p.split for p in store.partitions(group) if p.status != store.DONE]
    if failed:
        report.print(f"not done: {', '.join(failed)}; `labelling run` again resumes them")
    else:
        report.print(f"export:  labelling export --group {escape(group)} --out DIR")
    return not failed


# --- status ------------------------------------------------------------------------------------------------------------


def status(
    group: str = typer.Option(..., "--group", "-g", help="The labelling group."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Redraw until no partition is pending or running."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between redraws with --watch."),
) -> None:
    """Show a group's partitions: state, turns done / total, turns/s, JGA and act F1 so far, worker, attempts, last error."""
    from labelling import store

    with store.connect():
        if not watch:
            report.print(status_table(group))
            return
        with Live(status_table(group), console=report, auto_refresh=False) as live:
            while any(p.status in (store.PENDING, store.RUNNING) for p in store.partitions(group)):
                time.sleep(interval)
                live.update(status_table(group), refresh=True)


# --- worker ------------------------------------------------------------------------------------------------------------


def worker(
    gpu: int | None = typer.Option(
        None, "--gpu", min=0, help="Pin the worker to this GPU (CUDA_VISIBLE_DEVICES); left out: CPU."
    ),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Partitions labelled at once (one model copy each)."),
    queues: list[str] = typer.Option(
        [], "--queues", "-Q", help="Queues to consume (comma-separated or repeated).", show_default="all"
    ),
    pool: str = typer.Option("prefork", "--pool", "-P", help="prefork (models load after the fork), solo or threads."),
    name: str | None = typer.Option(None, "--name", "-n", help="Node name.", show_default="gpuN@HOST, or cpu@HOST without --gpu"),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads per pool process (torch); set it when several workers share a machine."
    ),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l", help="Celery log level."),
) -> None:
    """Start a Celery worker that labels partitions, with task events on for Flower; one worker per GPU.

    Needs LABELLING_BROKER_URL. With the prefork pool the worker process never touches the GPU: each pool process loads
    the models on its first task, after the fork, and keeps them for the next ones.
    """
    import celeryconfig
    from labelling import store
    from labelling.redact import mask_uri
    from tasks.app import app, bind_result_backend, check_broker
    from tasks.partition import THREADS_ENV

    url = check_broker("labelling worker")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads is not None:
        os.environ[THREADS_ENV] = str(threads)  # applied in each pool process, after the fork
    backend = bind_result_backend()
    store.disconnect()  # pool processes open their own connection after the fork
    node = name or (f"gpu{gpu}@%h" if gpu is not None else "cpu@%h")
    wanted = [q.strip() for item in queues for q in item.split(",") if q.strip()]
    wanted = wanted or [celeryconfig.PARTITION_QUEUE, celeryconfig.CONTROL_QUEUE]
    console.print(f"worker {escape(node)} on {escape(mask_uri(url))}, queues {', '.join(wanted)}, results {escape(backend)}")
    argv = ["worker", f"--hostname={node}", "--task-events", f"--concurrency={concurrency}", f"--pool={pool}"]
    app.worker_main(argv + [f"--queues={','.join(wanted)}", f"--loglevel={loglevel}"])


# --- flower ------------------------------------------------------------------------------------------------------------


def flower_auth() -> str | None:
    """Basic-auth credentials from the environment, as Flower takes them (``user:password``), or None when unset."""
    user, password = os.environ.get(FLOWER_USER_ENV), os.environ.get(FLOWER_PASSWORD_ENV)
    if user or password:
        if not (user and password):
            raise LabellingError(f"set both {FLOWER_USER_ENV} and {FLOWER_PASSWORD_ENV}, or neither")
        return f"{user}:{password}"
    return os.environ.get(FLOWER_AUTH_ENV) or None


def flower(
    port: int = typer.Option(5555, "--port", min=1, max=65535, help="HTTP port."),
    address: str = typer.Option("127.0.0.1", "--address", help="Address to listen on (loopback by default)."),
    insecure: bool = typer.Option(False, "--insecure", help="Start without authentication when no credentials are set."),
) -> None:
    """Start Flower against the broker, with basic auth from LABELLING_FLOWER_USER / LABELLING_FLOWER_PASSWORD
    (or FLOWER_BASIC_AUTH=user:password); it refuses to start without credentials unless --insecure is given."""
    from labelling.redact import mask_uri
    from tasks.app import app, check_broker, require_broker

    url = require_broker("labelling flower")
    auth = flower_auth()
    if auth is None and not insecure:
        raise LabellingError(
            "Flower would start without authentication",
            f"set {FLOWER_USER_ENV} and {FLOWER_PASSWORD_ENV} (or {FLOWER_AUTH_ENV}=user:password), or pass --insecure",
        )
    check_broker("labelling flower")  # a wrong password or a broker that is down: one line here, not endless retries
    if auth is not None:
        os.environ[FLOWER_AUTH_ENV] = auth  # read by Flower from the environment: the password stays off the command line
    console.print(f"Flower at http://{address}:{port} on {escape(mask_uri(url))}{'' if auth else ' (no authentication)'}")
    app.start(["flower", f"--address={address}", f"--port={port}"])


# --- demo --------------------------------------------------------------------------------------------------------------


def demo_job() -> job_config.JobConfig:
    """cpu-small with 2 samples of at most 32 tokens and 2 examples per prompt, so the demo takes minutes on 2 cores."""
    job = job_config.load(profile=DEFAULT_PROFILE)
    for module in (job.dst, job.act_tag):
        module.generation_cfg.sampling_args.n = module.generation_cfg.sampling_args.best_of = 2
        module.generation_cfg.sampling_args.max_new_tokens = 32
        module.retriever.k_examples = 2
    return job.validate()


def _ingest_demo(job: job_config.JobConfig) -> None:
    """The first few short dialogues of the bundled corpus as corpus ``demo``: labelling time grows with the number of
    turn waves, so short dialogues keep the demo to minutes while it still shows a seed and two dependents."""
    from labelling import store
    from labelling.corpus import partition, read_corpus

    schema = _schema(job)
    short = [d for d in read_corpus(BUNDLED_CORPUS, schema) if len(d) <= DEMO_MAX_TURNS][:DEMO_DIALOGUES]
    splits = partition(short, DEMO_SPLIT_SIZE)
    turns = store.ingest_corpus(DEMO_CORPUS, splits, schema)
    what = f"the first {DEMO_DIALOGUES} dialogues of at most {DEMO_MAX_TURNS} turns ({turns} turns)"
    console.print(f"ingested {BUNDLED_CORPUS.name}: {what} as corpus {DEMO_CORPUS}, {len(splits)} partitions")


def demo(
    out: Path = typer.Option(Path(".state/demo/export"), "--out", "-o", help="Where to save the exported dataset."),
    group: str = typer.Option("demo", "--group", "-g", help="The labelling group (an existing complete one is exported again)."),
) -> None:
    """The whole product in one command, with no services: ingest 6 short dialogues of the bundled MultiWOZ dev set in 3
    partitions, label them in process with the embedded models (seed partition first), show status, evaluate, export."""
    from cli.store_commands import evaluate, export
    from labelling import store

    started = time.perf_counter()
    job = demo_job()
    with store.connect() as connection:
        console.print(f"store: {escape(connection.masked_uri)}")
        _ingest_demo(job)
        corpus, seed = prepare_group(DEMO_CORPUS, group, job, [], None, None, None)
        if not _complete(group) and not _run_local(group, corpus, seed, resubmit=False):
            raise LabellingError(f"the demo's group {group!r} did not finish", f"see `labelling status --group {group}`")
    evaluate(group=group, json_output=False)
    export(group=group, out=out, push_to_hub=None, private=True, allow_partial=False, overwrite=True)
    report.print(f"dataset: {escape(str(out.resolve()))}  (datasets.load_from_disk({str(out)!r}))")
    report.print(f"demo finished in {time.perf_counter() - started:.0f} s")
