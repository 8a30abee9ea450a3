"""How much one forward pass may hold, sized from free device memory: the batch budget.

Two limits share the memory left after the weights: tokens of KV cache (rows x columns, what decoding holds) and
new tokens fed in one pass (what prefill and scoring hold: each layer's activations and, when scored, the logits).
Pure arithmetic on a model config and memory figures (no torch), so it is unit-tested on real configs with made-up
free-memory numbers. `labelling.engine.lm` feeds it `torch.cuda.mem_get_info()` after the weights are loaded
(`loading.device_memory`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from labelling.errors import ModelError

MIN_BATCH_TOKENS = 256  # the smallest budget a config may set, and the floor of the out-of-memory back-off
CPU_BATCH_TOKENS = 16384  # the budget on a CPU, where memory is not the limit and larger passes gain nothing
MARGIN_SHARE, MIN_MARGIN_BYTES = 0.05, 1 << 30  # kept free for the embedder, allocator slack
# The share of the usable memory for the activations of new tokens; the rest holds KV. Decoding feeds one new token
# per row, so it needs little of this share; prefill at this share still feeds tens of thousands of tokens per pass.
NEW_TOKEN_SHARE = 0.25
OOM_HINT = (
    "use quantization: 8bit (profile starcoder-8bit), a card with more memory, one pool process per GPU, "
    "or fewer retrieved examples (shorter prompts)"
)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KVShape:
    """The model shape that fixes a pass's memory: layers, key/value heads, query heads, head size, bytes per value,
    and for new tokens the residual width, the MLP width and the vocabulary."""

    layers: int
    kv_heads: int
    heads: int
    head_dim: int
    dtype_bytes: int
    hidden: int
    inner: int
    vocab: int

    @classmethod
    def of(cls, config: object, dtype_bytes: int) -> KVShape:
        """Read the shape from a Hugging Face model config (Llama-style names, GPTBigCode's `multi_query`, `n_inner`)."""
        layers = int(config.num_hidden_layers)
        heads = int(config.num_attention_heads)
        kv_heads = getattr(config, "num_key_value_heads", None) or (1 if getattr(config, "multi_query", False) else heads)
        hidden = int(config.hidden_size)
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
        return cls(layers, int(kv_heads), heads, int(head_dim), dtype_bytes, hidden, int(inner), int(config.vocab_size))

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

    @property
    def new_token_bytes(self) -> int:
        """Bytes one token fed in a pass can need at the peak of one layer: the residual stream, the normed input,
        queries, keys and values, the attention output, and three MLP-wide tensors (up, activation, gate or product)."""
        qkv = self.heads * self.head_dim + 2 * self.kv_heads * self.head_dim
        return (4 * self.hidden + qkv + 3 * self.inner) * self.dtype_bytes

    @property
    def scored_token_bytes(self) -> int:
        """Bytes one token whose logits are kept can need: its activations, plus logits in the model's dtype, their
        fp32 copy and two fp32 temporaries of the log-softmax (`LanguageModel._score_rows`)."""
        return self.new_token_bytes + self.vocab * (self.dtype_bytes + 8)


@dataclass(frozen=True)
class Budget:
    """What one forward pass may hold: `tokens` of KV (rows x columns) and `new_bytes` for the tokens it feeds."""

    tokens: int
    new_bytes: int


def margin_bytes(total_bytes: int) -> int:
    """Memory left unbudgeted: 5% of the device, at least 1 GiB."""
    return max(MIN_MARGIN_BYTES, int(MARGIN_SHARE * total_bytes))


def usable_bytes(free_bytes: int, total_bytes: int) -> int:
    """Free memory less the margin; 0 when the margin takes it all."""
    return max(0, free_bytes - margin_bytes(total_bytes))


def batch_token_budget(free_bytes: int, total_bytes: int, shape: KVShape) -> int:
    """Tokens (rows x columns) per forward pass that fit in the KV share of `free_bytes`; 0 when nothing fits."""
    return pass_budget(free_bytes, total_bytes, shape).tokens


def pass_budget(free_bytes: int, total_bytes: int, shape: KVShape) -> Budget:
    """Both limits of a pass: KV tokens from one share of the usable memory, new-token bytes from the other."""
    usable = usable_bytes(free_bytes, total_bytes)
    return Budget(int(usable * (1 - NEW_TOKEN_SHARE)) // shape.peak_bytes_per_token, int(usable * NEW_TOKEN_SHARE))


def new_tokens_per_pass(new_bytes: int, rows: int, bytes_per_token: int) -> int:
    """Columns of new tokens `rows` rows may feed in one pass within `new_bytes` (at least one: a pass must move on)."""
    return max(1, new_bytes // max(1, rows * bytes_per_token))


def sized_budget(
    configured: int | None, figures: tuple[int, int] | None, shape: KVShape | None, device: str
) -> tuple[int, int | None]:
    """The batch budget (`configured`, else sized from memory) and the bytes new tokens may take in one pass.

    `figures` are (free, total) device bytes after loading, None on a CPU: there the budget is `configured` or
    `CPU_BATCH_TOKENS` and new tokens have no limit. A device too full for the smallest batch is an error, unless the
    config set the budget itself.
    """
    if figures is None:
        return configured or CPU_BATCH_TOKENS, None
    free, total = figures
    budget = pass_budget(free, total, shape)
    if configured is None and budget.tokens < MIN_BATCH_TOKENS:
        raise ModelError(
            f"{free / 2**30:.1f} GiB of {total / 2**30:.1f} GiB left on {device} after loading: no room for a batch",
            hint=OOM_HINT,
        )
    tokens = configured or budget.tokens
    log.info(
        "batch budget %d tokens, %.1f GiB for new tokens: %.1f GiB free on %s, %d bytes per token at the peak (KV %d)",
        tokens, budget.new_bytes / 2**30, free / 2**30, device, shape.peak_bytes_per_token, shape.kv_bytes_per_token,
    )  # fmt: skip
    return tokens, budget.new_bytes


class BatchBudget:
    """One engine's batch budget: tokens (rows x columns) per forward pass and the bytes the tokens fed in one pass
    may take, as configured or sized from the device memory left after loading, and halved after each out-of-memory
    retry. Sized lazily, on first use, so that every model a job needs is loaded before the first one measures."""

    def __init__(
        self, configured: int | None, device: str, measure: Callable[[], tuple[int, int] | None], shape: Callable[[], KVShape]
    ):
        self.configured = configured  # as configured, before sizing or back-off
        self.device = device
        self._measure, self._shape = measure, shape  # (free, total) device bytes, None on a CPU; the model's KV shape
        self._tokens, self._new_bytes, self._sized = configured, None, False
        self.backoffs = 0

    @property
    def tokens(self) -> int:
        """Tokens (rows x columns) per forward pass."""
        self._size()
        return self._tokens

    @tokens.setter
    def tokens(self, value: int | None) -> None:
        self._tokens = value

    @property
    def new_bytes(self) -> int | None:
        """Bytes the tokens fed in one pass may take (activations, and logits where scored): on a GPU, a share of the
        memory left after loading, so a long prefill runs in column slices; None on a CPU (no limit)."""
        self._size()
        return self._new_bytes

    def _size(self) -> None:
        if not self._sized:
            figures = self._measure()
            self._tokens, self._new_bytes = sized_budget(self._tokens, figures, self._shape() if figures else None, self.device)
            self._sized = True

    def columns_per_pass(self, rows: int, width: int, scored: bool) -> int:
        """How many of `width` new columns `rows` rows may feed in one pass within the new-token memory (`scored`:
        every fed token keeps its logits)."""
        if self.new_bytes is None:
            return max(width, 1)
        shape = self._shape()
        per_token = shape.scored_token_bytes if scored else shape.new_token_bytes
        return min(max(width, 1), new_tokens_per_pass(self.new_bytes, rows, per_token))

    def shrink(self, error: str) -> None:
        """After running out of device memory: halve the budget for this and later calls, or fail below the floor."""
        failed = self.tokens
        if failed // 2 < MIN_BATCH_TOKENS:
            raise ModelError(f"out of memory on {self.device} even at max_batch_tokens={failed} ({error})", hint=OOM_HINT)
        self._tokens = failed // 2
        if self._new_bytes is not None:
            self._new_bytes //= 2
        self.backoffs += 1
        log.warning("out of memory on %s at max_batch_tokens=%d: retrying at %d", self.device, failed, failed // 2)
