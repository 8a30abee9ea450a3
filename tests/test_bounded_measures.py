"""labelling.bounded measured against the real parsers: the JSON meter counts exactly the values and keys json.loads
builds, and the nesting it reaches, whatever the chunk boundaries cut (a string, an escape, an empty ``{}``); YAML is
refused by its expanded size or depth before a value is built; quoted values stay short."""

from __future__ import annotations

import json
import random

import pytest

from labelling.bounded import ELEMENTS, NESTING, NODES, TooBig, load_yaml, measure_json, quoted

AWKWARD_STRINGS = ['a,{}[]:\\"x', "", "\\\\", '"', "{", "é ü", "\\u00e9"]


def _elements(value: object) -> int:
    """What json.loads built: every value, plus every object key."""
    if isinstance(value, dict):
        return 1 + sum(1 + _elements(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_elements(v) for v in value)
    return 1


def _depth(value: object) -> int:
    if isinstance(value, dict | list):
        items = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(v) for v in items), default=0)
    return 0


def _random_json(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth > 6 or roll < 0.3:
        return rng.choice([1, None, True, 2.5, *AWKWARD_STRINGS])
    if roll < 0.65:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{rng.randint(0, 9)}{rng.choice(AWKWARD_STRINGS)}": _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_the_meter_counts_what_json_builds_whatever_the_chunks(chunk):
    rng = random.Random(chunk)
    for _ in range(150):
        value = _random_json(rng)
        raw = json.dumps(value, indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.5).encode()
        elements, depth = _elements(json.loads(raw)), _depth(value)
        assert measure_json(raw, elements, depth, chunk=chunk).elements == elements  # exactly at both limits: accepted
        for limits, bound in (((elements - 1, depth), ELEMENTS), ((elements, depth - 1), NESTING)):
            if min(limits) < 0:
                continue
            with pytest.raises(TooBig) as refused:
                measure_json(raw, *limits, chunk=chunk)
            assert refused.value.bound == bound, raw


def test_a_bomb_is_refused_as_soon_as_it_passes_the_limit():
    bomb = b"[" + b"{}," * 10_000_000  # 30 MB that json would turn into about 760 MB
    with pytest.raises(TooBig, match="more than 1,000 JSON values and keys"):
        measure_json(bomb, 1000, 100, chunk=4096)


def _laughs(levels: int) -> str:
    text = '&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'
    for level in range(1, levels + 1):
        text = f"&l{level} [{text}, " + ", ".join([f"*l{level - 1}"] * 8) + "]"
    return f"seed: {text}\n"


def test_yaml_is_measured_with_its_aliases_written_out():
    small = load_yaml(_laughs(2), max_nodes=1_000, max_depth=10)  # 9^3 strings: 729 leaves, 91 lists, a key, a map
    assert len(small["seed"]) == 9 and small["seed"][8] is small["seed"][1]  # aliases stay shared, as safe_load makes them
    with pytest.raises(TooBig, match="expands to more than 100,000 YAML nodes") as refused:
        load_yaml(_laughs(9), max_nodes=100_000, max_depth=100)
    assert refused.value.bound == NODES
    with pytest.raises(TooBig) as deep:
        load_yaml("a: " + "[" * 50 + "]" * 50, max_nodes=100_000, max_depth=20)
    assert deep.value.bound == NESTING
    assert load_yaml("a: 1\nb: [x, y]\n", 10, 10) == {"a": 1, "b": ["x", "y"]} and load_yaml("", 10, 10) is None


def test_a_self_referencing_yaml_is_refused_not_followed_forever():
    with pytest.raises(TooBig):
        load_yaml("a: &a [1, *a]\n", max_nodes=100_000, max_depth=100)


def test_quoted_values_stay_short_and_never_walk_a_shared_structure_whole():
    level = ["lol"] * 9
    for _ in range(30):  # 9^31 strings if written out
        level = [level] * 9
    assert len(quoted(level)) <= 300 and quoted(level).startswith("[[[")
    assert len(quoted("x" * 10_000_000)) <= 300 and quoted("short") == "'short'"
