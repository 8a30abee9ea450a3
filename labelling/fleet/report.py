"""A group's quality as a small static HTML page: score tables, the error breakdown, and a PNG chart of JGA and act
F1 per partition in labelling order, so a reader sees whether labels improve as the example pool grows."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from labelling.method.metrics import METRIC_TITLES

REPORT_FILE = "report.html"
CHART_FILE = "quality.png"
ABSTENTION_CHART = "abstention.png"  # precision against coverage, beside the per-partition chart
# (summary key, column title) of the score tables; the exact numbers are the headline, the fuzzy one is named as such.
SCORE_COLUMNS = tuple(
    (key, METRIC_TITLES[key]) for key in ("jga", "jga_fuzzy", "turn_acc", "state_f1", "acts_f1", "act_types_f1")
)


def labelling_order(partitions: Sequence[dict]) -> list[dict]:
    """Partitions in the order they were labelled: finished ones by finish time, then the rest in their planned order."""
    return sorted(partitions, key=lambda p: (p.get("finished_at") is None, p.get("finished_at") or 0, p.get("order", 0)))


def chart(report: dict, out: Path) -> Path:
    """Write the PNG: exact JGA and act F1 per partition, in labelling order, with the pool size each started from."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers and CI
    import matplotlib.pyplot as plt

    parts = [p for p in labelling_order(report["partitions"]) if p["metrics"].get("n_dst") or p["metrics"].get("n_acts")]
    labels = [f"{p['split']}\n(pool {p.get('pool_examples', 0)})" for p in parts]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(parts) + 2), 3.6), dpi=110)
    x = range(len(parts))
    nan = float("nan")  # a partition with no gold for one module leaves a gap, not a zero
    ax.plot(x, [_or(p["metrics"]["jga"], nan) for p in parts], marker="o", label="JGA (exact)")
    ax.plot(x, [_or(p["metrics"]["acts_f1"], nan) for p in parts], marker="s", label="act F1 (type, domain, slot)")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(f"group {report['group']}: per partition, in labelling order")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def abstention_chart(points: Sequence[dict], title: str, out: Path) -> Path:
    """Write the PNG: exact JGA, state slot F1 and act F1 of the labels kept against the share kept, one point per
    confidence threshold (each dialogue kept up to its first label below it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nan = float("nan")
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=110)
    coverage = [p["coverage"] for p in points]
    for key, name, marker in (("jga", "JGA (exact)", "o"), ("state_f1", "state slot F1", "^"), ("acts_f1", "act F1", "s")):
        ax.plot(coverage, [_or(p[key], nan) for p in points], marker=marker, markersize=3, label=name)
    for p in points:
        if p["threshold"] in (0.5, 0.85, 0.95) and p["jga"] is not None:
            ax.annotate(f"{p['threshold']:g}", (p["coverage"], p["jga"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1)
    ax.set_xlabel("share of turns kept (coverage)")
    ax.set_ylabel("score of the kept labels")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def write(report: dict, folder: Path) -> Path:
    """Write ``report.html`` and its charts into ``folder`` (created if needed); returns the HTML file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    chart(report, folder / CHART_FILE)
    if report.get("abstention"):
        title = f"group {report['group']}: precision against coverage"
        abstention_chart(report["abstention"], title, folder / ABSTENTION_CHART)
    page = folder / REPORT_FILE
    page.write_text(render(report), encoding="utf-8")
    return page


def render(report: dict) -> str:
    """The HTML page for a ``group_scores`` report (with its ``errors`` breakdown)."""
    rows = [
        [p["split"], p["status"], f"{p['turns_done']}/{p['turns_total']}", str(p.get("pool_examples", 0)), *_scores(p["metrics"])]
        for p in labelling_order(report["partitions"])
    ]
    rows.append(["all", "", str(sum(p["turns_done"] for p in report["partitions"])), "", *_scores(report["overall"])])
    header = ["partition", "status", "turns", "pool at start", *(title for _, title in SCORE_COLUMNS)]
    errors = report.get("errors", {})
    body = [
        f"<h1>Label quality: group {_e(report['group'])}</h1>",
        "<p>Scores against the corpus's gold labels. Exact numbers are the headline; the fuzzy JGA is the reference's "
        "lenient one (a value counts when it is a near-substring of the gold one). Turns without gold are not counted.</p>",
        f'<img src="{CHART_FILE}" alt="JGA and act F1 per partition in labelling order">',
        *_abstention_image(report),
        "<h2>Per partition, in labelling order</h2>",
        _table(header, rows),
        *_abstention_section(report),
        "<h2>State slots most often missed or invented</h2>",
        _table(["slot", "missed", "invented"], _error_rows(errors.get("slots", []))),
        "<h2>Act types most often missed or invented (counted in (type, domain, slot) triples)</h2>",
        _table(["act type", "missed", "invented"], _error_rows(errors.get("acts", []))),
    ]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}"
        "th{background:#eee}"
    )
    head = f"<meta charset='utf-8'><title>Label quality: {_e(report['group'])}</title><style>{style}</style>"
    return f"<!doctype html>\n<html><head>{head}</head><body>\n" + "\n".join(body) + "\n</body></html>\n"


def _abstention_image(report: dict) -> list[str]:
    if not report.get("abstention"):
        return []
    return [f'<img src="{ABSTENTION_CHART}" alt="JGA, slot F1 and act F1 of the kept labels against the share kept">']


def _abstention_section(report: dict) -> list[str]:
    points = report.get("abstention") or []
    if not points:
        return []
    rows = [
        [f"{p['threshold']:g}", f"{p['kept']}/{p['turns']}", f"{p['coverage']:.1%}"]
        + ["-" if p[k] is None else f"{p[k]:.3f}" for k in ("jga", "state_f1", "acts_f1")]
        for p in points
    ]
    return [
        "<h2>Abstention: precision against coverage</h2>",
        "<p>Each dialogue kept up to its first label whose confidence is below the threshold "
        "(<code>labelling export --min-confidence</code>); scores are of the kept labels.</p>",
        _table(["min confidence", "turns kept", "coverage", "JGA (exact)", "state slot F1", "act F1"], rows),
    ]


def _scores(summary: dict) -> list[str]:
    out = []
    for key, _ in SCORE_COLUMNS:
        scored = summary["n_acts"] if key.startswith("act") else summary["n_dst"]
        out.append(f"{summary[key]:.3f}" if scored else "-")
    return out


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _error_rows(rows: Sequence[Sequence]) -> list[list[str]]:
    return [[str(cell) for cell in row] for row in rows]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(text: object) -> str:
    return html.escape(str(text))
