"""``labelling``: self-label task-oriented dialogues (dialogue states and system acts) with a language model.

Layers, each importing only those below it (``tests/test_layers.py`` holds them; the package never imports Celery or
the CLI)::

    cli/  tasks/       outside the package: the Typer app, one module per command; Celery tasks and the run chord
    labelling/fleet/   a group's life against the MongoDB store: store, mongo_server, groups, launches, runner, export, ...
    labelling/bench/   benchmarks: speed (plain against optimised), quality (held-out slice), tables  -- beside fleet
    labelling/method/  the labelling method: labeller, prompts, retrieval, parsing, canonical, channel, grammar, build
    labelling/engine/  the language model: lm (sample and score), kv_cache, sampling, lookup, loading, memory, ...
    labelling/         the shared vocabulary: config, settings, errors, schema, states, acts, turns, records, corpus

In a notebook, no broker or database is needed::

    import labelling

    job = labelling.load_config("job.yaml")            # or load_config(profile="starcoder"); default "cpu-qwen"
    schema = job.load_schema()
    dialogues = labelling.read_corpus("data/multiwoz22/dev", schema)
    labeller = labelling.build_labeller(job, schema)    # loads the LMs and embedders once per process
    labels = labeller.label([turn for dialogue in dialogues[:5] for turn in dialogue])
    labels[0].state, labels[0].acts, labels[0].flags    # TurnLabel records

Words, one meaning each: a *split* is a named slice of a corpus; a *partition* is one split of a group as a stored unit
of work; *shuffle groups* are the seeded groups of dialogues inside a split (``data_num_partitions``); a *launch* is one
``labelling run`` (its ``run_id`` names the Celery tasks); an *attempt* is one claim of a partition (``attempt_id``;
the manifest calls it ``run_id``); the *pool* is the example pool (Celery's process pool appears only as
``worker --pool``); *seed* is the RNG seed, and the *seed split* the split labelled first, alone.

The names below are imported on first use (PEP 562), so ``import labelling`` stays light and loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "JobConfig": "labelling.config",
    "load_config": ("labelling.config", "load"),
    "build_labeller": "labelling.method.build",
    "PartitionLabeller": "labelling.method.labeller",
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
    from labelling.method.build import build_labeller
    from labelling.method.labeller import PartitionLabeller
    from labelling.records import ModuleOutput, TurnLabel
    from labelling.schema import Schema
    from labelling.turns import Turn


def __getattr__(name: str) -> object:
    """Import a public name's module when the name is first used."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'labelling' has no attribute {name!r}")
    module, attribute = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else (_EXPORTS[name], name)
    return getattr(importlib.import_module(module), attribute)
