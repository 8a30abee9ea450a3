"""Scoring rows split by length (labelling/engine/padding.py): the split is the cheapest one, and the engine's scores
do not change when it splits."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from labelling.engine.lm import LanguageModel, Prompt
from labelling.engine.padding import length_groups
from tests.support.tiny_models import smollm2_tokenizer, tiny_gpt_bigcode

SCHEMA = "class Hotel:\n    def find_hotel(self, area: str, stars: int):\n        ...\n"


def cost(lengths, groups, pass_cost):
    return sum(len(g) * max(lengths[r] for r in g) for g in groups) + pass_cost * (len(groups) - 1)


def brute_force(lengths, pass_cost):
    """The cheapest cost over every split of the rows, sorted longest first, into consecutive passes."""
    order = sorted(range(len(lengths)), key=lambda r: -lengths[r])
    best = None
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for row, cut in zip(order[1:], cuts, strict=True):
            if cut:
                groups.append(current)
                current = []
            current.append(row)
        groups.append(current)
        value = cost(lengths, groups, pass_cost)
        best = value if best is None else min(best, value)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_split_is_the_cheapest(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(1, 8), rng.randint(30, 60)]) for _ in range(rng.randint(2, 9))]
    pass_cost = rng.choice([0, 10, 40, 1000])
    groups = length_groups(lengths, pass_cost)
    assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
    assert cost(lengths, groups, pass_cost) == brute_force(lengths, pass_cost)


def test_no_split_keeps_the_rows_in_order():
    assert length_groups([3, 50, 4, 48], None) == [[0, 1, 2, 3]]
    assert length_groups([3, 50, 4, 48], 10_000) == [[0, 1, 2, 3]]
    assert length_groups([3, 50, 4, 48], 5) == [[1, 3], [2, 0]]  # longest first
    assert length_groups([], 5) == [] and length_groups([7], 0) == [[0]]


def test_split_scoring_passes_give_the_same_scores():
    torch.set_num_threads(1)
    tok, model = smollm2_tokenizer(), tiny_gpt_bigcode()
    long = " then find_hotel(area='north', stars=4, parking=True, internet=True, price='cheap', type='guesthouse')"
    requests = [
        (Prompt(SCHEMA, "# user: I need a cheap hotel in the north\nagent."), ["x", long, " no", long + " again"]),
        (Prompt(SCHEMA, "# user: hi"), ["(", long * 2]),
    ]
    one = LanguageModel.from_model(model, tok)
    split = LanguageModel.from_model(model, tok)
    assert one.score_pass_cost is None  # the CPU keeps one pass
    split.score_pass_cost = 0
    fed = {}

    def counting(name):
        def hook(module, args, kwargs):
            fed[name] = fed.get(name, 0) + kwargs["input_ids"].numel()

        return hook

    handle = model.register_forward_pre_hook(counting("one"), with_kwargs=True)
    want = one.score_many(requests)
    handle.remove()
    handle = model.register_forward_pre_hook(counting("split"), with_kwargs=True)
    got = split.score_many(requests)
    handle.remove()
    assert got == [pytest.approx(row, abs=1e-4) for row in want]
    # One pass of continuations became several, each fed fewer padding columns: fewer tokens in all.
    assert split.stats.forward_passes > one.stats.forward_passes and fed["split"] < fed["one"]
    assert split.stats.scored_tokens == one.stats.scored_tokens
