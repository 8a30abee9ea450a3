"""The KV cache of a batch of rows, and the prompt ids that fill it.

A :class:`KVState` is what the engine carries between forward passes: Hugging Face's cache, a mask of which cached
columns are real tokens (rows are right-padded, so padding leaves holes), and each row's last logits. Its layers keep
spare room, so decoding appends in place, and copies of rows are gathered straight into their roomier buffers.
Prompts are :class:`Encoded` with forced token boundaries; bodies that share a long head encode it once. :func:`forward`
feeds right-padded rows on top of a state: the one forward pass the prefill, scoring and guessing decode share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from labelling.engine.stats import EngineStats

# Prompts sharing at least this many leading body tokens encode them once (channel candidates on one turn's prompt).
MIN_SHARED_TOKENS = 16


@dataclass
class KVState:
    """KV state of a batch of rows: the cache, which of its columns are real tokens, and each row's next-token logits."""

    cache: DynamicCache | None
    mask: torch.Tensor  # [rows, cached columns]: 1 real token, 0 padding
    last: torch.Tensor | None  # [rows, vocab] fp32 logits after each row's last real token

    @classmethod
    def empty(cls, rows: int, device: torch.device) -> KVState:
        """A state for `rows` rows that have seen nothing yet."""
        return cls(None, torch.zeros((rows, 0), dtype=torch.long, device=device), None)

    def take(self, rows: list[int], room: int = 0) -> KVState:
        """A copy holding `rows` (repeats allowed), with `room` for that many more tokens per row without re-copying.

        Indexing copies, so feeding the copy to the model never alters this state.
        """
        idx = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        cache = None
        if self.cache is not None:
            cache = DynamicCache()
            cache.layers = [RoomyLayer.gathered(layer, idx, room) for layer in self.cache.layers]
        return KVState(cache, self.mask[idx], None if self.last is None else self.last[idx])

    def prefix(self, columns: int, room: int = 0) -> KVState:
        """A copy of the first `columns` cached columns of every row, with `room` spare, and no logits."""
        cache = DynamicCache()
        cache.layers = [
            RoomyLayer(layer.keys[..., :columns, :], layer.values[..., :columns, :], room) for layer in self.cache.layers
        ]
        return KVState(cache, self.mask[:, :columns].clone(), None)


class RoomyLayer(DynamicLayer):
    """A KV cache layer with spare room, grown by doubling: appending writes in place rather than copying all of it.

    HF's DynamicLayer concatenates on every update, which during decoding copies the whole cache at every step.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int, stores: list[torch.Tensor] | None = None):
        super().__init__()
        self.lazy_initialization(keys, values)
        self._store = stores or [with_room(t, t.shape[-2] + room) for t in (keys, values)]
        self._expose(keys.shape[-2])

    @classmethod
    def gathered(cls, layer: DynamicLayer, idx: torch.Tensor, room: int) -> RoomyLayer:
        """The rows `idx` of `layer` with `room` spare positions, each row copied once: the whole buffer (spare room
        included) when it already has the room, else the exposed part straight into a new, roomier buffer."""
        length = layer.keys.shape[-2]
        if isinstance(layer, RoomyLayer) and layer._store[0].shape[-2] >= length + room:
            stores = [t.index_select(0, idx) for t in layer._store]
        else:
            stores = [gathered_with_room(t, idx, length + room) for t in (layer.keys, layer.values)]
        return cls(stores[0][..., :length, :], stores[1][..., :length, :], room, stores)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple:
        start, end = self.keys.shape[-2], self.keys.shape[-2] + key_states.shape[-2]
        if end > self._store[0].shape[-2]:
            self._store = [with_room(t, 2 * end) for t in (self.keys, self.values)]
        self._store[0][..., start:end, :] = key_states
        self._store[1][..., start:end, :] = value_states
        self._expose(end)
        return self.keys, self.values

    def _expose(self, length: int) -> None:
        self.keys, self.values = self._store[0][..., :length, :], self._store[1][..., :length, :]


def gathered_with_room(tensor: torch.Tensor, idx: torch.Tensor, capacity: int) -> torch.Tensor:
    """Rows `idx` of `tensor` in a new buffer of `capacity` positions, gathered straight into it (indexing first, then
    moving the result into the buffer, copied every row twice and took 4-7x longer on a CPU)."""
    buffer = tensor.new_empty((len(idx), *tensor.shape[1:-2], capacity, tensor.shape[-1]))
    torch.index_select(tensor, 0, idx, out=buffer[..., : tensor.shape[-2], :])
    return buffer


def with_room(tensor: torch.Tensor, capacity: int) -> torch.Tensor:
    """`tensor` copied into a new buffer of `capacity` positions along the sequence axis (the rest uninitialised)."""
    buffer = tensor.new_empty((*tensor.shape[:-2], capacity, tensor.shape[-1]))
    buffer[..., : tensor.shape[-2], :] = tensor
    return buffer


@dataclass
class Encoded:
    """A prompt tokenised with forced boundaries: preamble ids (after any BOS) and body ids."""

    preamble: str
    pre: list[int]
    body: list[int]

    def __len__(self) -> int:
        return len(self.pre) + len(self.body)


def common_length(a: list[int], b: list[int]) -> int:
    """How many leading ids `a` and `b` share."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def shared_prefixes(bodies: list[list[int]]) -> list[tuple[int, list[int]]]:
    """Runs of consecutive bodies sharing at least `MIN_SHARED_TOKENS` leading tokens: (shared length, members) each.

    A body alone forms a run whose shared length is its whole length. The shared part is then encoded once per run.
    """
    groups: list[tuple[int, list[int]]] = []
    for i, body in enumerate(bodies):
        if groups:
            shared, members = groups[-1]
            head = bodies[members[0]][:shared]
            common = next((n for n, (a, b) in enumerate(zip(head, body, strict=False)) if a != b), min(shared, len(body)))
            if common >= MIN_SHARED_TOKENS:
                groups[-1] = (common, [*members, i])
                continue
        groups.append((len(body), [i]))
    return groups


def forward(model, state: KVState, rows: list[list[int]], keep: torch.Tensor | int, pad: int, stats: EngineStats) -> tuple:
    """One forward pass of right-padded rows on top of `state`; `keep` picks logit positions as HF's logits_to_keep.
    Returns the logits kept, the grown cache and the mask of its real columns."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    new = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        new[i, : len(row)] = 1
    ids, new = ids.to(state.mask.device), new.to(state.mask.device)
    # Padding leaves holes inside the cache: the mask hides them and positions count real tokens only,
    # so every row sees exactly what it would see alone.
    positions = (state.mask.sum(1, keepdim=True) + new.cumsum(1) - 1) * new
    mask = torch.cat([state.mask, new], dim=1)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, cache=state.cache, use_cache=True, logits_to_keep=keep
    )
    stats.forward_passes += 1
    return out.logits, out.cache, mask
