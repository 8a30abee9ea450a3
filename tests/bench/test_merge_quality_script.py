"""benchmarks/merge_quality.py: reports split across processes read as one table, and reports on different slices refuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "merge_quality.py"


def _report(path: Path, lm: str, names: list[str], turns: int = 67, dtype: str = "float32", pool_lm: str | None = None) -> str:
    figures = {k: 0.5 for k in ("jga", "jga_fuzzy", "turn_acc", "state_f1", "acts_f1", "act_types_f1", "off_schema", "cut")}
    figures |= {"no_change": 0.25, "seconds_per_turn": 3.0}
    rep = {
        "setup": {"turns": turns, "lm": lm, "dtype": dtype, "pool_lm": pool_lm},
        "configurations": {n: dict(figures) for n in ["always-empty", *names]},
    }
    path.write_text(json.dumps(rep), encoding="utf-8")
    return str(path)


def test_rows_are_named_by_model_and_the_baseline_appears_once(tmp_path):
    a = _report(tmp_path / "a.json", "smollm2", ["greedy"])
    b = _report(tmp_path / "b.json", "qwen2.5-coder-0.5b", ["greedy"])
    c = _report(tmp_path / "c.json", "qwen2.5-coder-0.5b", ["greedy"], dtype="bfloat16")
    d = _report(tmp_path / "d.json", "qwen2.5-coder-0.5b", ["greedy, seeded pool"], pool_lm="qwen2.5-coder-0.5b")
    e = _report(tmp_path / "e.json", "qwen2.5-coder-0.5b", ["greedy, seeded pool"], pool_lm="gold")
    done = subprocess.run([sys.executable, str(SCRIPT), a, b, c, d, e], capture_output=True, text=True, check=True)
    rows = [line.split(" | ")[0].lstrip("| ") for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    qwen = "qwen2.5-coder-0.5b"
    pools = [f"{qwen}: greedy, seeded pool ({qwen} labels)", f"{qwen}: greedy, seeded pool (gold labels)"]
    assert rows == ["always-empty", "smollm2: greedy", f"{qwen}: greedy", f"{qwen} bfloat16: greedy", *pools]
    assert "reports a.json, b.json, c.json, d.json, e.json" in done.stdout


def test_reports_on_different_slices_are_refused(tmp_path):
    a = _report(tmp_path / "a.json", "smollm2", ["greedy"])
    b = _report(tmp_path / "b.json", "smollm2", ["vote"], turns=47)
    done = subprocess.run([sys.executable, str(SCRIPT), a, b], capture_output=True, text=True)
    assert done.returncode == 1 and "different slices" in done.stderr


def test_agreement_counts_turns_with_the_same_state_acts_and_both(tmp_path):
    def report(path: Path, labels: list[tuple[dict, list]]) -> str:
        rows = [{"dialogue_id": "d", "turn_id": i, "state": s, "acts": a} for i, (s, a) in enumerate(labels)]
        path.write_text(json.dumps({"setup": {}, "configurations": {"always-empty": {}, "greedy": {"labels": rows}}}))
        return str(path)

    hotel, taxi = {"hotel": {"area": "east"}}, {"taxi": {"leave at": "10:00"}}
    a = report(tmp_path / "a.json", [(hotel, []), (hotel, ["Goodbye"]), (taxi, [])])
    b = report(tmp_path / "b.json", [(hotel, []), (hotel, []), (hotel, [])])
    done = subprocess.run([sys.executable, str(SCRIPT), "--agree", a, b], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {"turns": 3, "same state": 2, "same acts": 2, "same both": 1}
