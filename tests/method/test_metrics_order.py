"""Per-turn metrics list their error keys in one order whatever ``PYTHONHASHSEED`` is: they come from set differences,
whose order follows the string hash, and they are written into every label, so two equal runs must write equal bytes
(issue 34, item 9)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import json
from labelling.acts import Act
from labelling.method.metrics import turn_act_metrics, turn_state_counts

gold = {"hotel": {"area": "east", "stars": "4", "parking": "yes"}, "train": {"day": "monday", "departure": "ely"}}
pred = {"hotel": {"name": "acorn", "internet": "yes"}, "restaurant": {"food": "thai", "area": "north"}}
acts = [Act(kind) for kind in ("RequestAlternatives", "Acknowledge", "Goodbye", "Greeting", "ThankYou")]
acts.append(Act("Request", service="hotel", values=("area",)))
print(json.dumps([list(turn_state_counts(pred, gold)), list(turn_act_metrics(acts[:3], acts[3:]))]))
"""


def _keys(hash_seed: int) -> str:
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_error_keys_come_out_in_one_sorted_order_under_every_hash_seed():
    orders = {_keys(seed) for seed in range(6)}
    assert len(orders) == 1, orders
    import json

    for keys in json.loads(orders.pop()):
        errors = [k for k in keys if k.startswith("err:")]
        assert len(errors) >= 4 and errors == sorted(errors) and keys[-len(errors) :] == errors
