"""Prompt-lookup guesses (labelling.engine.lookup): what followed the latest earlier match of a row's ending."""

from __future__ import annotations

from labelling.engine.lookup import PromptLookup


def test_prompt_lookup_proposes_what_followed_the_latest_match():
    prompt = [10, 1, 2, 3, 4, 11]
    lookup = PromptLookup(prompt, PromptLookup.index_of(prompt))
    lookup.ids += [1, 2]  # no earlier (11, 1, 2); (1, 2) ends at index 2 of the prompt
    assert lookup.guess(3) == [3, 4, 11] and lookup.guess(0) == []
    lookup.ids += [5, 7, 1, 2]  # now (1, 2) also ends inside what was generated, later than in the prompt
    assert lookup.guess(3) == [5, 7, 1]
    lookup.ids += [99]
    assert lookup.guess(3) == []  # nothing ends in (2, 99) or (99,) ... before
