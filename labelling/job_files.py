"""The reference's per-partition job files as one group config: its seed file (job_0.json) differs from the dependents
only in seed-only settings, which are merged rather than refused."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from labelling.config import JobConfig, load, warn_once

# What job_0.json sets apart from its dependents: warm-ups that only act while the example pool is nearly empty (so
# they change nothing for a dependent, whose pool starts with the seed's labels), and manifest flags for a group that
# does not exist yet. Everything else must be identical.
WARMUPS = ("data_warmup", "dst.retriever.example_warmup", "act_tag.retriever.example_warmup")
MANIFEST_FLAGS = ("manifest.seed_retrievers_from_manifest",)  # manifest_must_exist / group_id_must_exist: legacy keys


def load_all(files: Sequence[Path], profile: str | None) -> list[tuple[Path, JobConfig]]:
    """Each job file laid over ``profile``, warning about each legacy key once for the lot."""
    with warn_once():
        return [(path, load(path, profile)) for path in files]


def comparable(job: JobConfig) -> dict:
    """The job as a dict with the fields files of one group may differ in (split, seed-only settings) blanked."""
    data = job.to_dict()
    data["data"]["eval_set_split_name"] = None
    for path in WARMUPS + MANIFEST_FLAGS:
        *parents, key = path.split(".")
        node = data
        for name in parents:
            node = node[name]
        node[key] = None
    return data


def merge_seed_settings(job: JobConfig, others: Sequence[JobConfig]) -> JobConfig:
    """``job`` with the largest warm-ups of all files and the manifest flags of a dependent, so one config serves the
    seed (its warm-ups) and the dependents (their pool seeded from the manifest)."""
    every = [job, *others]
    if all(_seed_settings(j) == _seed_settings(job) for j in others):
        return job
    job.data_warmup = max(j.data_warmup for j in every)
    for module in ("dst", "act_tag"):
        getattr(job, module).retriever.example_warmup = max(getattr(j, module).retriever.example_warmup for j in every)
    job.manifest.seed_retrievers_from_manifest = any(j.manifest.seed_retrievers_from_manifest for j in every)
    return job


def _seed_settings(job: JobConfig) -> tuple:
    warmups = (job.data_warmup, job.dst.retriever.example_warmup, job.act_tag.retriever.example_warmup)
    return (*warmups, job.manifest.seed_retrievers_from_manifest)
