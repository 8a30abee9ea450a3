"""Seeding a partition's example indexes from stored labels: re-embedding every label (before) against reading the
vectors stored with it (after), in one run on one store.

Starts a real nx-27017 in a temporary folder (as the tests do), stores N labels (the bundled MultiWOZ 2.1 dev turns
with their gold state and acts as the predictions; beyond its 7,365 turns, its dialogues again under new ids with
" please" appended to each user utterance, so every text is new), then seeds fresh indexes the way a partition start
does (`store.pool_examples_and_vectors` then `PartitionLabeller.add_examples`): first without the stored vectors, then
with them. Reports seconds for each, how many items each embedded, and whether both retrieve the same examples.

    .venv/bin/python benchmarks/seeding.py --labels 10000 --threads 2 --out benchmarks/results/seeding.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from labelling import config as job_config
from labelling.corpus import cut_into_splits, read_corpus
from labelling.data import BUNDLED_CORPUS
from labelling.fleet import mongo_server, store
from labelling.method import build
from labelling.method.labeller import PartitionLabeller
from labelling.records import Candidate, ModuleOutput, TurnLabel
from labelling.schema import Schema
from labelling.states import compute_delta
from labelling.turns import Turn

QUERIES = 200  # turns whose retrieved examples are compared between the two seedings


def dialogues_of(count: int, schema: Schema) -> list[list[Turn]]:
    """Dialogues holding at least `count` turns, cut to exactly `count`: the dev set, then renamed copies as needed."""
    dev = read_corpus(BUNDLED_CORPUS, schema)
    out, total, copy = [], 0, 0
    while total < count:
        for dialogue in dev:
            if copy:
                dialogue = [_copied(t, copy) for t in dialogue]
            dialogue = dialogue[: count - total]
            out.append(dialogue)
            total += len(dialogue)
            if total == count:
                break
        copy += 1
    return out


def _copied(turn: Turn, copy: int) -> Turn:
    return replace(
        turn,
        dialogue_id=f"{turn.dialogue_id}~{copy}",
        user_utterances=[u + " please" * copy for u in turn.user_utterances],
    )


def gold_labels(turns: list[Turn]) -> list[TurnLabel]:
    """The turns' gold state and acts as if predicted, with the evidence fields filled as a real label's are."""
    labels, prior = [], {}
    for turn in turns:
        prior = prior if turn.turn_id else {}
        state = turn.slot_values or {}
        output = ModuleOutput("x", [Candidate("x", ["x"], -1.0, -2.0)], [])
        labels.append(
            TurnLabel(
                turn.dialogue_id,
                turn.turn_id,
                prior,
                state,
                compute_delta(prior, state),
                turn.system_response_acts or [],
                output,
                output,
            )
        )
        prior = state
    return labels


def fresh_labeller(job, schema: Schema) -> PartitionLabeller:
    """A labeller with empty indexes, as a partition start builds one (no LM is needed to seed)."""
    indexes = (build.example_index(job.dst, "dst"), build.example_index(job.act_tag, "act"))
    return PartitionLabeller(job, schema, None, None, *indexes)


def seed(group: str, splits: list[str], job, schema: Schema, stored: bool) -> tuple[PartitionLabeller, dict]:
    """Seed a fresh labeller from the group's labels; the timings of the store read and of the index build."""
    labeller = fresh_labeller(job, schema)
    started = time.perf_counter()
    examples, vectors = store.pool_examples_and_vectors(group, splits)
    read = time.perf_counter()
    embedded = labeller.add_examples(examples, vectors if stored else None)
    done = time.perf_counter()
    figures = {"read_s": read - started, "index_s": done - read, "seconds": done - started, "embedded": embedded}
    return labeller, figures


def main() -> None:
    """Run the measurement and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/seeding.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    schema, job = Schema.load(), job_config.load(profile="cpu-small")
    with tempfile.TemporaryDirectory() as folder:
        server = mongo_server.ensure_server(Path(folder))
        try:
            store.connect(f"{server.uri}/seeding_bench")
            report = measure(args.labels, job, schema)
        finally:
            store.disconnect()
            server.stop()
    report["threads"] = args.threads
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


def measure(count: int, job, schema: Schema) -> dict:
    """Store `count` labels, seed without and then with their stored vectors, and compare what each retrieves."""
    splits = cut_into_splits(dialogues_of(count, schema), 50)
    store.ingest_corpus("seeding", splits, schema)
    store.create_group("seeding", "seeding", job)
    claims = {name: store.claim_partition("seeding", name, "bench", lease_s=86_400) for name in splits}
    labels = {name: gold_labels(turns) for name, turns in splits.items()}
    started = time.perf_counter()
    for name, claim in claims.items():
        store.write_labels(claim, labels[name], batch=0, seq_start=0)
    write_s = time.perf_counter() - started
    names = list(splits)
    before, before_figures = seed("seeding", names, job, schema, stored=False)
    # The vectors a labeller stores with each label: what its indexes embedded for that turn.
    for name, claim in claims.items():
        keys = [lab.key for lab in labels[name]]
        found = [m.index.stored_vectors(keys) for m in before.modules]
        vectors = [{"dst": d, "act": a} for d, a in zip(*found, strict=True)]
        store.write_labels(claim, labels[name], batch=0, seq_start=0, vectors=vectors)
    after, after_figures = seed("seeding", names, job, schema, stored=True)
    queries = [t for turns in splits.values() for t in turns][:: max(1, count // QUERIES)][:QUERIES]
    same = {}
    for old, new in zip(before.modules, after.modules, strict=True):
        pairs = zip(old.index.search_batch(queries), new.index.search_batch(queries), strict=True)
        same[old.name] = sum(a == b for a, b in pairs) / len(queries)
    return {
        "labels": sum(map(len, splits.values())),
        "partitions": len(splits),
        "embedder": job.dst.retriever.model_name_or_path,
        "write_labels_s": write_s,
        "before": before_figures,
        "after": after_figures,
        "speedup": before_figures["seconds"] / after_figures["seconds"],
        "same_examples": same,
        "queries": len(queries),
    }


if __name__ == "__main__":
    main()
