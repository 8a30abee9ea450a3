"""The rule labeller (``generation_mode: rules``, no LM) on every split of the bundled corpus but the held-out slice's.

It takes seconds, so the rules are scored where no setting was chosen: 18 of these 19 splits were never looked at
while the cue file was written (train_850_900 was). Prints a markdown table, always-empty beside the rules, per split
and over all; ``--out FILE.md`` also writes it.

    .venv/bin/python benchmarks/rules_all_splits.py --out benchmarks/results/quality_2026-12-08/rules_all_splits.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from labelling import config as job_config
from labelling.bench import quality
from labelling.bench.tables import markdown_table
from labelling.corpus import bundled_splits
from labelling.method import build

FIGURES = ("jga", "turn_acc", "state_f1", "acts_f1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    job = job_config.load(profile="cpu-rules")
    schema = job.load_schema()
    splits = [s for s in bundled_splits(schema) if s != quality.HELD_OUT_SPLIT]
    rows, every_turn, every_label = [], [], []
    start = time.perf_counter()
    for split in splits:
        turns = quality.split_turns(job, split)
        labels = build.build_labeller(job, schema).label(turns)
        every_turn += turns
        every_label += labels
        rows.append(_row(split, turns, labels))
    rows.append(_row("all 19 splits", every_turn, every_label))
    seconds = time.perf_counter() - start
    setup = {
        "labeller": "rules (cpu-rules)",
        "turns": len(every_turn),
        "seconds": round(seconds, 1),
        "held out": quality.HELD_OUT_SPLIT,
    }
    header = ["split", "turns", *(f"{name} (empty / rules)" for name in ("JGA", "turn acc", "slot F1", "act F1"))]
    table = markdown_table(setup, header, rows)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")


def _row(name: str, turns: list, labels: list) -> list[str]:
    empty, rules = quality.score(turns, None).summary(), quality.score(turns, labels).summary()
    return [name, str(len(turns)), *(f"{empty[k]:.3f} / {rules[k]:.3f}" for k in FIGURES)]


if __name__ == "__main__":
    main()
