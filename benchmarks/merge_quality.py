"""Merge several `labelling quality` reports on the same slice into one markdown table.

Each row is prefixed with its report's model (the `lm` of its setup) and the always-empty baseline appears once, so runs
split across processes (one model, configuration or pool per process) read as one table:

    python benchmarks/merge_quality.py benchmarks/results/quality_*.json > benchmarks/results/quality.md

With ``--agree A.json B.json`` it prints instead how often two runs' first configurations chose the same labels, turn by
turn (e.g. bf16 against float32 weights).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from labelling.bench import quality
from labelling.bench.tables import markdown_table


def merge(reports: list[dict]) -> dict:
    """One report whose configurations are every report's, named ``lm: configuration``; the baseline once."""
    slices = {(r["setup"].get("split", quality.HELD_OUT_SPLIT), r["setup"]["turns"]) for r in reports}
    if len(slices) != 1:
        raise SystemExit(f"error: the reports label different slices: {sorted(slices)}")
    merged: dict = {}
    for rep in reports:
        for name, figures in rep["configurations"].items():
            key = name if name == quality.BASELINE else f"{_model(rep['setup'])}: {name}{_pool(rep['setup'])}"
            merged.setdefault(key, figures)
    setup = {k: v for k, v in reports[0]["setup"].items() if k not in ("lm", "dtype", "config", "pool", "pool_lm", "profile")}
    setup["reports"] = ", ".join(sorted({Path(r["_path"]).name for r in reports}))
    return {"setup": setup, "configurations": merged}


def _model(setup: dict) -> str:
    """The report's model, with its dtype when that is not the float32 the embedded models run in."""
    dtype = setup.get("dtype")
    return setup["lm"] if dtype in (None, "float32") else f"{setup['lm']} {dtype}"


def agreement(a: dict, b: dict) -> dict:
    """Turns labelled by both reports' first configurations, and how many got the same state, acts, and both."""

    def labels(rep: dict) -> dict:
        figures = next(f for n, f in rep["configurations"].items() if n != quality.BASELINE)
        return {(d["dialogue_id"], d["turn_id"]): (d["state"], d["acts"]) for d in figures["labels"]}

    left, right = labels(a), labels(b)
    keys = sorted(set(left) & set(right))
    same = [(left[k][0] == right[k][0], left[k][1] == right[k][1]) for k in keys]
    return {
        "turns": len(keys),
        "same state": sum(s for s, _ in same),
        "same acts": sum(a for _, a in same),
        "same both": sum(s and a for s, a in same),
    }


def _pool(setup: dict) -> str:
    """Whose labels seeded the run's pool, so two pools stay two rows."""
    return f" ({setup['pool_lm']} labels)" if setup.get("pool_lm") else ""


def main(paths: list[str]) -> None:
    if paths[:1] == ["--agree"]:
        a, b = (json.loads(Path(p).read_text(encoding="utf-8")) for p in paths[1:3])
        print(json.dumps(agreement(a, b)))
        return
    reports = []
    for path in paths:
        rep = json.loads(Path(path).read_text(encoding="utf-8"))
        rep["_path"] = path
        reports.append(rep)
    rep = merge(reports)
    print(markdown_table(rep["setup"], *quality.table_rows(rep)), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
