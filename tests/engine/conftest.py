"""Fixtures of the engine's tests: one torch thread, the real SmolLM2 tokenizer, and each tiny random architecture."""

from __future__ import annotations

import pytest
import torch

from tests.support.tiny_models import smollm2_tokenizer, tiny_gpt_bigcode, tiny_llama

BUILDERS = {"llama": tiny_llama, "gpt_bigcode": tiny_gpt_bigcode}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core box OpenMP spinning makes each op ~1000x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def model(request):
    return BUILDERS[request.param]()
