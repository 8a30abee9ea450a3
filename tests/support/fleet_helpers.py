"""Helpers for tests that drive the fleet: a tiny model folder, job files, ingested corpora, short dialogues."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from labelling.corpus import cut_into_splits
from labelling.fleet import store

LABELLING = Path(sys.executable).with_name("labelling")


def save_tiny_model(folder: Path) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer saved as a model folder: what a job config can name as its LM."""
    from tests.support.tiny_models import smollm2_tokenizer, tiny_llama

    model = tiny_llama()
    model.config.max_position_embeddings = 8192  # as in conftest: prompts carry a ~2k-token preamble
    model.save_pretrained(folder)
    smollm2_tokenizer().save_pretrained(folder)
    return folder


def write_job(job, model_dir: Path, path: Path, split: str | None = None) -> Path:
    """Write ``job`` as a reference-style job file whose two modules use the model in ``model_dir``."""
    data = job.to_dict()
    for module in ("dst", "act_tag"):
        data[module]["model"]["model_name_or_path"] = str(model_dir)
    data["data"]["eval_set_split_name"] = split
    path.write_text(json.dumps(data, indent=1))
    return path


def ingest_first(corpus: str, dialogues, schema, count: int, size: int) -> dict:
    """Store the first ``count`` dialogues as ``corpus``, in partitions of ``size``."""
    splits = cut_into_splits(dialogues[:count], size)
    store.ingest_corpus(corpus, splits, schema)
    return splits


def shortest(dialogues, count: int) -> list:
    """The ``count`` shortest of the first 100 dialogues, in corpus order: the same code paths, a fraction of the turns."""
    chosen = {id(d) for d in sorted(dialogues[:100], key=len)[:count]}
    return [d for d in dialogues[:100] if id(d) in chosen]
