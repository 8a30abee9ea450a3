"""Screen the rule/LM merges on labels an LM already made, without running the LM again.

Reads a quality report (``labelling quality --out``) holding an LM configuration's labels, replays the rule labeller
over the same turns, and scores each merge as ``with_rules`` applies it: the LM alone, the rules alone, ``fill``,
``override`` and ``gaps`` (acts merged the same way, or by the rules). It is a screen, not the hybrid itself: in a
live hybrid the LM sees the merged state in its prompt, so its later labels would differ. Live rows are measured with
``labelling quality`` (README, Label quality).

    .venv/bin/python benchmarks/hybrid_screen.py benchmarks/results/quality_2026-12-06/qwen_train_850_900.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from labelling import config as job_config
from labelling import ontology
from labelling.bench import quality
from labelling.bench.tables import markdown_table
from labelling.cues import load_cues
from labelling.data import BUNDLED_CUES, BUNDLED_ONTOLOGY
from labelling.method.metrics import MetricsAccumulator
from labelling.method.rules import RuleLabeller, free_text_gaps, merge_acts, merge_states
from labelling.records import TurnLabel
from labelling.states import compute_delta

MERGES = ("lm", "rules", "fill", "override", "override, acts by rules", "gaps, acts by rules")
FIGURES = ("jga", "turn_acc", "state_f1", "acts_f1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a quality report with an LM configuration's labels")
    parser.add_argument("--configuration", help="which configuration's labels (default: the first with labels)")
    args = parser.parse_args()
    rep = json.loads(args.report.read_text())
    named = [n for n, f in rep["configurations"].items() if f.get("labels") and n != quality.BASELINE]
    name = args.configuration or named[0]
    labels = {(d["dialogue_id"], d["turn_id"]): TurnLabel.from_dict(d) for d in rep["configurations"][name]["labels"]}
    job = job_config.load(profile="cpu-rules")
    turns = [t for t in quality.split_turns(job, rep["setup"]["split"]) if t.key in labels]
    rows = [[how, *(f"{v:.3f}" for v in _replay(job, turns, labels, how))] for how in MERGES]
    setup = {"report": str(args.report), "configuration": name, "turns": len(turns), "lm": rep["setup"].get("lm")}
    print(markdown_table(setup, ["merge", "JGA (exact)", "turn accuracy", "slot F1", "act F1"], rows))


def _replay(job, turns, labels, how: str) -> list[float]:
    """One merge over the turns in corpus order, the rules fed the merged state as the labeller feeds them."""
    schema = job.load_schema()
    rules = RuleLabeller(schema, ontology.load(BUNDLED_ONTOLOGY), load_cues(BUNDLED_CUES))
    acc, states = MetricsAccumulator(), {}
    for turn in turns:
        prior, lm = states.get(turn.dialogue_id, {}), labels[turn.key]
        ruled = compute_delta(prior, rules.dst(turn.dialogue_id, turn.last_system_utterance, turn.user_utterance, prior))
        state = _merged_state(schema, how, prior, lm.delta, ruled)
        states[turn.dialogue_id] = state
        rule_acts = rules.acts(turn.dialogue_id, turn.system_response, state)
        acts = {"lm": lm.acts, "fill": merge_acts(lm.acts, rule_acts), "override": merge_acts(rule_acts, lm.acts)}
        acc.add_turn(turn, state, compute_delta(prior, state), acts.get(how, rule_acts))
    summary = acc.summary()
    return [summary[k] for k in FIGURES]


def _merged_state(schema, how: str, prior, lm_delta, ruled):
    """The state a merge leaves: the LM's or the rules' delta alone, or both with the second winning."""
    if how == "lm":
        return merge_states(prior, {}, lm_delta)
    if how == "rules":
        return merge_states(prior, {}, ruled)
    if how == "fill":
        return merge_states(prior, ruled, lm_delta)
    ours = free_text_gaps(schema, lm_delta, ruled) if how.startswith("gaps") else lm_delta
    return merge_states(prior, ours, ruled)


if __name__ == "__main__":
    main()
