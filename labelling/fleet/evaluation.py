"""A group's scores against gold, overall and per partition, from the metric counts each partition stores as it goes.

``labelling evaluate``, the demo and the HTML report (``report.py``) read this one dict.
"""

from __future__ import annotations

from labelling.fleet import store
from labelling.method.metrics import ACT_FAMILIES, DST_METRICS, MetricsAccumulator
from labelling.records import FLAGGED_TURNS

ERRORS_SHOWN = 10  # rows of the error breakdown: the slots and act types with the most errors


def group_scores(group: str) -> dict:
    """Per-partition and overall metric summaries of a group, from the counts each partition stores as it goes."""
    rows, overall = [], MetricsAccumulator()
    for part in store.partitions(group):
        counts = MetricsAccumulator.from_dict(part.metrics or {})
        overall.merge(counts)
        row = {"split": part.split, "status": part.status, "turns_done": part.turns_done, "turns_total": part.turns_total}
        # When and with how big a pool it was labelled: the report charts partitions in that order.
        row.update(order=part.order, finished_at=part.finished_at, pool_examples=(part.pool or [{}])[0].get("examples", 0))
        rows.append({**row, "metrics": scored(counts.summary()), "flags": flag_counts(counts)})
    summary = {"overall": scored(overall.summary()), "flags": flag_counts(overall), "errors": overall.errors(top=ERRORS_SHOWN)}
    from labelling.fleet.abstention import group_curve

    return {"group": group, **summary, "partitions": rows, "abstention": group_curve(group)}


def scored(summary: dict) -> dict:
    """A metrics summary with null, not 0.0, for scores no turn could be scored for (no gold or no labels yet)."""
    unscored = [*DST_METRICS, "state_precision", "state_recall", "state_f1"] if not summary["n_dst"] else []
    if not summary["n_acts"]:
        unscored += [f"{family}_{score}" for family in ACT_FAMILIES for score in ("precision", "recall", "f1")]
    return {k: None if k in unscored else v for k, v in summary.items()}


def flag_counts(counts: MetricsAccumulator) -> dict[str, int]:
    """Flagged turns (``flagged_turns``) and turns per flag (``flag_<name>``) from a MetricsAccumulator's totals."""
    return {k: v for k, v in sorted(counts.totals.items()) if k == FLAGGED_TURNS or k.startswith("flag_")}
