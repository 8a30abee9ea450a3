"""A labeller around a given LM and embedder, with the job's retriever settings (for tests that need a real one)."""

from __future__ import annotations

from labelling.method.labeller import PartitionLabeller
from labelling.method.retrieval import build_index


def make_labeller(job, schema, lm, embedder) -> PartitionLabeller:
    def index(kind, module):
        r = module.retriever
        return build_index(embedder, kind, k=r.k_examples, minimum_distinct=2, warmup=r.example_warmup)

    return PartitionLabeller(job, schema, lm, lm, index("dst", job.dst), index("act", job.act_tag))
