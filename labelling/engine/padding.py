"""Cutting the padding of a batch of rows of different lengths: split it, sorted by length, into passes.

A pass of right-padded rows costs its rows times its longest row in fed tokens; splitting rows of mixed lengths into
a pass of the long ones and a pass of the short ones feeds fewer padding tokens, at the cost of one more pass (every
weight read once more, and any work a pass repeats). Rows do not change each other's results (the engine's results do
not depend on the batching), so any split computes the same numbers.
"""

from __future__ import annotations


def length_groups(lengths: list[int], pass_cost: int | None) -> list[list[int]]:
    """The rows (indices into `lengths`) in passes that minimise padded tokens plus `pass_cost` per extra pass.

    Each pass holds rows of neighbouring lengths, longest first. One pass keeps the rows in their order; None for
    `pass_cost` never splits.
    """
    n = len(lengths)
    if pass_cost is None or n < 2:
        return [list(range(n))] if n else []
    order = sorted(range(n), key=lambda r: -lengths[r])
    # best[k]: the cheapest split of the k longest rows; a pass of rows i..k-1 costs (k - i) x the longest, lengths[order[i]].
    best, cut = [0] * (n + 1), [0] * (n + 1)
    for k in range(1, n + 1):
        best[k], cut[k] = min((best[i] + (k - i) * lengths[order[i]] + (pass_cost if i else 0), i) for i in range(k))
    groups, k = [], n
    while k:
        groups.append(order[cut[k] : k])
        k = cut[k]
    return [list(range(n))] if len(groups) == 1 else groups[::-1]
