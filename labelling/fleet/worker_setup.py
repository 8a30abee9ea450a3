"""What `labelling worker` settles before its pool starts: which GPU its processes see, warnings about pool shapes that
waste a GPU, and whether the models it will be asked to load can be loaded on this machine.

Imports neither torch nor CUDA: the worker process forks its pool, and CUDA state does not survive a fork.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from labelling.errors import LabellingError

log = logging.getLogger(__name__)
VISIBLE_ENV, ORDER_ENV, ALLOC_ENV = "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "PYTORCH_CUDA_ALLOC_CONF"


def visible_devices(gpu: int | None, inherited: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES for a worker: "" (no GPU) without `gpu`, else entry `gpu` of the inherited list (a
    scheduler's indexes or UUIDs), else `gpu` itself."""
    if gpu is None:
        return ""
    if inherited is None:
        return str(gpu)
    listed = [entry.strip() for entry in inherited.split(",") if entry.strip()]
    if gpu >= len(listed):
        raise LabellingError(
            f"--gpu {gpu}, but {VISIBLE_ENV}={inherited!r} lists {len(listed)} GPU(s)",
            f"--gpu indexes into {VISIBLE_ENV} when it is set: use 0 to {len(listed) - 1}"
            if listed
            else f"this shell may use no GPU; unset {VISIBLE_ENV} to pick among all of them",
        )
    return listed[gpu]


def pin_devices(gpu: int | None) -> str:
    """Set this process's (and so its pool's) CUDA environment for `gpu`; returns a phrase saying where models run."""
    device = visible_devices(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))  # CUDA's own variable, not a setting
    os.environ[VISIBLE_ENV] = device
    if gpu is None:
        return "CPU (GPUs hidden)"
    os.environ.setdefault(ORDER_ENV, "PCI_BUS_ID")  # indexes as nvidia-smi numbers them, not fastest first
    os.environ.setdefault(ALLOC_ENV, "expandable_segments:True")  # batch buffers of changing size fragment less
    return f"GPU {device} ({VISIBLE_ENV}={device})"


def pool_warnings(gpu: int | None, pool: str, concurrency: int) -> list[str]:
    """Pool shapes that waste a GPU: several processes on one GPU each load their own copy of the model."""
    if gpu is not None and pool == "prefork" and concurrency > 1:
        return [
            f"{concurrency} pool processes on GPU {gpu} each load their own copy of the model and share the card; "
            "one process (--concurrency 1) already sizes its batches to the free memory"
        ]
    return []


def live_group_models() -> list[tuple[str, bool]]:
    """(name, is_embedder) for the LMs and retrievers of every group with partitions pending or running (store connected)."""
    from labelling.fleet import store

    wanted: dict[tuple[str, bool], None] = {}
    for group in store.list_groups():
        if not any(p.status in (store.PENDING, store.RUNNING) for p in store.partitions(group)):
            continue
        try:
            config = store.group_config(group)
        except LabellingError as exc:  # a group this version cannot read is no reason to refuse the others
            log.warning("group %s: cannot read its job config (%s); its models are not checked", group, exc)
            continue
        for module in (config.dst, config.act_tag):
            if not module.uses_lm:  # labelled by the rules alone: no model to load
                continue
            wanted[(module.model.model_name_or_path, False)] = None
            if module.retriever.use_retriever:
                wanted[(module.retriever.model_name_or_path, True)] = None
    return list(wanted)


def check_models(models: Iterable[tuple[str, bool]]) -> None:
    """Raise ModelError, naming the fix, for the first model this machine cannot load (see model_files.check_access)."""
    from labelling.engine import model_files

    for name, is_embedder in dict.fromkeys(models):
        model_files.check_access(name, embedder=is_embedder)
