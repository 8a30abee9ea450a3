"""benchmarks/gold_pool.py: a split's gold as a quality report that `--pool-from` reads back into gold examples."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from labelling.bench import quality


@pytest.mark.slow  # reads the bundled corpus three times
def test_the_gold_report_seeds_a_pool_that_holds_the_splits_gold(fast_job):
    script = runpy.run_path(str(Path(__file__).resolve().parents[2] / "benchmarks" / "gold_pool.py"), run_name="gold")
    labels = script["gold_labels"]("train_850_900")
    turns = quality.split_turns(fast_job, "train_850_900")
    assert len(labels) == len(turns) == 390
    rep = {"setup": {"split": "train_850_900", "lm": "gold"}, "configurations": {"gold": {"labels": labels}}}
    found = quality.report_pool(rep, lambda split: quality.split_turns(fast_job, split), quality.HELD_OUT_SPLIT)
    pool, note = found.examples, found.note
    assert note.startswith("390 labels of train_850_900 (gold")
    by_key = {t.key: t for t in turns}
    for example in pool:
        gold = by_key[example.key]
        assert example.slot_values == (gold.slot_values or {}) and example.system_response_acts == gold.system_response_acts
