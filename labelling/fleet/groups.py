"""A group's lifecycle, for the CLI and a notebook alike: one job config from the reference's job files, an optional
slice of the corpus, the check that an existing group keeps its corpus, config and seed split, and the group's record.

A group is labelled by launches (:mod:`labelling.fleet.launches`); :func:`settled` says when one has nothing left to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from labelling import config as job_config
from labelling import job_files
from labelling.config import first_difference
from labelling.corpus import DEFAULT_SPLIT_SIZE, cut_into_splits
from labelling.errors import ConfigError, PartitionBusy
from labelling.fleet import launches, leases, store

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
__all__ = ["CONFIG_SUFFIXES", "first_difference", "load_jobs", "prepare_group", "remove_group", "settled", "slice_name"]


# --- job configs -----------------------------------------------------------------------------------------------


def load_jobs(paths: Sequence[Path], profile: str | None) -> tuple[job_config.JobConfig, list[str]]:
    """One job config from a profile, a job file, or the reference's per-partition job files (files or folders),
    which must be identical apart from ``data.eval_set_split_name``; returns it and the splits the files name."""
    files = _config_files(paths)
    if not files:
        return job_config.load(None, profile), []
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


# --- corpus slices -------------------------------------------------------------------------------------------------


def slice_name(corpus: str, limit: int | None, size: int | None) -> str | None:
    """The corpus name of a slice (``NAME.firstN.byS``), or None when neither a limit nor a split size is asked for."""
    if limit is None and size is None:
        return None
    return corpus + (f".first{limit}" if limit else "") + f".by{size or DEFAULT_SPLIT_SIZE}"


def _stored_dialogues(corpus: str, limit: int | None) -> list[list]:
    """The corpus's dialogues in order (turns with gold), reading only as many splits as ``limit`` needs."""
    dialogues: dict[str, list] = {}
    for split in store.corpus_splits(corpus):
        for turn in store.load_turns(corpus, split):
            dialogues.setdefault(turn.dialogue_id, []).append(turn)
        if limit and len(dialogues) >= limit:
            break
    return list(dialogues.values())[:limit]


def ingest_slice(corpus: str, name: str, limit: int | None, size: int | None, job: job_config.JobConfig) -> int:
    """Store the first ``limit`` dialogues of ``corpus`` re-cut into splits of ``size`` as corpus ``name`` (idempotent);
    returns the number of splits."""
    splits = cut_into_splits(_stored_dialogues(corpus, limit), size or DEFAULT_SPLIT_SIZE)
    store.ingest_corpus(name, splits, job.load_schema())
    return len(splits)


def _check_named_splits(corpus: str, named: Sequence[str]) -> None:
    known = store.corpus_splits(corpus)
    unknown = [s for s in named if s not in known]
    if unknown:
        shown = ", ".join(list(known)[:8]) + (f" ... ({len(known)} in all)" if len(known) > 8 else "")
        raise ConfigError(f"the job files name splits that corpus {corpus!r} lacks: {', '.join(unknown)}", f"it has {shown}")


# --- the group -----------------------------------------------------------------------------------------------------


def prepare_group(
    corpus: str,
    group: str,
    job: job_config.JobConfig,
    named: Sequence[str] = (),
    seed_split: str | None = None,
    limit: int | None = None,
    size: int | None = None,
) -> tuple[str, str]:
    """Check the corpus, the named splits and an existing group (:func:`store.check_group`), cut a slice when ``limit``
    or ``size`` is given, then record the group; returns (the corpus labelled, the seed split)."""
    store.check_name(group, "group")  # before a slice is stored for a group that cannot be created
    store.corpus_splits(corpus)  # an unknown corpus fails here, listing the known ones
    name = slice_name(corpus, limit, size)
    if name is None:
        _check_named_splits(corpus, named)
    store.check_group(group, name or corpus, job, seed_split)  # before a slice is cut: a refused group stores nothing
    if name is not None:
        ingest_slice(corpus, name, limit, size, job)
    store.create_group(group, name or corpus, job, seed_split)
    return name or corpus, store.group_run(group).seed_split


def existing_corpus(group: str) -> str:
    """The corpus of an existing group; ConfigError when the group is new (then a corpus must be named)."""
    if group not in store.list_groups():
        raise ConfigError(f"group {group!r} does not exist yet", "pass --corpus NAME to create it")
    return store.group_run(group).corpus


def failed_splits(group: str) -> list[str]:
    """The group's failed partitions; ConfigError when there are none (nothing to retry)."""
    store.group_run(group)  # an unknown group fails here, listing the known ones
    failed = [p.split for p in store.partitions(group) if p.status == store.FAILED]
    if not failed:
        raise ConfigError(f"group {group!r} has no failed partitions", f"see `labelling status --group {group}`")
    return failed


def settled(parts: Sequence[store.Partition], seed_split: str, since: float) -> bool:
    """Whether a launch made at ``since`` has nothing left to do: every partition done or failed, or the seed failed.

    Failures recorded before ``since`` belong to an earlier launch and do not count: this one tries those partitions again.
    """

    def finished(part: store.Partition) -> bool:
        return part.status == store.DONE or (part.status == store.FAILED and (part.heartbeat_at or 0.0) >= since)

    if any(p.status == store.RUNNING for p in parts):
        return False
    seed = next(p for p in parts if p.split == seed_split)
    return (seed.status == store.FAILED and finished(seed)) or all(map(finished, parts))


def remove_group(group: str) -> dict[str, int]:
    """Delete a group and everything it labelled (so its corpus can be removed); refused while anything labels it.

    A live launch, or a running partition whose heartbeat is younger than the claim lease, keeps the group: its
    workers would write labels into a group that no longer exists.
    """
    check_removable(group)
    return store.remove_group(group)


def check_removable(group: str) -> None:
    """PartitionBusy when a live launch or a live claim labels ``group`` (checked again by :func:`remove_group`)."""
    launch = launches.current_launch(group)
    if launches.is_live(launch):
        raise PartitionBusy(
            f"group {group!r} is being labelled by launch {launch.run_id}",
            f"wait for it (`labelling status --group {group}`) or stop its workers, then remove the group",
        )
    busy = store.held_splits(group)
    if busy:
        raise PartitionBusy(
            f"group {group!r} has partitions being labelled: {', '.join(busy)}",
            f"stop the workers labelling them, or wait {leases.claim_lease_s():.0f} s after their last heartbeat, then "
            "remove the group",
        )
