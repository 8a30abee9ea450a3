"""Sampling maths: seeded uniforms per sample, temperature, top-k and top-p filtering, inverse-CDF draws, token
log-probs and schema constraints on logits.

Each sample draws from its own generator, seeded from its prompt, so a sample does not depend on its batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch

from labelling.engine.generation import Prompt, SamplingParams, TokenConstraint


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """fp32 log-probs of `targets` [rows, columns] under `logits` [rows, columns, vocab]."""
    return logits.gather(-1, targets[..., None])[..., 0] - logits.logsumexp(-1)


def uniforms(seeds: list[int], steps: int, device: torch.device) -> torch.Tensor:
    """[rows, steps] uniform numbers, row r drawn from its own generator seeded with `seeds[r]`.

    Drawn once per sample rather than once per row per step: each row's stream stays independent of its batch, and a
    step reads its column with one indexing call.
    """
    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(seed)) for seed in seeds]
    return torch.stack(rows).to(device)


def constrain(logits: torch.Tensor, rows: Sequence[TokenConstraint | None]) -> torch.Tensor:
    """`logits` with each row's disallowed tokens at -inf (columns past a constraint's vocabulary too); None: no limit."""
    allowed = torch.ones(logits.shape, dtype=torch.bool)
    for i, row in enumerate(rows):
        if row is not None:
            mask = row.allowed()[: logits.shape[-1]]
            allowed[i] = False
            allowed[i, : mask.numel()] = mask
    return logits.masked_fill(~allowed.to(logits.device), float("-inf"))


def draw(logits: torch.Tensor, u: torch.Tensor | None, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its log-prob under the filtered distribution, by inverse CDF at each row's uniform `u`;
    with top-k 1 (greedy) the log-prob is the model's own (after any constraint's mask), not the filter's certain 0."""
    if params.temperature <= 0:
        return logits.argmax(-1), torch.zeros(len(logits), device=logits.device)
    logps = filtered_logprobs(logits, params)
    cdf = logps.exp().cumsum(-1)
    tokens = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=logits.shape[-1] - 1)
    if params.top_k == 1:  # greedy: the filtered distribution is the one token at probability 1, which says nothing;
        # the log-prob the model itself gave the token is what a greedy label's confidence is made of
        logps = (logits.float() / params.temperature).log_softmax(-1)
    return tokens[:, 0], logps.gather(-1, tokens)[:, 0]


def filtered_logprobs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """fp32 log-probs after temperature, then top-k, then top-p: the distribution samples are drawn from."""
    logits = logits.float() / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = logits.topk(params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(-1)
        # Drop a token once the likelier ones already hold top_p of the mass; the likeliest always stays.
        drop = probs.cumsum(-1) - probs >= params.top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return logits.log_softmax(-1)


def sample_seed(prompt: Prompt, seed: int, index: int) -> int:
    """A stable 63-bit seed for sample `index` of `prompt`, independent of the process and of the batch."""
    digest = hashlib.sha256(json.dumps([seed, index, prompt.preamble, prompt.body]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
