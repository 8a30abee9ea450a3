"""benchmarks/few_row_linear.py on a short cache: the script runs as a user runs it and both kinds of layer agree.

The timings are not checked (a benchmark, not a timed test); the logits of the two kinds of layer are, and a script
broken by a rename fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fresh interpreter loading the embedded model: the slow CI step runs it

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "few_row_linear.py"


def test_few_row_linear_benchmark_reports_every_shape_with_the_same_logits(tmp_path):
    out = tmp_path / "few_row_linear.json"
    args = ["--threads", "1", "--cache", "64", "--steps", "1", "--rounds", "1", "--out", str(out)]
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    shapes = [(r["rows"], r["tokens_per_row"]) for r in report["shapes"]]
    assert shapes == [(1, 1), (1, 2), (3, 1), (3, 2), (6, 2), (9, 1), (9, 2)]
    for row in report["shapes"]:
        assert row["max_logit_diff"] < 1e-3
        assert row["ratio"] == pytest.approx(row["plain_ms"] / row["few_row_ms"])
    assert [row["rows"] for row in report["layers"]] == [1, 2, 3, 4, 6, 9, 12, 16, 18, 27]
    assert all(row[k] > 0 for row in report["layers"] for k in ("linear_ms", "weight_x_t_ms", "few_row_ms"))
