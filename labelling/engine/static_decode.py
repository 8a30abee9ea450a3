"""Decoding on a static KV cache: every step has the same shapes and addresses, so it can be captured as a CUDA graph,
and the host never waits for the device inside the loop.

An :class:`Arena` holds one call's decode state at a fixed size: each layer's keys and values for `rows` rows of
`capacity` columns, the mask of real columns, each row's next token, whether it is live, its count of real tokens, its
draft, the write column, the step number, and each draft's uniforms and log-probs. A row bucket (`BUCKETS`) views the
first rows of every buffer, so a batch that shrinks moves its live rows to the front and carries on with a smaller
bucket on the same memory. The step (:func:`step`) feeds each live row its token (finished and padding rows are fed
masked padding, as the eager loop does), hands the model a ready 4-D mask (transformers' mask code and its host check
are skipped), draws the next token with the project's seeded sampler on the device, and advances the counters on the
device: it reads and writes only the arena, so a runner (`labelling.engine.graphs`) may replay it.

The host loop (:func:`decode`) launches step t+1 before it reads the tokens of step t (copied to the host without a
wait). A row that ends at token t is therefore fed one more token, at step t+1; the token drawn there is dropped (its
draft is done), and nothing another row sees changes, so the samples are the eager loop's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from labelling.engine import sampling
from labelling.engine.drafts import Draft
from labelling.engine.generation import SamplingParams
from labelling.engine.graphs import CudaGraphRunner, EagerRunner
from labelling.engine.kv_cache import KVState
from labelling.engine.stats import EngineStats

# Rows a step runs at: a batch runs at the smallest bucket holding it. Padding rows cost a step their KV reads
# (attention reads every row's columns), so the buckets stay within a quarter of each other above 32 rows.
BUCKETS = (1, 2, 4, 8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256)
CAPACITY_STEP = 64  # columns are rounded up to this (a kernel-friendly width)


def bucket_for(rows: int) -> int | None:
    """The smallest bucket holding `rows` rows; None above the largest (the eager loop runs those)."""
    return next((b for b in BUCKETS if b >= rows), None)


def capacity_for(columns: int, steps: int) -> int:
    """Columns of an arena for a prompt state of `columns` columns decoding up to `steps` tokens: the prompt, one
    column per decode step after the first token, and one spare column that warm-up runs write (never a real one)."""
    need = columns + steps
    return -(-need // CAPACITY_STEP) * CAPACITY_STEP


class StaticLayer(DynamicLayer):
    """A cache layer over fixed buffers [rows, kv heads, capacity, head size]: a step writes its keys and values at the
    arena's column (a device tensor) and attention reads every column, the mask hiding those not written yet."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, column: torch.Tensor):
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values, self.column = keys, values, column

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple:
        self.keys.index_copy_(2, self.column, key_states)
        self.values.index_copy_(2, self.column, value_states)
        return self.keys, self.values


class Arena:
    """One call's static decode buffers for up to `rows` rows (see the module docstring). Row `rows` of the uniforms
    and log-probs is a dummy that padding rows read and write."""

    def __init__(self, state: KVState, rows: int, capacity: int, steps: int):
        layers = state.cache.layers
        device = state.mask.device
        self.rows, self.capacity, self.steps, self.device = rows, capacity, steps, device
        # Zeros, not empty memory: attention reads masked columns too, and a NaN there would survive the mask.
        self.keys = [layer.keys.new_zeros((rows, *layer.keys.shape[1:-2], capacity, layer.keys.shape[-1])) for layer in layers]
        self.values = [
            layer.values.new_zeros((rows, *layer.values.shape[1:-2], capacity, layer.values.shape[-1])) for layer in layers
        ]
        self.mask = torch.zeros((rows, capacity), dtype=torch.bool, device=device)
        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self.alive = torch.zeros(rows, dtype=torch.bool, device=device)
        self.real = torch.zeros(rows, dtype=torch.long, device=device)
        self.owner = torch.full((rows,), rows, dtype=torch.long, device=device)
        self.column = torch.zeros(1, dtype=torch.long, device=device)
        self.step = torch.zeros(1, dtype=torch.long, device=device)
        self.uniforms = torch.zeros((rows + 1, steps), device=device)
        self.logps = torch.zeros((rows + 1, steps), device=device)
        self.mask[:, 0] = True  # padding rows attend to one (zero) column, so their softmax has no NaN

    @property
    def small(self) -> list[torch.Tensor]:
        """The per-row and counter buffers a warm-up run may change (the KV it writes lands in the spare column)."""
        return [self.tokens, self.alive, self.real, self.owner, self.column, self.step]

    def load(self, state: KVState, tokens: torch.Tensor, logps: torch.Tensor, uniforms: torch.Tensor | None, live) -> None:
        """Copy a prompt state of n rows (row d decodes draft d) into the first rows, with each draft's first token."""
        n, columns = state.mask.shape
        for store, layer in zip(self.keys, state.cache.layers, strict=True):
            store[:n, ..., :columns, :] = layer.keys
        for store, layer in zip(self.values, state.cache.layers, strict=True):
            store[:n, ..., :columns, :] = layer.values
        self.mask[:n] = False
        self.mask[:n, :columns] = state.mask.bool()
        self.real[:n] = state.mask.sum(1)
        self.tokens[:n] = tokens
        self.alive[:n] = host_to_device(live, torch.bool, self.device)
        self.owner[:n] = torch.arange(n, device=self.device)
        self.column.fill_(columns)
        self.step.fill_(1)  # token 0 came from the prompt's logits
        if uniforms is not None:
            self.uniforms[:n] = uniforms
        self.logps[:n, 0] = logps

    def compact(self, keep: list[int], rows: int) -> None:
        """Move rows `keep` of the first `rows` to the front, in order; the rows after them become padding."""
        idx = host_to_device(keep, torch.long, self.device)
        n = len(keep)
        for store in (*self.keys, *self.values, self.mask, self.tokens, self.alive, self.real, self.owner):
            store[:n] = store[:rows].index_select(0, idx)
        self.mask[n:rows] = False
        self.mask[n:rows, 0] = True
        self.alive[n:rows] = False
        self.owner[n:rows] = self.rows
        self.real[n:rows] = 0

    @contextlib.contextmanager
    def scratch(self, rows: int) -> Iterator[None]:
        """While a runner warms a step up: every row of the bucket dead and padding, writing its KV to the spare last
        column and its log-prob to the dummy row; afterwards every changed buffer is as before."""
        saved = [t.clone() for t in self.small]
        spare = self.mask[:, -1].clone()
        self.alive[:rows] = False
        self.owner[:rows] = self.rows
        self.column.fill_(self.capacity - 1)
        self.step.zero_()
        try:
            yield
        finally:
            for buffer, value in zip(self.small, saved, strict=True):
                buffer.copy_(value)
            self.mask[:, -1] = spare


def host_to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`values` on the device without the host waiting: staged in pinned memory on CUDA (a pageable copy blocks)."""
    tensor = torch.tensor(values, dtype=dtype)
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor


class TokenReader:
    """Copies a step's drawn tokens to the host without waiting; `read` waits only for that copy (by then the
    device is already running the next step). Two pinned slots on CUDA, used in turn."""

    def __init__(self, rows: int, device: torch.device):
        cuda = device.type == "cuda"
        self.slots = [torch.empty(rows, dtype=torch.long, pin_memory=cuda) for _ in range(2)]
        self.events = [torch.cuda.Event() for _ in range(2)] if cuda else None
        self.turn = 0

    def start(self, tokens: torch.Tensor) -> tuple[int, int]:
        slot, self.turn = self.turn, 1 - self.turn
        self.slots[slot][: len(tokens)].copy_(tokens, non_blocking=True)
        if self.events:
            self.events[slot].record()
        return slot, len(tokens)

    def read(self, handle: tuple[int, int]) -> list[int]:
        slot, n = handle
        if self.events:
            self.events[slot].synchronize()
        return self.slots[slot][:n].tolist()


def step(model, arena: Arena, rows: int, params: SamplingParams, pad: int, cache: DynamicCache) -> None:
    """One decode step of the first `rows` rows, on the arena only (no host sync, fixed shapes): feed each live row its
    token, draw its next one with its own uniform, and move the column and the step on."""
    alive = arena.alive[:rows]
    ids = torch.where(alive, arena.tokens[:rows], pad)[:, None]
    mask = arena.mask[:rows]
    mask.index_copy_(1, arena.column, alive[:, None])
    positions = (arena.real[:rows] * alive)[:, None]  # real tokens so far: the new token's position (0 for padding)
    arena.real[:rows] += alive
    out = model(
        input_ids=ids,
        attention_mask=mask[:, None, None, :],
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    owner = arena.owner[:rows]
    u = None
    if params.temperature > 0:
        u = arena.uniforms.index_select(1, arena.step).index_select(0, owner)[:, 0]
    tokens, logps = sampling.draw(out.logits[:, -1].float(), u, params)
    arena.tokens[:rows] = tokens
    arena.logps.index_put_((owner, arena.step.expand(rows)), logps)
    arena.step += 1
    arena.column += 1


def static_cache(arena: Arena, rows: int) -> DynamicCache:
    """A cache over the first `rows` rows of the arena's keys and values, writing at its column."""
    cache = DynamicCache()
    cache.layers = [StaticLayer(k[:rows], v[:rows], arena.column) for k, v in zip(arena.keys, arena.values, strict=True)]
    return cache


class StaticDecoder:
    """The replayable steps of one arena, one per bucket, made by a runner the first time the bucket is used."""

    def __init__(self, model, arena: Arena, params: SamplingParams, pad: int, runner: EagerRunner | CudaGraphRunner):
        self.model, self.arena, self.params, self.pad, self.runner = model, arena, params, pad, runner
        self.replays: dict[int, Callable[[], None]] = {}

    def replay(self, rows: int) -> None:
        if rows not in self.replays:
            cache = static_cache(self.arena, rows)

            def run(rows=rows, cache=cache):
                step(self.model, self.arena, rows, self.params, self.pad, cache)

            with self.arena.scratch(rows) if self.runner.warms_up else contextlib.nullcontext():
                self.replays[rows] = self.runner.capture(run)
        self.replays[rows]()


def decode(
    model,
    state: KVState,
    drafts: list[Draft],
    uniforms: torch.Tensor | None,
    params: SamplingParams,
    push: Callable[[Draft, int], None],
    pad: int,
    runner: EagerRunner | CudaGraphRunner,
    stats: EngineStats,
) -> list[list[float]]:
    """Sample every draft (row d of `state` is draft d) until it is done or has `max_new_tokens`; returns each draft's
    log-probs per token (entries past its kept tokens are never read). `push` appends a token to a draft and marks it
    done; the caller checks `bucket_for(len(drafts))` first."""
    first, first_logps = sampling.draw(state.last, None if uniforms is None else uniforms[:, 0], params)
    for draft, token in zip(drafts, first.tolist(), strict=True):  # the one sync before the loop, as the eager loop
        push(draft, token)
    stats.generated_tokens += len(drafts)
    steps = params.max_new_tokens
    if all(d.done for d in drafts):  # every draft ended on its first token: no arena needed
        return [[logp] for logp in first_logps.tolist()]
    bucket = bucket_for(len(drafts))
    arena = Arena(state, bucket, capacity_for(state.mask.shape[1], steps), steps)
    arena.load(state, first, first_logps, uniforms, [not d.done for d in drafts])
    decoder = StaticDecoder(model, arena, params, pad, runner)
    reader = TokenReader(bucket, state.mask.device)
    owners = list(range(len(drafts)))  # the draft of each row of the bucket, on the host
    sent = [not d.done for d in drafts]  # the live flags the device has
    pending, made, started = None, 1, time.perf_counter()
    while made < steps:
        live = [not drafts[d].done for d in owners]  # one step stale: a row that ended at the last token is fed once more
        if not any(live):
            break
        smaller = bucket_for(sum(live))
        if smaller < bucket:
            keep = [r for r, alive in enumerate(live) if alive]
            arena.compact(keep, bucket)
            owners, live, bucket = [owners[r] for r in keep], [True] * len(keep), smaller
            sent = live
        elif live != sent:
            arena.alive[: len(live)] = host_to_device(live, torch.bool, arena.device)
            sent = live
        decoder.replay(bucket)
        stats.forward_passes += 1
        stats.decode_steps += 1
        stats.decode_rows += bucket
        stats.decode_columns += arena.capacity
        made += 1
        handle = reader.start(arena.tokens[:bucket])
        if pending is not None:
            _take(pending, reader, drafts, push, stats)
        pending = (handle, list(owners))
    if pending is not None:
        _take(pending, reader, drafts, push, stats)
    stats.decode_seconds += time.perf_counter() - started
    return arena.logps[: len(drafts)].tolist()


def _take(pending, reader: TokenReader, drafts: list[Draft], push, stats: EngineStats) -> None:
    """Append a finished step's tokens to the drafts still going (a draft done earlier drops its token)."""
    handle, owners = pending
    for d, token in zip(owners, reader.read(handle), strict=False):
        if not drafts[d].done:
            push(drafts[d], token)
            stats.generated_tokens += 1
            stats.decode_tokens += 1
