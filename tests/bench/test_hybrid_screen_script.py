"""benchmarks/hybrid_screen.py: merges replayed on recorded labels. Fed the rules' own labels as the "LM", every merge
must score exactly what the rules score (each merge of a label with itself is that label)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from labelling import config as job_config
from labelling.bench import quality
from labelling.method import build

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hybrid_screen.py"


def test_merging_the_rules_with_themselves_scores_as_the_rules(tmp_path):
    job = job_config.load(profile="cpu-rules")
    turns = quality.split_turns(job, "train_850_900", dialogues=2)
    labels = build.build_labeller(job).label(turns)
    rep = {
        "setup": {"split": "train_850_900", "lm": "rules"},
        "configurations": {"rules": {"labels": [lab.to_dict() for lab in labels]}},
    }
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rep), encoding="utf-8")
    done = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=True)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "merge" not in line]
    figures = {row.split("|")[1].strip(): row.split("|")[2:6] for row in rows}
    assert set(figures) == {"lm", "rules", "fill", "override", "override, acts by rules", "gaps, acts by rules"}
    assert len({tuple(f) for f in figures.values()}) == 1, figures
    expected = quality.score(turns, labels).summary()
    assert float(figures["rules"][0]) == round(expected["jga"], 3)
