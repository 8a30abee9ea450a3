"""Precision against coverage of the labels in a `labelling quality` report, with each label's confidence taken as
stored, or recomputed from its stored evidence (the candidates' channel scores and sample counts) for reports written
before confidences were stored. Nothing is labelled again.

    python benchmarks/confidence_curve.py benchmarks/results/quality_2026-12-06/qwen.json [CONFIGURATION ...] [--chart F.png]

Prints, per configuration, the exact JGA, slot F1 and act F1 of the labels kept as the threshold moves (each dialogue
kept up to its first label below it, as `labelling export --min-confidence` keeps them), and the same with the
confidence read as a vote of the samples (the share that agree), which any sampled configuration also has.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from labelling import config
from labelling.bench import quality
from labelling.fleet.abstention import curve
from labelling.method import confidence
from labelling.method.channel import VOTE, choose
from labelling.records import ModuleOutput, TurnLabel


def recomputed(output: ModuleOutput, mode: str) -> float:
    """The module's confidence from its stored candidates, as the labeller computes it for ``mode`` (0 for a turn
    that got the "nothing" answer)."""
    if not output.candidates:
        return 0.0
    evidence = confidence.Evidence(mode, output.candidates, choose(output.candidates), (), output.cut_samples)
    return confidence.of(evidence) or 0.0


def with_confidence(label: TurnLabel, modes: dict) -> TurnLabel:
    """``label`` with each module's confidence recomputed under ``modes`` (module -> generation mode)."""
    dst = replace(label.dst, confidence=recomputed(label.dst, modes["dst"]))
    act = replace(label.act, confidence=recomputed(label.act, modes["act_tag"]))
    return replace(label, dst=dst, act=act)


def table(name: str, points: list[dict]) -> list[str]:
    lines = [
        f"### {name}",
        "",
        "| min confidence | kept | coverage | JGA (exact) | slot F1 | act F1 |",
        "|---|---|---|---|---|---|",
    ]
    for p in points:
        scores = ["-" if p[k] is None else f"{p[k]:.3f}" for k in ("jga", "state_f1", "acts_f1")]
        lines.append(f"| {p['threshold']:g} | {p['kept']}/{p['turns']} | {p['coverage']:.1%} | " + " | ".join(scores) + " |")
    return [*lines, ""]


def main(path: str, *names: str) -> None:
    chart = None
    if "--chart" in names:
        at = names.index("--chart")
        chart, names = Path(names[at + 1]), names[:at] + names[at + 2 :]
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    setup = report["setup"]
    turns = quality.split_turns(config.load(), setup.get("split", quality.HELD_OUT_SPLIT), setup.get("dialogues"))
    for name, figures in report["configurations"].items():
        if (names and name not in names) or not figures.get("labels"):
            continue
        labels = [TurnLabel.from_dict(d) for d in figures["labels"]]
        modes = {m: (o.get("generation_cfg") or {}).get("generation_mode", "greedy") for m, o in figures["overrides"].items()}
        if all(lab.dst.confidence is None for lab in labels):
            labels = [with_confidence(lab, modes) for lab in labels]
        points = curve(turns, labels)
        print("\n".join(table(f"{name} (confidence of its own mode)", points)))
        if chart is not None:
            from labelling.fleet.report import abstention_chart

            abstention_chart(points, f"{setup.get('lm')}, {name}: precision vs coverage", chart)
            chart = None
        if any(len(c.raw) > 1 or len(lab.dst.candidates) > 1 for lab in labels for c in lab.dst.candidates):
            voted = [with_confidence(lab, {"dst": VOTE, "act_tag": VOTE}) for lab in labels]
            print("\n".join(table(f"{name} (confidence read as a vote of its samples)", curve(turns, voted))))


if __name__ == "__main__":
    main(*sys.argv[1:])
