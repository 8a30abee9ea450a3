"""How many tokens of KV cache one forward pass may hold: the batch budget sized from free device memory.

Pure arithmetic on a model config and memory figures (no torch), so it is unit-tested on real configs with made-up
free-memory numbers. `labelling.lm` feeds it `torch.cuda.mem_get_info()` after the weights are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_BATCH_TOKENS = 256  # the smallest budget a config may set, and the floor of the out-of-memory back-off
CPU_BATCH_TOKENS = 16384  # the budget on a CPU, where memory is not the limit and larger passes gain nothing
MARGIN_SHARE, MIN_MARGIN_BYTES = 0.05, 1 << 30  # kept free for logits, the embedder, allocator slack


@dataclass(frozen=True)
class KVShape:
    """The attention shape that fixes KV-cache size: layers, key/value heads, query heads, head size, bytes per value."""

    layers: int
    kv_heads: int
    heads: int
    head_dim: int
    dtype_bytes: int

    @classmethod
    def of(cls, config: object, dtype_bytes: int) -> KVShape:
        """Read the shape from a Hugging Face model config (Llama-style names, GPTBigCode's `multi_query`)."""
        layers = int(config.num_hidden_layers)
        heads = int(config.num_attention_heads)
        kv_heads = getattr(config, "num_key_value_heads", None) or (1 if getattr(config, "multi_query", False) else heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(layers, int(kv_heads), heads, int(head_dim), dtype_bytes)

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes one cached token takes: layers x KV heads x head size x 2 (key and value) x bytes per value."""
        return self.layers * self.kv_heads * self.head_dim * 2 * self.dtype_bytes

    @property
    def peak_bytes_per_token(self) -> int:
        """Bytes one budget token can need at the peak of a pass, which is what the budget divides free memory by.

        Twice the KV (a batch's cache is copied when rows are expanded or leave it, so old and new coexist), plus one
        layer's keys and values repeated for every query head: masked prefill with grouped or multi-query attention
        materialises that (transformers' SDPA path with a padding mask), one layer at a time.
        """
        return 2 * self.kv_bytes_per_token + 2 * self.heads * self.head_dim * self.dtype_bytes


def margin_bytes(total_bytes: int) -> int:
    """Memory left unbudgeted: 5% of the device, at least 1 GiB."""
    return max(MIN_MARGIN_BYTES, int(MARGIN_SHARE * total_bytes))


def batch_token_budget(free_bytes: int, total_bytes: int, shape: KVShape) -> int:
    """Tokens (rows x columns) per forward pass that fit in `free_bytes` after the margin; 0 when nothing fits."""
    usable = free_bytes - margin_bytes(total_bytes)
    return max(0, usable // shape.peak_bytes_per_token)
