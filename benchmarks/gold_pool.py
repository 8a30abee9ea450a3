"""Write a quality report whose labels are a split's gold, to seed `labelling quality --pool-from` with examples that
are right: the upper bound of what a pool can do for a model, beside the pool of its own labels.

    python benchmarks/gold_pool.py train_850_900 benchmarks/results/gold_train_850_900.json
    labelling quality --configurations "greedy + constraints" --pool-from benchmarks/results/gold_train_850_900.json

Not a labelling configuration anyone runs: the corpus's gold reaches the prompts on purpose, as retrieved examples.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from labelling import config
from labelling.bench import quality
from labelling.records import ModuleOutput, TurnLabel
from labelling.states import compute_delta


def gold_labels(split: str) -> list[dict]:
    """Every turn of ``split`` labelled with its own gold state and acts, as TurnLabel dicts."""
    turns = quality.split_turns(config.load(), split)
    nothing = ModuleOutput("gold", [], [])
    labels = []
    for t in turns:
        prior, state = t.last_slot_values or {}, t.slot_values or {}
        label = TurnLabel(
            t.dialogue_id, t.turn_id, prior, state, compute_delta(prior, state), t.system_response_acts or [], nothing, nothing
        )
        labels.append(label.to_dict())
    return labels


def main(split: str, out: str) -> None:
    labels = gold_labels(split)
    setup = {"split": split, "turns": len(labels), "lm": "gold"}
    rep = {"setup": setup, "configurations": {"gold": {"labels": labels}}}
    Path(out).write_text(json.dumps(rep) + "\n", encoding="utf-8")
    print(f"{len(labels)} gold labels of {split} -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
