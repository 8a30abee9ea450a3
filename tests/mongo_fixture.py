"""A real nx-27017 server for the store tests, started once per session on a free port with a temporary data folder.

Import ``mongo_uri`` (and ``connected``) into a test module to use them. ``LABELLING_MONGODB_URI`` points at the server
for the session, so child processes and CLI commands find it too. Helpers build small corpora and groups with
unique names, so tests sharing the server never see each other's data by accident.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence

import pytest

from labelling import mongo_server, store
from labelling.config import JobConfig
from labelling.corpus import Dialogue, partition
from labelling.schema import Schema

DATABASE = "labelling_test"


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory) -> Iterator[str]:
    """The URI of a fresh nx-27017 (its own state folder), exported as LABELLING_MONGODB_URI; stopped at the end."""
    server = mongo_server.ensure_server(tmp_path_factory.mktemp("state"))
    assert server.started
    uri = f"{server.uri}/{DATABASE}"
    previous = os.environ.get(mongo_server.URI_ENV)
    os.environ[mongo_server.URI_ENV] = uri
    try:
        store.connect(uri)
        yield uri
    finally:
        store.disconnect()
        server.stop()
        if previous is None:
            os.environ.pop(mongo_server.URI_ENV, None)
        else:
            os.environ[mongo_server.URI_ENV] = previous


@pytest.fixture
def connected(mongo_uri) -> str:
    """Makes sure the store is connected to the session server (a test may have pointed it elsewhere)."""
    store.connect(mongo_uri)
    return mongo_uri


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def short_dialogues(dialogues: Sequence[Dialogue], count: int, turns: int) -> list[Dialogue]:
    """The first ``count`` dialogues with exactly ``turns`` turns: small partitions with a known number of waves."""
    chosen = [d for d in dialogues if len(d) == turns][:count]
    assert len(chosen) == count, f"the corpus has fewer than {count} dialogues of {turns} turns"
    return chosen


def ingest_small(dialogues: Sequence[Dialogue], schema: Schema, split_size: int) -> tuple[str, list[str]]:
    """Ingest ``dialogues`` as a new corpus cut into splits of ``split_size``; returns (corpus, split names)."""
    corpus = unique("corpus")
    splits = partition(dialogues, split_size)
    store.ingest_corpus(corpus, splits, schema)
    return corpus, list(splits)


def new_group(corpus: str, config: JobConfig) -> str:
    """A new group over ``corpus`` with ``config``."""
    group = unique("group")
    store.create_group(group, corpus, config)
    return group
