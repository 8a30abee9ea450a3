"""Per-token cost of schema-constrained sampling with the embedded SmolLM2 model on the CPU, in one run.

The same DST and act prompts (bundled dev turns with the built-in demonstrations as examples, cpu-small sampling
settings) are sampled with constraints off and on, alternating, so both see the same machine load. Reported: generated
tokens per second each way and their ratio (overall, and in the decode phase alone, which excludes prompt
encoding), the milliseconds the grammar spends per token (mask + advance), and what
the parser records for each way: the share of samples with any parse error, with an off-schema error (unknown intent,
argument, act, entity or service), and the share cut by max_new_tokens. Nothing in the package imports this file.

    python benchmarks/grammar_overhead.py --turns 6 --repeats 2 --out benchmarks/results/grammar_overhead.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from labelling import config as job_config
from labelling.corpus import read_corpus
from labelling.engine.generation import SamplingParams
from labelling.engine.lm import LanguageModel
from labelling.method.canonical import Canonicaliser
from labelling.method.demos import DEMOS
from labelling.method.grammar import SchemaGrammar
from labelling.method.labeller import PartitionLabeller
from labelling.method.parsing import ActParser, DstParser
from labelling.method.prompts import ACT_PREFIX, DST_PREFIX, Example
from labelling.schema import Schema

CORPUS = Path(__file__).resolve().parents[1] / "labelling" / "data" / "multiwoz21_dev.json.zip"
OFF_SCHEMA = ("unknown intent", "unknown argument", "not an act", "unknown entity", "unknown service", "not an agent call")


class Timed:
    """Wraps a row constraint and adds the seconds it spends to a shared counter."""

    def __init__(self, inner, clock: list[float]):
        self.inner, self.clock = inner, clock

    def allowed(self):
        start = time.perf_counter()
        mask = self.inner.allowed()
        self.clock[0] += time.perf_counter() - start
        return mask

    def advance(self, token: int) -> None:
        start = time.perf_counter()
        self.inner.advance(token)
        self.clock[0] += time.perf_counter() - start


def workload(schema: Schema, turns: int):
    """DST and act prompts, priors, and the cpu-small sampling settings of each module."""
    job = job_config.load(profile="cpu-small")
    labeller = PartitionLabeller(job, schema, None, None, None, None)
    dialogues = read_corpus(CORPUS, schema)
    picked = [d[min(1, len(d) - 1)] for d in dialogues[:: max(1, len(dialogues) // turns)]][:turns]
    dst_demos = [labeller.dst.render(t) for t in DEMOS[: job.dst.retriever.k_examples]]
    act_demos = [labeller.act.render(t) for t in DEMOS[: job.act_tag.retriever.k_examples]]
    priors, dst, act = [], [], []
    for t in picked:
        prior = t.last_slot_values or {}
        priors.append(prior)
        dst.append(labeller.builder.prompt("dst", dst_demos, Example(prior, t.last_system_utterance, t.user_utterance, "")))
        target = Example(t.slot_values or {}, t.last_system_utterance, t.user_utterance, t.system_response)
        act.append(labeller.builder.prompt("act", act_demos, target))
    return priors, dst, act, labeller._params(labeller.dst), labeller._params(labeller.act)


def parse_stats(schema: Schema, priors, dst_samples, act_samples) -> dict:
    """Shares of samples with a parse error, an off-schema error, and cut by max_new_tokens, as the parser records them."""
    dst_parser, act_parser = DstParser(schema), ActParser(schema)
    errors = [dst_parser.parse(DST_PREFIX + s.text, p).errors for p, ss in zip(priors, dst_samples, strict=True) for s in ss]
    errors += [act_parser.parse(ACT_PREFIX + s.text).errors for ss in act_samples for s in ss]
    samples = [s for ss in [*dst_samples, *act_samples] for s in ss]
    return {
        "samples": len(samples),
        "with_parse_error": round(sum(bool(e) for e in errors) / len(samples), 3),
        "off_schema": round(sum(any(x.startswith(OFF_SCHEMA) or ": unknown" in x for x in e) for e in errors) / len(samples), 3),
        "cut_by_max_new_tokens": round(sum(not s.stopped for s in samples) / len(samples), 3),
    }


def main() -> None:
    """Alternate constrained and plain sampling of the same prompts; print and optionally write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    schema = Schema.load()
    lm = LanguageModel.load("smollm2", device="cpu", dtype="float32")
    priors, dst_prompts, act_prompts, dst_params, act_params = workload(schema, args.turns)
    grammar = SchemaGrammar(schema, lm.tokenizer)
    Canonicaliser(schema)  # warm the parsers' imports before timing
    keys = ("seconds", "tokens", "grammar_seconds", "decode_seconds", "decode_tokens")
    totals = {way: dict.fromkeys(keys, 0.0) for way in ("off", "on")}
    parsed = {}
    for repeat in range(args.repeats):
        for way in ("off", "on"):
            clock = [0.0]
            dst_c = [lambda p=p, c=clock: Timed(grammar.dst(p), c) for p in priors] if way == "on" else None
            act_c = [lambda c=clock: Timed(grammar.acts(), c)] * len(act_prompts) if way == "on" else None
            before, start = lm.stats.copy(), time.perf_counter()
            seed = SamplingParams().seed + repeat
            dst = lm.sample(dst_prompts, replace(dst_params, seed=seed), dst_c)
            act = lm.sample(act_prompts, replace(act_params, seed=seed), act_c)
            totals[way]["seconds"] += time.perf_counter() - start
            totals[way]["tokens"] += lm.stats.generated_tokens - before.generated_tokens
            for key in ("decode_seconds", "decode_tokens"):
                totals[way][key] += getattr(lm.stats, key) - getattr(before, key)
            totals[way]["grammar_seconds"] += clock[0]
            parsed.setdefault(way, []).append(parse_stats(schema, priors, dst, act))
    report = {"turns": args.turns, "repeats": args.repeats, "model": "smollm2 (fp32, CPU)"}
    for way, t in totals.items():
        report[way] = {
            "tokens": int(t["tokens"]),
            "seconds": round(t["seconds"], 2),
            "tokens_per_s": round(t["tokens"] / t["seconds"], 2),
            "decode_tokens_per_s": round(t["decode_tokens"] / t["decode_seconds"], 2),
            "grammar_ms_per_token": round(1000 * t["grammar_seconds"] / max(t["tokens"], 1), 3),
            "parse": parsed[way],
        }
    for key in ("tokens_per_s", "decode_tokens_per_s"):
        report[f"{key}_ratio_on_over_off"] = round(report["on"][key] / report["off"][key], 3)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
