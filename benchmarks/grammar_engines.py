"""Compare the two grammar engines that install as CPU wheels (llguidance 1.9.1, xgrammar 0.2.9) on our schema grammars.

Both compile the same Lark text from labelling/method/grammar.py and walk the token paths of gold completions of the bundled
dev corpus (tokenised with the SmolLM2 tokenizer), computing the next-token mask before every token, as the decode loop
does. Reported per engine: grammar compile seconds, mask microseconds per token, gold completions accepted, and whether
the two engines' masks agree bit for bit along every path. xgrammar is optional (`pip install xgrammar==0.2.9`, which
pulls triton, ~1 GB); nothing in the package imports this file.

    python benchmarks/grammar_engines.py --turns 60 --out benchmarks/results/grammar_engines.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import llguidance
import numpy as np

from labelling.corpus import read_corpus
from labelling.method.canonical import Canonicaliser
from labelling.method.grammar import SchemaGrammar
from labelling.method.prompts import ACT_PREFIX, DST_PREFIX, PromptBuilder
from labelling.schema import Schema
from labelling.states import SchemaNormalizer

CORPUS = Path(__file__).resolve().parents[1] / "labelling" / "data" / "multiwoz21_dev.json.zip"


def gold_paths(schema: Schema, grammar: SchemaGrammar, turns: int) -> list[tuple[str, str]]:
    """(grammar text, completion) for the DST and act gold labels of the corpus's first `turns` turns."""
    builder, canon, norm = PromptBuilder(schema), Canonicaliser(schema), SchemaNormalizer(schema)
    out = []
    for turn in [t for d in read_corpus(CORPUS, schema) for t in d][:turns]:
        prior, state = norm.normalize(turn.last_slot_values or {}), norm.normalize(turn.slot_values or {})
        said = [turn.last_system_utterance, turn.user_utterance]
        out.append((grammar.dst_lark(prior), builder.intent_string(prior, state, said)[len(DST_PREFIX) :] + "\n"))
        acts = [canon.order(a) for a in turn.system_response_acts or []]
        out.append((grammar.act_grammar, builder.acts_string(acts)[len(ACT_PREFIX) :] + "\n"))
    return out


def run_llguidance(tokenizer, paths, vocab: int) -> dict:
    """Compile each distinct grammar once, then mask + consume along every path."""
    lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
    compiled, compile_s, mask_s, tokens, accepted, masks = {}, [], 0.0, 0, 0, []
    for grammar, text in paths:
        if grammar not in compiled:
            start = time.perf_counter()
            compiled[grammar] = llguidance.LLMatcher(lltok, grammar, log_level=0)
            compile_s.append(time.perf_counter() - start)
        matcher, ok, path = compiled[grammar].deep_copy(), True, []
        for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
            start = time.perf_counter()
            mask = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), count=vocab, bitorder="little")
            ok = matcher.consume_token(token) and ok
            mask_s += time.perf_counter() - start
            tokens += 1
            path.append(mask)
        accepted += ok and matcher.is_accepting()
        masks.append(path)
    return _summary("llguidance", compile_s, mask_s, tokens, accepted, len(paths)), masks


def run_xgrammar(tokenizer, paths, vocab: int) -> tuple[dict, list]:
    """The same walk with xgrammar's compiler (one thread, as on our 2-core workers) and matcher."""
    import torch
    import xgrammar as xgr

    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab), max_threads=1)
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    compiled, compile_s, mask_s, tokens, accepted, masks = {}, [], 0.0, 0, 0, []
    for grammar, text in paths:
        if grammar not in compiled:
            start = time.perf_counter()
            compiled[grammar] = compiler.compile_lark(grammar)
            compile_s.append(time.perf_counter() - start)
        matcher, ok, path = xgr.GrammarMatcher(compiled[grammar]), True, []
        for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
            start = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            ok = matcher.accept_token(token) and ok
            mask_s += time.perf_counter() - start
            tokens += 1
            packed = bitmask[0].numpy().view(np.uint8)
            path.append(np.unpackbits(packed, count=vocab, bitorder="little"))
        accepted += ok and matcher.is_completed()
        masks.append(path)
    del torch
    return _summary("xgrammar", compile_s, mask_s, tokens, accepted, len(paths)), masks


def _summary(engine: str, compile_s: list[float], mask_s: float, tokens: int, accepted: int, paths: int) -> dict:
    return {
        "engine": engine,
        "grammars": len(compile_s),
        "compile_s_median": round(statistics.median(compile_s), 4),
        "compile_s_max": round(max(compile_s), 4),
        "mask_us_per_token": round(1e6 * mask_s / tokens, 1),
        "tokens": tokens,
        "gold_accepted": f"{accepted}/{paths}",
    }


def main() -> None:
    """Run both engines on the same paths and print (and optionally write) the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from labelling.engine import model_files

    tokenizer = AutoTokenizer.from_pretrained(model_files.smollm2_tokenizer_dir())
    schema = Schema.load()
    vocab = len(tokenizer)
    paths = gold_paths(schema, SchemaGrammar(schema, tokenizer), args.turns)
    report, ll_masks = run_llguidance(tokenizer, paths, vocab)
    results = [report]
    try:
        xg_report, xg_masks = run_xgrammar(tokenizer, paths, vocab)
        xg_report["masks_equal_llguidance"] = all(
            np.array_equal(a, b) for pa, pb in zip(ll_masks, xg_masks, strict=True) for a, b in zip(pa, pb, strict=True)
        )
        results.append(xg_report)
    except ImportError:
        results.append({"engine": "xgrammar", "skipped": "not installed"})
    text = json.dumps({"turns": args.turns, "paths": len(paths), "results": results}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
