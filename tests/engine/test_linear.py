"""Few-row linear layers (labelling/engine/linear.py): the numbers of torch's `linear`, switched on only where asked."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from labelling.engine import linear
from labelling.engine.generation import Prompt, SamplingParams
from labelling.engine.lm import LanguageModel
from labelling.errors import SettingError
from tests.support.tiny_models import smollm2_tokenizer, tiny_llama


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 16, 17, 40])
@pytest.mark.parametrize("bias", [False, True])
def test_few_row_linear_gives_torchs_numbers(rows, bias):
    torch.manual_seed(rows)
    weight, x = torch.randn(300, 96), torch.randn(rows, 96)
    b = torch.randn(300) if bias else None
    want = torch.nn.functional.linear(x, weight, b)
    got = linear.few_row_linear(x, weight, b)
    assert got.shape == want.shape and got.is_contiguous()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    if rows > linear.MAX_ROWS:  # wide inputs are torch's own layer: the same bits
        assert torch.equal(got, want)


def test_leading_dimensions_are_kept():
    weight, x = torch.randn(50, 8), torch.randn(3, 2, 8)  # a pass of 3 rows x 2 tokens
    got = linear.few_row_linear(x, weight)
    assert got.shape == (3, 2, 50)
    assert torch.allclose(got, torch.nn.functional.linear(x, weight), atol=1e-5)


def _counting(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = linear.few_row_linear
    monkeypatch.setattr(linear, "few_row_linear", lambda x, *a: calls.append(x.reshape(-1, x.shape[-1]).shape[0]) or real(x, *a))
    return calls


def test_routed_layers_switch_per_block_and_per_thread(monkeypatch):
    calls = _counting(monkeypatch)
    layer = torch.nn.Linear(8, 4)
    linear.use_few_row_linear(layer)
    linear.use_few_row_linear(layer)  # idempotent: routed once
    x = torch.randn(2, 8)
    layer(x)
    assert calls == []  # off outside a block
    with linear.few_rows(True):
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-6)
        thread = threading.Thread(target=layer, args=(x,))  # another thread is not switched on by this block
        thread.start()
        thread.join()
        with linear.few_rows(False):
            layer(x)
        layer(x)  # the inner block restored the outer switch
    assert calls == [2, 2]


def test_a_deep_copy_of_a_routed_layer_uses_its_own_weights():
    layer = torch.nn.Linear(8, 4)
    linear.use_few_row_linear(layer)
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.weight.zero_()
        twin.bias.zero_()
    x = torch.randn(2, 8)
    with linear.few_rows(True):
        assert torch.equal(twin(x), torch.zeros(2, 4)) and layer(x).abs().sum() > 0


def test_only_plain_fp32_cpu_layers_are_routed():
    class Subclass(torch.nn.Linear):  # as quantised layers are
        pass

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Subclass(4, 4), torch.nn.Linear(4, 4).to(torch.bfloat16))
    linear.use_few_row_linear(model)
    assert ["forward" in vars(m) for m in model] == [True, False, False]


def _sample(lm: LanguageModel) -> list:
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=6, seed=4)
    return lm.sample([Prompt("def f():\n", "    return"), Prompt("def f():\n", "    x =")], params)


def test_the_optimised_engine_uses_it_and_the_plain_path_does_not(monkeypatch):
    calls = _counting(monkeypatch)
    model, tokenizer = tiny_llama(), smollm2_tokenizer()
    plain = LanguageModel(model, tokenizer, reuse_prefix=False)
    assert not plain.few_row_linear
    want = _sample(plain)
    assert calls == []
    fast = LanguageModel(model, tokenizer)
    assert fast.few_row_linear
    got = _sample(fast)
    assert calls and max(calls) <= linear.MAX_ROWS  # decode passes went through it
    assert [[s.text for s in row] for row in got] == [[s.text for s in row] for row in want]
    for g, w in zip(sum(got, []), sum(want, []), strict=True):
        assert g.logprob == pytest.approx(w.logprob, abs=1e-4)


def test_the_setting_turns_it_off(monkeypatch):
    monkeypatch.setenv("LABELLING_FEW_ROW_LINEAR", "0")
    assert not LanguageModel(tiny_llama(), smollm2_tokenizer()).few_row_linear
    monkeypatch.setenv("LABELLING_FEW_ROW_LINEAR", "maybe")
    with pytest.raises(SettingError, match="LABELLING_FEW_ROW_LINEAR"):
        LanguageModel(tiny_llama(), smollm2_tokenizer())
