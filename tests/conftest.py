"""Shared fixtures: the bundled schema and corpus, a tiny random LM with the real tokenizer, the real MiniLM embedder."""

from __future__ import annotations

import os

import pytest
import torch

from labelling.corpus import bundled_dialogues
from labelling.schema import Schema

pytest_plugins = ("tests.support.mongo_fixture",)  # mongo_uri and connected, for every test

# Two torch threads on a shared 2-core machine thrash when anything else runs; one is faster and steadier.
torch.set_num_threads(1)

UNIT_TIER = "not slow and not integration and not chaos"  # pyproject's default -m
MAX_WORKERS = 4  # each worker loads its own tiny models and embedder; past 4 the start-up outweighs the gain
PARALLEL_TIERS = (UNIT_TIER, "slow")  # the tiers xdist may spread over the cores (the Makefile runs each whole)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many pytest-xdist workers ``-n auto`` (pyproject's addopts) starts: one per core, up to 4, for the whole
    unit tier and the whole slow tier, whose tests are independent (each module gets its own nx-27017 on a free port
    and its own temporary folders; `--dist loadfile` keeps a file's tests on one worker); none (one process) for the
    integration and chaos tiers, which share RabbitMQ and real services and time themselves, and for a run of named
    files or tests, where starting workers costs more than it saves."""
    whole_tier = config.getoption("markexpr") in PARALLEL_TIERS and config.args_source == pytest.Config.ArgsSource.TESTPATHS
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, MAX_WORKERS) if whole_tier and cores > 1 else 0


@pytest.fixture(scope="session")
def schema() -> Schema:
    return Schema.load()


@pytest.fixture(scope="session")
def dev_dialogues(schema):
    """The bundled MultiWOZ 2.1 dev set as dialogues of turns (with gold), read once per process (the benchmarks'
    slices in the same worker share the read)."""
    return bundled_dialogues(schema)


@pytest.fixture(scope="session")
def tiny_lm():
    """A 2-layer random Llama behind the real SmolLM2 tokenizer: fast, and emits the garbage real models sometimes do."""
    from labelling.engine.lm import LanguageModel
    from tests.support.tiny_models import smollm2_tokenizer, tiny_llama

    model = tiny_llama()
    model.config.max_position_embeddings = 8192  # RoPE has no table to outgrow; prompts carry a ~2k-token preamble
    return LanguageModel.from_model(model, smollm2_tokenizer())


@pytest.fixture(scope="session")
def embedder():
    from labelling.method.retrieval import Embedder

    return Embedder.load("minilm")


@pytest.fixture
def fast_job():
    """cpu-small settings shrunk so a tiny model labels a turn in well under a second."""
    from tests.support.partition_worker import tiny_job

    return tiny_job()
