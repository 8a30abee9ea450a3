"""Precision against coverage: how good the labels a user keeps are, and how many are kept, as a confidence threshold
moves. The policy is the export's (``labelling export --min-confidence``): each dialogue is kept up to its first label
below the threshold, since a state is cumulative and a later turn inherits an early doubt.

``labelling evaluate`` prints the curve, and the HTML report charts it beside the per-partition chart.
"""

from __future__ import annotations

from collections.abc import Sequence

from labelling.method.metrics import MetricsAccumulator
from labelling.records import TurnLabel
from labelling.turns import Turn

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20)) + (0.97, 0.99)  # 0 keeps every label
SHOWN = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)  # the rows of the terminal's table


def kept_prefixes(labels: Sequence[TurnLabel], threshold: float) -> list[TurnLabel]:
    """The labels the export keeps at ``threshold``: each dialogue up to its first label below it (a label without a
    confidence never cuts)."""
    by_dialogue: dict[str, list[TurnLabel]] = {}
    for lab in labels:
        by_dialogue.setdefault(lab.dialogue_id, []).append(lab)
    kept = []
    for turns in by_dialogue.values():
        for lab in sorted(turns, key=lambda lab: lab.turn_id):
            if lab.confidence is not None and lab.confidence < threshold:
                break
            kept.append(lab)
    return kept


def curve(gold: Sequence[Turn], labels: Sequence[TurnLabel], thresholds: Sequence[float] = THRESHOLDS) -> list[dict]:
    """One point per threshold: the share of gold-scored turns kept (``coverage``), and the exact JGA, state slot F1
    and act F1 of the kept labels. Empty when no turn has gold or no label has a confidence."""
    by_key = {t.key: t for t in gold if t.has_gold_state}
    scored = [lab for lab in labels if lab.key in by_key]
    if not scored or all(lab.confidence is None for lab in scored):
        return []
    points = []
    for threshold in thresholds:
        kept = kept_prefixes(scored, threshold)
        acc = MetricsAccumulator()
        for lab in kept:
            acc.add_turn(by_key[lab.key], lab.state, lab.delta, lab.acts)
        summary = acc.summary()
        point = {"threshold": threshold, "kept": len(kept), "turns": len(scored), "coverage": len(kept) / len(scored)}
        point |= {key: summary[key] if kept else None for key in ("jga", "state_f1", "acts_f1")}
        points.append(point)
    return points


def group_curve(group: str) -> list[dict]:
    """The curve over a group's stored labels (every partition, done or not) against its corpus's gold."""
    from labelling.fleet import store

    corpus = store.group_run(group).corpus
    gold, labels = [], []
    for part in store.partitions(group):
        stored = store.load_labels(group, part.split)
        if stored:
            gold += store.load_turns(corpus, part.split)
            labels += [s.label for s in stored]
    return curve(gold, labels)


def best_point(points: Sequence[dict], min_coverage: float = 0.2) -> dict | None:
    """The point with the highest exact JGA among those keeping at least ``min_coverage`` of the turns (ties: the
    larger coverage); None without points."""
    usable = [p for p in points if p["jga"] is not None and p["coverage"] >= min_coverage]
    return max(usable, key=lambda p: (p["jga"], p["coverage"]), default=None)
