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

from labelling import settings
from labelling.acts import Act, Entity
from labelling.config import JobConfig
from labelling.corpus import Dialogue, cut_into_splits
from labelling.fleet import mongo_server, store
from labelling.method.metrics import MetricsAccumulator
from labelling.records import Candidate, ModuleOutput, TurnLabel
from labelling.schema import Schema
from labelling.states import State, compute_delta
from labelling.turns import Turn

DATABASE = "labelling_test"


@pytest.fixture(scope="module")
def mongo_uri(tmp_path_factory) -> Iterator[str]:
    """The URI of a fresh nx-27017 (its own state folder) for one test module, exported as LABELLING_MONGODB_URI and
    stopped after the module: a module that stops or breaks its server (tests/fleet/test_store.py) leaves the others'."""
    server = mongo_server.ensure_server(tmp_path_factory.mktemp("state"))
    assert server.started
    uri = f"{server.uri}/{DATABASE}"
    previous = os.environ.get(settings.MONGODB_URI.name)
    os.environ[settings.MONGODB_URI.name] = uri
    try:
        store.connect(uri)
        yield uri
    finally:
        store.disconnect()
        server.stop()
        if previous is None:
            os.environ.pop(settings.MONGODB_URI.name, None)
        else:
            os.environ[settings.MONGODB_URI.name] = previous


@pytest.fixture
def connected(mongo_uri) -> str:
    """Makes sure the store is connected to the module's server (a test may have pointed it elsewhere)."""
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
    splits = cut_into_splits(dialogues, split_size)
    store.ingest_corpus(corpus, splits, schema)
    return corpus, list(splits)


def new_group(corpus: str, config: JobConfig) -> str:
    """A new group over ``corpus`` with ``config``."""
    group = unique("group")
    store.create_group(group, corpus, config)
    return group


def scripted_labels(turns: Sequence[Turn]) -> tuple[list[TurnLabel], MetricsAccumulator]:
    """Labels shaped like a real run's (a taxi time per turn, one Inform act, one candidate), scored against the
    turns' gold as the labeller scores them; with no LM involved they cost nothing and are easy to recognise."""
    metrics, labels, prior = MetricsAccumulator(), [], {}
    for turn in turns:  # corpus order: each dialogue's turns in sequence
        prior = prior if turn.turn_id else {}
        time = f"{turn.turn_id:02d}:00"
        state: State = {"taxi": {"leave at": time}}
        chosen = f"taxi(leave_at='{time}')"
        output = ModuleOutput(chosen, [Candidate(chosen, [chosen + " # sampled"], -1.5, -3.0)], [("MUL0001.json", 0)])
        acts = [Act("Inform", entity=Entity("Taxi", (("leave_at", time),)))]
        label = TurnLabel(turn.dialogue_id, turn.turn_id, prior, state, compute_delta(prior, state), acts, output, output)
        label.metrics = metrics.add_turn(turn, label.state, label.delta, label.acts)
        labels.append(label)
        prior = state
    return labels, metrics


def complete_with_scripted_labels(group: str, split: str) -> MetricsAccumulator:
    """Label a partition with :func:`scripted_labels` through the store's claim, write and complete; returns its metrics."""
    claim = store.claim_partition(group, split, "scripted")
    labels, metrics = scripted_labels(store.load_turns(claim.corpus, split))
    store.write_labels(claim, labels, batch=0, seq_start=0)
    store.complete_partition(claim, metrics.to_dict())
    return metrics
