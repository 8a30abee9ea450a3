"""``labelling``: self-label task-oriented dialogues (dialogue states and system acts) with a language model.

Layers, each importing only those below it (the library never imports Celery or the CLI)::

    cli/        the Typer app, one module per command          (labelling run | status | worker | demo | ...)
    tasks/      Celery tasks and the run chord; the same chord in process (tasks.local)
    runner, export, bench         one partition against the store; the Hugging Face dataset; plain vs optimised
    groups, launches              a group's lifecycle; one live launch per group
    store                         MongoDB (mongoengine): corpus, groups, partitions, labels, manifest, launches
    models, labeller              loaded models shared per process; the wave-by-wave labelling engine
    corpus, retrieval, metrics, canonical, channel, demos     corpus readers, example indexes, scores, selection
    parsing, prompts, turns, records                         completions to labels, prompt text, turn and label records
    config, settings, lm, schema, states, acts, ...          job config, environment, the LM, the service schema
    errors, redact, generation                               errors with hints, password masking, LM request types

In a notebook, no broker or database is needed::

    import labelling

    job = labelling.load_config("job.yaml")            # or load_config(profile="starcoder"); default "cpu-small"
    schema = job.load_schema()
    dialogues = labelling.read_corpus("data/multiwoz22/dev", schema)
    labeller = labelling.build_labeller(job, schema)    # loads the LMs and embedders once per process
    labels = labeller.label([turn for dialogue in dialogues[:5] for turn in dialogue])
    labels[0].state, labels[0].acts, labels[0].flags    # TurnLabel records

The names below are imported on first use (PEP 562), so ``import labelling`` stays light and loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "JobConfig": "labelling.config",
    "load_config": ("labelling.config", "load"),
    "build_labeller": "labelling.models",
    "PartitionLabeller": "labelling.labeller",
    "read_corpus": "labelling.corpus",
    "Schema": "labelling.schema",
    "Turn": "labelling.turns",
    "TurnLabel": "labelling.records",
    "ModuleOutput": "labelling.records",
    "LabellingError": "labelling.errors",
}
__all__ = [  # the same names as _EXPORTS, spelled out for linters and type checkers
    "JobConfig",
    "LabellingError",
    "ModuleOutput",
    "PartitionLabeller",
    "Schema",
    "Turn",
    "TurnLabel",
    "build_labeller",
    "load_config",
    "read_corpus",
]

if TYPE_CHECKING:
    from labelling.config import JobConfig
    from labelling.config import load as load_config
    from labelling.corpus import read_corpus
    from labelling.errors import LabellingError
    from labelling.labeller import PartitionLabeller
    from labelling.models import build_labeller
    from labelling.records import ModuleOutput, TurnLabel
    from labelling.schema import Schema
    from labelling.turns import Turn


def __getattr__(name: str) -> object:
    """Import a public name's module when the name is first used."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'labelling' has no attribute {name!r}")
    module, attribute = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else (_EXPORTS[name], name)
    return getattr(importlib.import_module(module), attribute)
