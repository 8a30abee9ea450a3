"""The KV cache's parts (labelling.engine.kv_cache): layers with spare room, copied rows, shared prompt heads."""

from __future__ import annotations

import torch

from labelling.engine.kv_cache import RoomyLayer, shared_prefixes


def test_kv_layer_with_room_grows_when_full():
    keys, values = torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4)
    original = keys.clone()
    layer = RoomyLayer(keys, values, room=1)
    added = [torch.randn(2, 1, n, 4) for n in (1, 2, 5)]  # fills the room, then outgrows it twice
    for new in added:
        got_keys, got_values = layer.update(new, 2 * new)
    assert torch.equal(got_keys, torch.cat([keys, *added], dim=-2))
    assert torch.equal(got_values, torch.cat([values, *(2 * a for a in added)], dim=-2))
    assert layer.get_seq_length() == 11 and torch.equal(keys, original)


def test_bodies_sharing_a_long_head_form_one_run():
    head = list(range(100, 120))  # 20 shared tokens, at least MIN_SHARED_TOKENS
    bodies = [head + [1], head + [2, 3], [7, 8], head + [4]]
    assert shared_prefixes(bodies) == [(20, [0, 1]), (2, [2]), (21, [3])]  # runs are consecutive bodies only
    assert shared_prefixes([head[:5] + [1], head[:5] + [2]]) == [(6, [0]), (6, [1])]  # 5 shared: too short to share
