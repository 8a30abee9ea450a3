"""``labelling label-split`` (formerly ``label-partition``, still accepted): label one split of an ingested dataset
locally, with no broker and no database."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.options import examples_dialogues_option, examples_option, profile_option
from cli.signals import sigterm_as_interrupt
from labelling import config as job_config
from labelling.corpus import first_dialogues
from labelling.errors import CorpusError, LabellingError
from labelling.limits import MAX_DIALOGUES
from labelling.turns import Turn

if TYPE_CHECKING:
    from labelling.examples import ExamplePool
    from labelling.records import TurnLabel

console = Console(stderr=True)


def load_split(dataset: Path, split: str, limit_dialogues: int | None = None) -> list[Turn]:
    """The turns of one split of a ``labelling ingest`` folder, optionally only its first N dialogues."""
    import datasets

    hint = "create one with `labelling ingest SOURCE --out DIR`"
    try:
        splits = datasets.load_from_disk(str(dataset))
    except Exception as e:  # datasets raises several types for a missing or foreign folder
        raise CorpusError(f"{dataset}: not a dataset folder ({type(e).__name__})", hint) from e
    if not isinstance(splits, datasets.DatasetDict):
        raise CorpusError(f"{dataset}: holds one dataset, not named splits", hint)
    if split not in splits:
        names = list(splits)
        raise CorpusError(f"{dataset}: no split {split!r}", f"splits: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
    try:
        turns = [Turn.from_row(row) for row in splits[split]]
    except (KeyError, TypeError, ValueError, SyntaxError) as e:  # what Turn.from_row raises for a row of another shape
        raise CorpusError(f"{dataset}: split {split!r} does not hold turn rows ({type(e).__name__}: {e})", hint) from e
    return first_dialogues(turns, limit_dialogues)


def partial_header(job: job_config.JobConfig, dataset: Path, split: str, limit_dialogues: int | None) -> dict:
    """The first line of OUT.partial: what it labels and with which config, so a resume never mixes two runs."""
    digest = hashlib.sha256(json.dumps(job.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return {"dataset": str(dataset.resolve()), "split": split, "limit_dialogues": limit_dialogues, "config": digest}


def _read_partial(path: Path, header: dict, turns: list[Turn]) -> list[TurnLabel]:
    """The labels of an earlier, interrupted run of the same command; LabellingError when OUT.partial belongs to another."""
    from labelling.records import TurnLabel

    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if not lines:
        return []
    try:
        written_for = json.loads(lines[0]).get("partial_of")
    except (json.JSONDecodeError, AttributeError):
        written_for = None
    if written_for != header:
        raise LabellingError(
            f"{path} was written by another command ({_mismatch(written_for, header)})", _START_OVER.format(path)
        )
    labels = []
    for line in lines[1:]:
        try:
            labels.append(TurnLabel.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError):
            break  # a line cut by a crash: everything before it is whole, the rest is relabelled
    keys = {(t.dialogue_id, t.turn_id) for t in turns}
    stray = [lab.key for lab in labels if lab.key not in keys]
    if stray:
        raise LabellingError(f"{path} holds turns the split lacks, e.g. {stray[0]}", _START_OVER.format(path))
    return labels


_START_OVER = "pass the --dataset, --split, --limit-dialogues and config that wrote it, or delete {} to start over"


def _mismatch(written_for: dict | None, header: dict) -> str:
    if not isinstance(written_for, dict):
        return "it has no header line saying what it labels"
    return ", ".join(f"{k} {written_for.get(k)!r}, not {v!r}" for k, v in header.items() if written_for.get(k) != v)


def label_split(
    dataset: Path = typer.Option(..., "--dataset", help="A dataset folder written by `labelling ingest --out`."),
    split: str = typer.Option(..., "--split", help="The split (partition) to label, e.g. train_0_50."),
    out: Path = typer.Option(..., "--out", help="Output JSONL file, one labelled turn per line."),
    limit_dialogues: int | None = typer.Option(
        None, "--limit-dialogues", min=1, max=MAX_DIALOGUES, help="Label only the first N dialogues of the split."
    ),
    profile: str = profile_option(),
    config: Path | None = typer.Option(None, "--config", help="A job config (JSON or YAML) laid over the profile."),
    mode: str | None = typer.Option(
        None, "--mode", help="Override both modules' selection: noisy_channel (as configured) or greedy."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Override the job seed (sampling and dialogue shuffling)."),
    examples: Path | None = examples_option("dialogues of the split are skipped from them"),
    examples_dialogues: int | None = examples_dialogues_option(),
) -> None:
    """Label one partition on this machine and print JGA, turn accuracy and act F1 when gold is present.

    The output is written as it goes to OUT.partial; running the same command again resumes from it.
    """
    job = job_config.load(config, profile)
    if mode == "greedy":
        job = job_config.with_mode(job, "greedy")
    elif mode not in (None, "noisy_channel"):
        raise LabellingError(f"--mode {mode!r} is not a mode", "use noisy_channel or greedy")
    if seed is not None:
        job.seed = seed
        job.validate()
    from cli.run import with_examples
    from labelling.fleet.preflight import check_devices

    with_examples(job, examples, examples_dialogues)
    check_devices(job)
    _check_out(out)
    turns = load_split(dataset, split, limit_dialogues)
    pool = _examples(job, turns)
    partial = out.with_name(out.name + ".partial")
    header = partial_header(job, dataset, split, limit_dialogues)
    if pool is not None:  # the examples' content, not only their path: a resume must use the same ones
        header["examples"] = pool.digest()
    done = _read_partial(partial, header, turns)
    with sigterm_as_interrupt():  # SIGTERM keeps the labels so far and says how to resume, as Ctrl-C does (exit 143)
        labels, seconds, summary = _run(job, turns, done, partial, header, pool)
    _finish(partial, out)
    _report(labels, seconds, summary, len(turns) - len(done), out)


def _examples(job: job_config.JobConfig, turns: list[Turn]) -> ExamplePool | None:
    """The job's examples, read and checked, without the split's own dialogues (one line says which were skipped)."""
    if not job.examples:
        return None
    from labelling.examples import read_examples, skipped_line

    pool = read_examples(job.examples, job.load_schema(), job.examples_dialogues, {t.dialogue_id for t in turns})
    for line in (skipped_line(pool), f"examples: {pool.note}, in the pool before the first turn"):
        if line:
            console.print(escape(line))
    return pool


def _check_out(out: Path) -> None:
    """OUT, OUT.partial and OUT.tmp must be files this command can write: a folder in their place, or a read-only
    folder, fails here in one line (exit 2), before any model loads."""
    if out.name in ("", ".", ".."):  # "/", ".", "" and "..": a folder, and OUT.partial would have no name to extend
        raise CorpusError(f"--out {str(out)!r}: is a folder, not a file path", "give --out a file path, e.g. --out labels.jsonl")
    for path in (out, out.with_name(out.name + ".partial"), out.with_name(out.name + ".tmp")):
        if path.is_dir():
            raise CorpusError(f"{path}: is a folder", "give --out a file path, e.g. --out labels.jsonl")
        if path.exists() and not path.is_file():  # OUT.partial is read back: /dev/zero there would be read forever
            raise CorpusError(f"{path}: is not a regular file (a device, a pipe or a socket)", "choose another --out")
        if path.exists() and not os.access(path, os.W_OK):
            raise CorpusError(f"{path}: cannot be written (permission denied)", "choose another --out")
    folder = out.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CorpusError(f"{out}: cannot be written ({folder} is not writable)", "choose another --out")


def _writing(path: Path):
    """OSError while writing ``path`` as a one-line CorpusError (exit 2) instead of an unexpected failure."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except OSError as e:
            raise CorpusError(f"{path}: cannot be written ({e.strerror or e})", "choose another --out") from e

    return guard()


def _finish(partial: Path, out: Path) -> None:
    """OUT is OUT.partial without its header line, written whole (beside it, then renamed)."""
    tmp = out.with_name(out.name + ".tmp")
    with _writing(out):
        tmp.write_text("".join(partial.read_text(encoding="utf-8").splitlines(keepends=True)[1:]), encoding="utf-8")
        os.replace(tmp, out)
        partial.unlink()


def _run(
    job, turns: list[Turn], done: list[TurnLabel], partial: Path, header: dict, pool: ExamplePool | None = None
) -> tuple[list[TurnLabel], float, dict]:
    from labelling.method.build import build_labeller

    with console.status("loading models"):
        labeller = build_labeller(job)
    if pool is not None:
        labeller.add_examples(pool.examples)
    keep = {lab.key for lab in done}
    lines = [json.dumps({"partial_of": header})] + [json.dumps(lab.to_dict()) for lab in done]
    with _writing(partial):
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def checkpoint(batch: list[TurnLabel]) -> None:
        with _writing(partial), partial.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(lab.to_dict()) + "\n" for lab in batch if lab.key not in keep))
            f.flush()
            os.fsync(f.fileno())

    columns = [
        TextColumn("labelling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} turns/s"),
        TimeElapsedColumn(),
    ]
    start = time.perf_counter()
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("turns", total=len(turns), rate="-")

        def advance(n: int) -> None:
            elapsed = time.perf_counter() - start
            bar.update(task, advance=n, rate=f"{(bar.tasks[0].completed + n) / max(elapsed, 1e-9):.2f}")

        labels = labeller.label(turns, done=done, on_batch=checkpoint, progress=advance)
    return labels, time.perf_counter() - start, labeller.metrics.summary()


def _report(labels: list[TurnLabel], seconds: float, summary: dict, new_turns: int, out: Path) -> None:
    from labelling.method.metrics import METRIC_TITLES

    flagged = sum(1 for lab in labels if lab.flags)
    kinds = Counter(flag for lab in labels for flag in lab.flags)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = Table(title=f"{len(labels)} turns labelled -> {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("seconds per new turn", f"{seconds / max(new_turns, 1):.2f}"),
        ("peak memory (MB)", f"{peak_mb:.0f}"),
        ("flagged turns", str(flagged) + (f" ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})" if kinds else "")),
    ]
    if summary.get("n_dst"):
        rows += [(METRIC_TITLES[key], f"{summary[key]:.3f}") for key in ("jga", "jga_fuzzy", "turn_acc", "state_f1")]
    if summary.get("n_acts"):
        rows += [
            (METRIC_TITLES[key], f"{summary[key]:.3f}") for key in ("acts_f1", "act_types_f1", "act_slots_f1", "act_values_f1")
        ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)
