"""Checks of a job config against this machine, for the commands that label here (``label-split``, ``run --local``,
``demo``, ``quality``, ``bench``) and for a worker at start: a device the machine does not have is an error before any
group, launch or partition is written, not a failed partition later. (A fleet launch names devices of other machines,
so ``run`` without ``--local`` leaves this to the workers.)"""

from __future__ import annotations

from labelling.config import JobConfig, model_path_problem
from labelling.errors import ConfigError, SchemaError
from labelling.limits import MAX_SCHEMA_BYTES, MISSING, file_problem


def check_paths(job: JobConfig, models: bool = True) -> None:
    """ConfigError naming the key when the schema file is missing here or is not a schema of the job's services, or
    (``models``) a model given as a local path is missing here.

    Validation already refuses paths that exist but cannot be right (a device, a folder for a file); a missing one is
    refused only where this machine is the one that reads it, since a fleet's workers may hold paths the launcher lacks.
    """
    if job.schema_path is not None:
        if file_problem(job.schema_path, MAX_SCHEMA_BYTES) == MISSING:
            raise ConfigError(f"config key schema_path: {job.schema_path}: {MISSING}", "give an existing schema.json")
        try:  # parsed and checked here, as the workers will: /etc/passwd or a 200,000-deep JSON is refused unsubmitted
            job.load_schema()
        except SchemaError as e:
            raise ConfigError(f"config key schema_path: {e.message}", e.hint) from e
    if not models:
        return
    for name in ("dst", "act_tag"):
        module = getattr(job, name)
        for key, value in (("model", module.model.model_name_or_path), ("retriever", module.retriever.model_name_or_path)):
            problem = model_path_problem(value)
            if problem is not None:
                raise ConfigError(f"config key {name}.{key}.model_name_or_path: {value}: {problem}")


def check_models(job: JobConfig) -> None:
    """ModelError naming the fix when a model of ``job`` cannot be loaded here (a missing folder, a hub id that is not
    cached while the hub is unreachable, a gated one without a token): what a worker checks at start, for ``run --local``
    before its group is written. Converts and downloads nothing."""
    from labelling.fleet.worker_setup import check_models as check

    wanted = []
    for module in (job.dst, job.act_tag):
        if not module.uses_lm:  # labelled by the rules alone: no model to load
            continue
        wanted.append((module.model.model_name_or_path, False))
        if module.retriever.use_retriever:
            wanted.append((module.retriever.model_name_or_path, True))
    check(wanted)


def check_devices(job: JobConfig) -> None:
    """ConfigError naming the key when a module asks for a CUDA device or MPS that this machine lacks (and the paths
    it names are checked first: see :func:`check_paths`)."""
    check_paths(job)
    for name in ("dst", "act_tag"):
        device = getattr(job, name).model.device
        problem = device_problem(device)
        if problem:
            raise ConfigError(
                f"config key {name}.model.device: {device!r} {problem}", "use auto, cpu, or a device this machine has"
            )


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used on this machine, or None (``auto`` and ``cpu`` always can)."""
    if device in ("auto", "cpu"):
        return None
    import torch

    if device == "mps":
        available = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        return None if available else "is not available here (no Apple MPS device)"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if count == 0:
        return "is not available here (no CUDA device)"
    if index >= count:
        return f"is not available here ({count} CUDA device(s): cuda:0 to cuda:{count - 1})"
    return None
