"""Prompt-lookup guesses: tokens a row will probably draw next, read from its own context.

The engine feeds them after a row's drawn token and keeps each only where it equals the row's own draw, so samples do
not change; a kept guess saves a decode pass.
"""

from __future__ import annotations


class PromptLookup:
    """Guesses a row's next tokens from its own context (prompt-lookup decoding): find the latest earlier place where
    its last few tokens occur, in the prompt or in what it generated, and propose the tokens that followed there.

    The calls a labeller generates repeat the function, slot and value spellings of the in-context examples.
    """

    ORDERS = (3, 2)  # match the last 3 tokens, else the last 2

    def __init__(self, prompt: list[int], prompt_index: dict[int, dict[tuple, int]]):
        self.ids = list(prompt)
        self.start = len(prompt)  # where the generated tokens begin
        self.prompt_index = prompt_index  # shared by the rows of one prompt
        self.own: dict[int, dict[tuple, int]] = {n: {} for n in self.ORDERS}
        self.indexed = len(prompt)  # n-grams ending before this position are indexed

    @classmethod
    def index_of(cls, ids: list[int]) -> dict[int, dict[tuple, int]]:
        """Where each n-gram of `ids` last ends."""
        return {n: {tuple(ids[end - n + 1 : end + 1]): end for end in range(n - 1, len(ids))} for n in cls.ORDERS}

    def guess(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the context's ending."""
        if limit <= 0:
            return []
        last = len(self.ids) - 1
        for end in range(self.indexed, last):  # the ending itself is left out: it would match itself
            for n in self.ORDERS:
                if end >= n - 1:
                    self.own[n][tuple(self.ids[end - n + 1 : end + 1])] = end
        self.indexed = max(self.indexed, last)
        for n in self.ORDERS:
            key = tuple(self.ids[-n:])
            end = self.own[n].get(key, self.prompt_index[n].get(key))
            if end is not None:
                return self.ids[end + 1 : end + 1 + limit]
        return []
