"""How many new tokens the gold labels of the bundled corpus take in a model's own tokenizer: the source of each embedded
model's `max_new_tokens` (labelling/embedded.py).

Every gold label of the bundled MultiWOZ 2.1 dev set (7,365 turns) is rendered as the completion a model writes after
the prompt's target (`user_intent=[agent.` for DST, `system_acts=[` for acts), up to and including the line break that
stops it, and tokenized alone. The limit is the 99th percentile, rounded up to a whole token, then raised to the next
multiple of 8 above it (at least one token to spare, for a completion that tokenizes differently after its prompt):
room for nearly every gold label, while a sample that runs on is cut early. The held-out quality slice is not used.

    .venv/bin/python benchmarks/completion_lengths.py --model smollm2 --model qwen2.5-coder-0.5b
    .venv/bin/python benchmarks/completion_lengths.py --tokenizer PATH   # any tokenizer folder or hub id

Prints one JSON object per model: turns, p50, p90, p99, max and the limit the rule gives, per module.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from labelling import embedded
from labelling.config import JobConfig
from labelling.corpus import read_corpus
from labelling.data import BUNDLED_CORPUS
from labelling.method.canonical import Canonicaliser
from labelling.method.prompts import ACT_PREFIX, DST_PREFIX
from labelling.schema import Schema

STOP = "\n"  # the stops are `]` + line break: the line break is generated too


def gold_completions() -> dict[str, list[str]]:
    """The gold DST and act completions of every turn of the bundled corpus, as a model would write them."""
    schema = Schema.load(None, tuple(JobConfig().services))
    canon = Canonicaliser(schema)
    out: dict[str, list[str]] = {"dst": [], "act_tag": []}
    for dialogue in read_corpus(BUNDLED_CORPUS, schema):
        prior: dict = {}
        for turn in dialogue:
            text = [turn.last_system_utterance, turn.user_utterance]
            out["dst"].append(canon.builder.intent_string(prior, turn.slot_values, text)[len(DST_PREFIX) :] + STOP)
            out["act_tag"].append(canon.builder.acts_string(turn.system_response_acts)[len(ACT_PREFIX) :] + STOP)
            prior = turn.slot_values
    return out


def limit_for(p99: int) -> int:
    """The `max_new_tokens` a 99th percentile gives: the next multiple of 8 above it."""
    return 8 * (p99 // 8 + 1)


def measure(tokenizer, completions: dict[str, list[str]]) -> dict:
    """Token counts of the completions under ``tokenizer``: percentiles and the resulting limit, per module."""
    report = {}
    for module, texts in completions.items():
        lengths = np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])
        p99 = math.ceil(float(np.percentile(lengths, 99)))
        report[module] = {
            "turns": len(texts),
            "p50": float(np.percentile(lengths, 50)),
            "p90": float(np.percentile(lengths, 90)),
            "p99": p99,
            "max": int(lengths.max()),
            "max_new_tokens": limit_for(p99),
        }
    return report


def _tokenizer(name: str):
    from transformers import AutoTokenizer

    from labelling.engine import model_files

    record = embedded.find(name)
    if record is embedded.SMOLLM2:
        return AutoTokenizer.from_pretrained(model_files.smollm2_tokenizer_dir())  # no weights needed
    return AutoTokenizer.from_pretrained(model_files.resolve_lm(name) if record else name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], help="an embedded model's alias (repeatable)")
    parser.add_argument("--tokenizer", action="append", default=[], help="a tokenizer folder or hub id (repeatable)")
    args = parser.parse_args()
    completions = gold_completions()
    for name in args.model + args.tokenizer:
        print(json.dumps({"model": name, **measure(_tokenizer(name), completions)}))


if __name__ == "__main__":
    main()
