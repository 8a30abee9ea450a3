"""Shared fixtures: the bundled schema and corpus, a tiny random LM with the real tokenizer, the real MiniLM embedder."""

from __future__ import annotations

import pytest
import torch

from labelling.corpus import read_corpus
from labelling.data import BUNDLED_CORPUS
from labelling.schema import Schema

pytest_plugins = ("tests.support.mongo_fixture",)  # mongo_uri and connected, for every test

# Two torch threads on a shared 2-core machine thrash when anything else runs; one is faster and steadier.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def schema() -> Schema:
    return Schema.load()


@pytest.fixture(scope="session")
def dev_dialogues(schema):
    """The bundled MultiWOZ 2.1 dev set as dialogues of turns (with gold)."""
    return read_corpus(BUNDLED_CORPUS, schema)


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
