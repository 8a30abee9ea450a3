"""benchmarks/seeding.py on a few labels: the script runs against a real nx-27017 and both seedings agree.

Run as a subprocess, as a user runs it; the counts checked are fixed by the workload (two texts embedded per label
before, none after), so a seeding path that re-embeds, or a script broken by a rename, fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fresh interpreter loading MiniLM and a database server: the slow CI step runs it

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "seeding.py"


def test_seeding_benchmark_reads_stored_vectors_and_retrieves_the_same_examples(tmp_path):
    out = tmp_path / "seeding.json"
    env = {**os.environ, "LABELLING_TORCH_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--labels", "30", "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["labels"] == 30 and report["partitions"] == 1
    assert report["before"]["embedded"] == 60 and report["after"]["embedded"] == 0
    assert report["same_examples"] == {"dst": 1.0, "act": 1.0} and report["queries"] == 30
    assert report["speedup"] == pytest.approx(report["before"]["seconds"] / report["after"]["seconds"])
