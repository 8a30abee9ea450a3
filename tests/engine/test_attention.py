"""Packed grouped-query attention (labelling/engine/attention.py) gives transformers' SDPA results, on a padded cache."""

from __future__ import annotations

import pytest
import torch

from labelling.engine import attention
from tests.support.tiny_models import tiny_gpt_bigcode, tiny_llama


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _passes(model, ids, mask, new, mask_after):
    """Logits of `new` fed on a cache of `ids` (positions count real tokens only, as the engine feeds them)."""
    positions = (mask_after.cumsum(1) - 1).clamp(min=0)
    with torch.inference_mode():
        first = model(input_ids=ids, attention_mask=mask, position_ids=positions[:, : ids.shape[1]], use_cache=True)
        return model(
            input_ids=new, attention_mask=mask_after, position_ids=positions[:, ids.shape[1] :], cache=first.cache, use_cache=True
        ).logits


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt_bigcode], ids=["gqa", "mqa"])
@pytest.mark.parametrize("width", [1, 2, 5, 16, 17])
@pytest.mark.parametrize("native", [True, False], ids=["cpu-native", "gpu-packing"])
def test_packed_attention_matches_transformers_sdpa(monkeypatch, build, width, native):
    if not native:  # the GPU's way (short passes folded into the query, long ones to transformers), run on the CPU
        monkeypatch.setattr(attention, "NATIVE_GQA_DEVICES", ())
    stock, packed = build(), build()
    attention.use_packed_attention(packed)
    assert (stock.config._attn_implementation, packed.config._attn_implementation) == ("sdpa", attention.NAME)
    handed_on = []  # query lengths the packed function handed to transformers' own SDPA path
    stock_sdpa = attention.sdpa_attention_forward
    monkeypatch.setattr(
        attention, "sdpa_attention_forward", lambda *a, **k: handed_on.append(a[1].shape[2]) or stock_sdpa(*a, **k)
    )
    grouped = []  # query lengths torch's SDPA took with grouped heads itself (enable_gqa)
    stock_fn = torch.nn.functional.scaled_dot_product_attention

    def spying_sdpa(query, *args, **kwargs):
        if kwargs.get("enable_gqa"):
            grouped.append(query.shape[2])
        return stock_fn(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spying_sdpa)
    torch.manual_seed(1)
    ids, new = torch.randint(5, 1000, (3, 20)), torch.randint(5, 1000, (3, width))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, 15:], mask[2, 3:6] = 0, 0  # right padding, and a hole left by a rejected guess
    mask_after = torch.cat([mask, torch.ones(3, width, dtype=torch.long)], 1)
    mask_after[0, -1] = 0  # a row that feeds padding in this pass
    want, got = _passes(stock, ids, mask, new, mask_after), _passes(packed, ids, mask, new, mask_after)
    assert torch.allclose(got[mask_after[:, 20:].bool()], want[mask_after[:, 20:].bool()], atol=1e-5)
    if native:  # only single-token passes go to transformers' path; long ones (the prefix, 17) to torch's grouped SDPA
        assert set(handed_on) == ({1} if width == 1 else set())
        assert 20 in grouped and (width in grouped) == (width > attention.MAX_PACKED_QUERY)
    else:  # the prefix (20 tokens) goes there, and the pass itself when 1 or more than 16 tokens wide
        assert (width in handed_on) == (width == 1 or width > attention.MAX_PACKED_QUERY) and 20 in handed_on


def test_models_on_other_attention_are_left_alone():
    model = tiny_llama()
    model.set_attn_implementation("eager")
    attention.use_packed_attention(model)
    assert model.config._attn_implementation == "eager"


def test_a_single_key_value_head_is_not_copied_per_query_head():
    """A long masked pass on a GPU (prefill, a scoring pass of continuations) goes to transformers' SDPA path, whose
    `repeat_kv` hands a multi-query model's one key/value head to every query head as a stride-0 view of the cache:
    read once, not copied 48 times (StarCoder). Guards a transformers upgrade; whether CUDA's kernel copies it is a
    GPU check (tests/engine/test_gpu.py)."""
    from transformers.integrations.sdpa_attention import repeat_kv

    key = torch.randn(3, 1, 20, 16)
    expanded = repeat_kv(key, 48)
    assert expanded.shape == (3, 48, 20, 16) and expanded.stride(1) == 0 and expanded.data_ptr() == key.data_ptr()
