"""The eager decode loops: sampling on the growing KV cache of :class:`labelling.engine.kv_cache.KVState`, one Python
step per forward pass. They sit beside :mod:`labelling.engine.static_decode` (the static-cache loop) and take the same
leading arguments: the model, the prompts' state, one draft per row, each row's uniforms, the sampling parameters, a
``push`` that appends a token to a draft and marks it done, the padding id and the engine's counters.

:func:`decode` draws one token per row and pass (and applies grammar constraints); :func:`decode_guessing` feeds each
row its last token plus tokens guessed by prompt lookup, and keeps a guess only where it equals the row's own draw, so
both give the same samples. Each returns every draft's per-token log-probs; entries past a draft's kept tokens (an
EOS, a finished row's padding) are never read.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from labelling.engine import sampling
from labelling.engine.drafts import Draft
from labelling.engine.generation import SamplingParams, TokenConstraint
from labelling.engine.kv_cache import KVState, forward
from labelling.engine.lookup import PromptLookup
from labelling.engine.stats import EngineStats

# A decode batch keeps its finished rows (masked) until fewer than this share of its rows are live, then compacts.
COMPACT_BELOW = 0.75


def decode(
    model,
    state: KVState,
    drafts: list[Draft],
    uniforms: torch.Tensor | None,
    params: SamplingParams,
    push: Callable[[Draft, int], None],
    pad: int,
    stats: EngineStats,
    constraints: list[TokenConstraint] | None = None,
) -> list[list[float]]:
    """Sample every row (row d of `state` is draft d) until EOS, a stop string or `max_new_tokens`.

    One host sync per step (the drawn tokens, for the stop checks). A finished row stays in the batch, fed padding
    that the mask hides, until fewer than `COMPACT_BELOW` of the rows are live: only then are the live rows copied
    out, once, so a row finishing does not copy the whole KV cache. With `constraints` (one per draft), each draw sees
    only the tokens the draft's constraint allows, and the constraint is advanced with the drawn token: the two marked
    lines.
    """
    device = state.mask.device
    logps = torch.zeros((len(drafts), params.max_new_tokens), device=device)
    owner = list(range(len(drafts)))  # the draft of each batch row
    owner_t = torch.arange(len(drafts), device=device)
    live = [True] * len(drafts)
    logits, started = state.last, None
    for step in range(params.max_new_tokens):
        if constraints:  # constraint hook 1/2: forbidden tokens get -inf before filtering and the draw
            logits = sampling.constrain(logits, [constraints[owner[row]] if alive else None for row, alive in enumerate(live)])
        tokens, token_logps = sampling.draw(logits, None if uniforms is None else uniforms[owner_t, step], params)
        logps[owner_t, step] = token_logps  # a finished row's entry lands past its kept tokens and is never read
        for row, token in enumerate(tokens.tolist()):
            if live[row]:
                if constraints:  # constraint hook 2/2: the draft's grammar moves past the drawn token
                    constraints[owner[row]].advance(token)
                push(drafts[owner[row]], token)
        stats.generated_tokens += sum(live)
        stats.decode_tokens += sum(live) if step else 0  # the first token comes from the prompt's pass
        live = [alive and not drafts[owner[row]].done for row, alive in enumerate(live)]
        if not any(live) or step + 1 == params.max_new_tokens:
            break
        if sum(live) < COMPACT_BELOW * len(live):
            keep = [row for row, alive in enumerate(live) if alive]
            state = state.take(keep, room=params.max_new_tokens - step)
            keep_t = torch.tensor(keep, device=device)
            tokens, owner_t, owner, live = tokens[keep_t], owner_t[keep_t], [owner[r] for r in keep], [True] * len(keep)
        started = started or time.perf_counter()
        state = _step(model, state, tokens, live, pad, stats)
        logits = state.last
    if started is not None:
        stats.decode_seconds += time.perf_counter() - started
    return logps.tolist()


def decode_guessing(
    model,
    state: KVState,
    drafts: list[Draft],
    uniforms: torch.Tensor | None,
    params: SamplingParams,
    push: Callable[[Draft, int], None],
    pad: int,
    stats: EngineStats,
    lookups: list[PromptLookup],
    guess_tokens: int,
) -> list[list[float]]:
    """:func:`decode`'s samples in fewer passes: each pass feeds a row's last drawn token plus up to `guess_tokens`
    tokens guessed by its prompt lookup (`lookups[d]`, whose ids grow with the draft's).

    A row's token number t is always drawn from its own uniform t, at every position of the pass in turn. A guess is
    kept while it equals that draw (its column's logits are then the ones the next draw needs); the first draw that
    differs becomes the row's next token, and the columns of the guesses after it are masked out like padding.
    """
    device = state.mask.device
    made, logps = [0] * len(drafts), [[] for _ in drafts]

    def take(d: int, token: int, logp: float) -> bool:
        """Record draft d's next token; True while it may go on."""
        made[d] += 1
        stats.generated_tokens += 1
        logps[d].append(logp)
        lookups[d].ids.append(token)
        push(drafts[d], token)
        return not drafts[d].done and made[d] < params.max_new_tokens

    first, first_logps = sampling.draw(state.last, None if uniforms is None else uniforms[:, 0], params)
    live = [take(d, *pair) for d, pair in enumerate(zip(first.tolist(), first_logps.tolist(), strict=True))]
    owner, pending = list(range(len(drafts))), first.tolist()
    started = time.perf_counter() if any(live) else None
    while any(live):
        if sum(live) < COMPACT_BELOW * len(live):
            keep = [row for row, alive in enumerate(live) if alive]
            state = state.take(keep, room=params.max_new_tokens)
            owner, pending, live = [owner[r] for r in keep], [pending[r] for r in keep], [True] * len(keep)
        limit = [min(guess_tokens, params.max_new_tokens - made[d] - 1) for d in owner]
        guesses = [lookups[d].guess(n) if alive else [] for d, n, alive in zip(owner, limit, live, strict=True)]
        fed = [[pending[r], *guesses[r]] if alive else [] for r, alive in enumerate(live)]
        columns = state.mask.shape[1]
        logits, cache, mask = forward(model, state, fed, 0, pad, stats)
        tokens, token_logps = _draw_every_column(logits, uniforms, [made[d] for d in owner], owner, params)
        kept, before = torch.zeros((len(fed), logits.shape[1]), dtype=mask.dtype), stats.generated_tokens
        for r, alive in enumerate(live):
            if alive:
                live[r], pending[r], n = _settle(owner[r], guesses[r], tokens[r], token_logps[r], take, stats)
                kept[r, : n + 1] = 1
        mask[:, columns:] *= kept.to(device)  # the columns of rejected guesses become holes, like padding
        state = KVState(cache, mask, None)
        stats.decode_steps += 1
        stats.decode_rows += len(fed)
        stats.decode_columns += columns
        stats.decode_tokens += stats.generated_tokens - before
        stats.guessed_tokens += sum(map(len, guesses))
    if started is not None:
        stats.decode_seconds += time.perf_counter() - started
    return logps


def _draw_every_column(logits, uniforms, made: list[int], owner: list[int], params) -> tuple[list, list]:
    """Draw at every column of a pass: column j of row r gives the token numbered made[r] + j, with that uniform."""
    rows, width, vocab = logits.shape
    u = None
    if uniforms is not None:  # columns past max_new_tokens are padding or unkept guesses: any uniform will do
        steps = (torch.tensor(made)[:, None] + torch.arange(width)).clamp_(max=uniforms.shape[1] - 1).to(logits.device)
        u = uniforms[torch.tensor(owner, device=logits.device)[:, None], steps].reshape(-1)
    tokens, token_logps = sampling.draw(logits.reshape(rows * width, vocab), u, params)
    return tokens.view(rows, width).tolist(), token_logps.view(rows, width).tolist()


def _settle(d: int, guesses: list[int], tokens: list[int], token_logps: list[float], take, stats: EngineStats) -> tuple:
    """Walk draft d's draws along its row's fed columns: (still live, next token to feed, guesses kept)."""
    for j, token in enumerate(tokens[: len(guesses) + 1]):
        going_on = take(d, token, token_logps[j])
        if not going_on or j == len(guesses) or token != guesses[j]:
            stats.guesses_kept += j
            return going_on, token, j
    raise AssertionError("unreachable: the column after the last guess always settles")


def _step(model, state: KVState, tokens: torch.Tensor, live: list[bool], pad: int, stats: EngineStats) -> KVState:
    """One decode forward: each live row's drawn token on top of `state`; finished rows are fed masked padding."""
    alive = torch.tensor(live, device=state.mask.device)
    new = alive.long()[:, None]
    ids = torch.where(alive, tokens, pad)[:, None]
    positions = state.mask.sum(1, keepdim=True) * new  # real tokens so far: the new token's position
    mask = torch.cat([state.mask, new], dim=1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=state.cache, use_cache=True, logits_to_keep=1)
    stats.forward_passes += 1
    stats.decode_steps += 1
    stats.decode_rows += len(live)
    stats.decode_columns += state.mask.shape[1]
    return KVState(out.cache, mask, out.logits[:, -1].float())
