"""What is asked of a language model and what it gives back: prompts, sampling settings and samples.

Kept apart from `lm.py` so that the prompt builder, the labeller and the store can use them without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Prompt:
    """A prompt whose `preamble` is shared by many prompts of the same mode, so its KV cache can be reused."""

    preamble: str
    body: str


@dataclass(frozen=True)
class SamplingParams:
    """How candidates are drawn. Filters apply as temperature, then top-k, then top-p (HF's order).

    `top_k=0` and `top_p=1.0` disable their filter; `temperature=0` is greedy decoding. `ignore_eos` keeps generating
    past EOS (as vLLM's option of that name), so benchmarks can force a fixed output length.
    """

    n: int = 8
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 120
    stop: tuple[str, ...] = ()
    seed: int = 0
    ignore_eos: bool = False


@dataclass(frozen=True)
class Sample:
    """One drawn continuation: its text up to the first stop string, right-stripped, and the tokens kept for it."""

    text: str
    logprob: float  # summed fp32 log-prob of the kept tokens under the filtered (and, if constrained, masked) distribution
    n_tokens: int  # tokens that begin before the cut; a token holding the stop's first character counts only if it begins earlier
    stopped: bool  # hit a stop string or EOS, rather than running out of max_new_tokens


class TokenConstraint(Protocol):
    """One sample's constraint on its next token (labelling/method/grammar.py builds them from the schema)."""

    def allowed(self) -> Any:
        """A bool tensor over the vocabulary: True for the tokens that may be drawn next."""

    def advance(self, token: int) -> None:
        """Move past the drawn token."""
