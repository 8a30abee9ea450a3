"""Can a model's noisy-channel score rank the gold DST label above distractors? A teacher-forced diagnostic.

For the first N state-changing turns of ``train_0_50`` (not the quality benchmark's held-out slice), with the gold
prior state and the built-in demonstrations as examples, it scores four candidates (gold, ``no_change``, the gold
prior with a demonstration-like ``hotel area=centre`` added, gold minus its last new slot) three ways: the direct
score log p(y | x), the joint channel score log p(y, x) that the labeller uses, and the channel's likelihood part
log p(x | y) alone, and counts how often gold ranks first under each. Usage:
``python benchmarks/channel_ranking.py --turns 12 [--profile cpu-small] [--out F.json]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from labelling import config as job_config
from labelling.corpus import DEFAULT_SPLIT_SIZE, cut_into_splits, read_corpus
from labelling.data import BUNDLED_CORPUS
from labelling.method import build
from labelling.method.channel import JOINT, scoring_requests
from labelling.method.demos import DEMOS
from labelling.method.prompts import DST_CONNECTIVE, DST_PREFIX, Example
from labelling.records import Candidate

SPLIT = "train_0_50"
WAYS = ("direct", "joint", "likelihood")


def candidates(builder, turn) -> dict[str, str]:
    """Gold and its distractors as canonical intent strings."""
    prior, text = turn.last_slot_values, [turn.last_system_utterance, turn.user_utterance]
    out = {
        "gold": builder.intent_string(prior, turn.slot_values, text),
        "no_change": builder.intent_string(prior, prior, text),
        "demo_like": builder.intent_string(prior, {**prior, "hotel": {"area": "centre"}}, text),
    }
    new = [(svc, slot) for svc, slots in turn.turn_slot_values.items() for slot in slots]
    if len(new) >= 2:
        drop = new[-1]
        fewer = {svc: {k: v for k, v in slots.items() if (svc, k) != drop} for svc, slots in turn.slot_values.items()}
        out["gold_minus_one"] = builder.intent_string(prior, fewer, text)
    return out


def rank_turn(labeller, turn) -> dict:
    """The three score lists for one turn's candidates (gold first)."""
    lm, builder = labeller.dst.lm, labeller.builder
    cands = candidates(builder, turn)
    examples = [labeller._dst_example(d) for d in DEMOS]
    target = Example(turn.last_slot_values, turn.last_system_utterance, turn.user_utterance, turn.system_response)
    direct, channel = builder.prompt("dst", examples, target), builder.prompt("dst_channel", examples, target)
    tails = [c[len(DST_PREFIX) :] for c in cands.values()]
    objs = [Candidate(c, [c], 0.0) for c in cands.values()]
    (request,) = scoring_requests(JOINT, channel, objs, DST_PREFIX, DST_CONNECTIVE, turn.user_utterance)
    joint = lm.score(*request)
    prior = lm.score(channel, tails)
    scores = {"direct": lm.score(direct, tails), "joint": joint, "likelihood": [j - p for j, p in zip(joint, prior, strict=True)]}
    return {"turn": f"{turn.dialogue_id}#{turn.turn_id}", "candidates": list(cands), **scores}


def main() -> None:
    """Score the turns, print one JSON line per turn and the gold-first counts, and write them to --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--profile", default="cpu-small")
    parser.add_argument("--out", type=Path, default=Path("channel_ranking.json"))
    args = parser.parse_args()
    labeller = build.build_labeller(job_config.load(profile=args.profile))
    corpus = read_corpus(BUNDLED_CORPUS, labeller.schema)
    turns = [t for t in cut_into_splits(corpus, DEFAULT_SPLIT_SIZE)[SPLIT] if t.turn_slot_values][: args.turns]
    rows = []
    for turn in turns:
        rows.append(rank_turn(labeller, turn))
        print(json.dumps(rows[-1]), flush=True)
    first = {way: sum(r[way].index(max(r[way])) == 0 for r in rows) for way in WAYS}
    summary = {"turns": len(rows), "gold_ranked_first": first}
    print(json.dumps(summary))
    args.out.write_text(json.dumps({"summary": summary, "turns": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
