"""Tiny randomly initialised causal LMs (Llama and GPTBigCode) sharing the real SmolLM2 tokenizer, for fast LM tests.

Weights are drawn with a large init scale so outputs depend strongly on context and positions: a wrong mask or
position id then moves log-probs by far more than the 1e-4 tolerance the equivalence tests use.
"""

from __future__ import annotations

from functools import cache

import torch
from transformers import AutoTokenizer, GPTBigCodeConfig, GPTBigCodeForCausalLM, LlamaConfig, LlamaForCausalLM

from labelling.engine import model_files

INIT_SCALE = 0.2


@cache
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer (built once from the embedded GGUF, ~6 s, then cached on disk)."""
    return AutoTokenizer.from_pretrained(model_files.smollm2_tokenizer_dir())


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama (SmolLM2's architecture) with grouped-query attention and RoPE positions."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer()),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=INIT_SCALE,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt_bigcode(seed: int = 0) -> GPTBigCodeForCausalLM:
    """A 2-layer GPTBigCode (StarCoder's architecture) with multi-query attention and learned positions."""
    torch.manual_seed(seed)
    config = GPTBigCodeConfig(
        vocab_size=len(smollm2_tokenizer()),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=2048,
        multi_query=True,
        initializer_range=INIT_SCALE,
        bos_token_id=smollm2_tokenizer().bos_token_id,
        eos_token_id=smollm2_tokenizer().eos_token_id,
    )
    return GPTBigCodeForCausalLM(config).eval()
