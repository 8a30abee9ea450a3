"""Side-by-side benchmark: the same turns labelled along the reference's plain computation (a) and the optimised one (b).

(a) spends compute as the reference does: no KV reuse (every row re-encodes its whole prompt, so every channel candidate
re-encodes 2-4k tokens), two turns per LM call, and a greedy generation per prompt whose output is thrown away. (b) is
the normal `LanguageModel`. Both run the unchanged `PartitionLabeller` with the same job and seed, each in a fresh
process so that its peak memory (ru_maxrss) is its own; the report gives speed, memory, b/a ratios and how often the two
choose the same label.
"""

from __future__ import annotations

import copy
import json
import resource
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from typing import TYPE_CHECKING

from labelling import errors, settings
from labelling.acts import acts_to_json
from labelling.bench.tables import markdown_table
from labelling.config import JobConfig
from labelling.engine.lm import LanguageModel, Prompt, Sample, SamplingParams
from labelling.engine.stats import EngineStats

if TYPE_CHECKING:  # at run time only torch and transformers are needed, so the GPU script runs on a bare CUDA image
    from labelling.turns import Turn

PATHS = {"a": "plain (reference computation)", "b": "optimised"}
REFERENCE_PROMPTS_PER_CALL = 2  # the reference's batch: 2 turns' prompts x n samples per generate call
# Figures per path whose b/a ratio the report gives; for seconds and memory a ratio below 1 means (b) uses less.
RATIO_KEYS = ("seconds", "turns_per_s", "generated_tokens_per_s", "prompt_tokens_per_s", "peak_rss_mb", "decode_tokens_per_s")
RAW_DECODE_STEPS = 16  # timed steps of the bare decode loop the decode phase is compared with


class PlainPath:
    """The reference's computation behind the `LanguageModel` interface, so the labeller runs unchanged on it.

    Wraps a `LanguageModel` built with `reuse_prefix=False`; cuts each call of the labeller into calls of
    `prompts_per_call` prompts; before sampling, runs one greedy generation per prompt and discards it (counted as
    `discarded_tokens`).
    """

    def __init__(self, lm: LanguageModel, prompts_per_call: int = REFERENCE_PROMPTS_PER_CALL, greedy_pass: bool = True):
        if lm.reuse_prefix:
            raise ValueError("the plain path re-encodes every row: wrap a LanguageModel built with reuse_prefix=False")
        self.lm = lm
        self.prompts_per_call = prompts_per_call
        self.greedy_pass = greedy_pass
        self.discarded_tokens = 0

    @property
    def context_length(self) -> int:
        """The wrapped model's context length."""
        return self.lm.context_length

    @property
    def stats(self) -> EngineStats:
        """The wrapped model's counters, the greedy pass included (``discarded_tokens`` counts what it threw away)."""
        return self.lm.stats

    def count_tokens(self, text: str) -> int:
        """As `LanguageModel.count_tokens`."""
        return self.lm.count_tokens(text)

    def sample(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Sample]]:
        """As `LanguageModel.sample`, two turns per call, each call preceded by the wasted greedy generation."""
        greedy = replace(params, n=1, temperature=0.0)
        out: list[list[Sample]] = []
        for batch in _batches(prompts, self.prompts_per_call):
            if self.greedy_pass:
                before = self.lm.stats.generated_tokens
                self.lm.sample(batch, greedy)  # the reference generates this and never reads it
                self.discarded_tokens += self.lm.stats.generated_tokens - before
            out.extend(self.lm.sample(batch, params))
        return out

    def score(self, prompt: Prompt, continuations: list[str]) -> list[float]:
        """As `LanguageModel.score`; the prompt is re-encoded for every continuation."""
        return self.score_many([(prompt, continuations)])[0]

    def score_many(self, requests: list[tuple[Prompt, list[str]]]) -> list[list[float]]:
        """As `LanguageModel.score_many`, two requests per call."""
        return [row for batch in _batches(requests, self.prompts_per_call) for row in self.lm.score_many(batch)]


def _batches(items: Sequence, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# -- running one path -------------------------------------------------------------------------------------------------


@dataclass
class PathResult:
    """What one path did on the benchmark turns: time, LM counters, memory, metrics against gold, and its labels."""

    path: str
    turns: int
    seconds: float
    stats: dict[str, int]
    peak_rss_mb: float  # whole process, models included
    load_rss_mb: float  # peak before labelling began (models loaded)
    threads: int
    metrics: dict = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # "dialogue#turn" -> canonical state and acts
    raw_decode_tokens_per_s: float | None = None  # a bare forward loop at this path's mean decode rows and cache length

    def figures(self) -> dict:
        """The reported figures: rates per second of labelling wall time, and memory."""
        per_s = 1.0 / max(self.seconds, 1e-9)
        return {
            "path": self.path,
            "name": PATHS[self.path],
            "turns": self.turns,
            "seconds": self.seconds,
            "turns_per_s": self.turns * per_s,
            "generated_tokens_per_s": self.stats.get("generated_tokens", 0) * per_s,
            "prompt_tokens_per_s": self.stats.get("prompt_tokens", 0) * per_s,
            "peak_rss_mb": self.peak_rss_mb,
            "labelling_rss_mb": max(0.0, self.peak_rss_mb - self.load_rss_mb),
            "threads": self.threads,
            **self.decode_figures(),
            "stats": self.stats,
            "metrics": self.metrics,
        }

    def decode_figures(self) -> dict:
        """The decode phase alone: tokens/s over its forwards, its batch shape, and its share of the bare loop's rate."""
        steps = self.stats.get("decode_steps", 0)
        if not steps:
            return {}
        rate = self.stats["decode_tokens"] / max(self.stats["decode_seconds"], 1e-9)
        raw = self.raw_decode_tokens_per_s
        return {
            "decode_tokens_per_s": rate,
            "decode_rows_mean": self.stats["decode_rows"] / steps,
            "decode_columns_mean": self.stats["decode_columns"] / steps,
            "raw_decode_tokens_per_s": raw,
            "decode_share_of_raw": rate / raw if raw else None,
        }


def raw_decode_rate(lm: LanguageModel, rows: int, columns: int, steps: int = RAW_DECODE_STEPS) -> float:
    """Tokens/s of a bare batched decode loop: `rows` rows on a `columns`-token cache, forward passes and nothing else.

    The ceiling for the engine's decode phase at that batch shape: no sampling, stop checks or batch bookkeeping, the
    cache pre-sized so no step reallocates, and the engine's own linear layers. The cache is one encoded row of random
    tokens copied to every row.
    """
    import torch

    from labelling.engine import linear
    from labelling.engine.kv_cache import KVState

    device, ids = lm.device, torch.randint(0, lm.tokenizer.vocab_size, (columns,), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), linear.few_rows(lm.few_row_linear):
        one = lm.model(input_ids=ids[None].to(device), use_cache=True, logits_to_keep=1)
        state = KVState(one.cache, torch.ones((1, columns), dtype=torch.long, device=device), None)
        cache = state.take([0] * rows, room=steps + 1).cache
        token = torch.full((rows, 1), int(ids[-1]), device=device)
        mask = torch.ones((rows, columns + steps + 1), dtype=torch.long, device=device)
        started = 0.0
        for step in range(steps + 1):  # step 0 warms up and is not timed
            if step == 1:
                started = time.perf_counter()
            position = torch.full((rows, 1), columns + step, device=device)
            out = lm.model(
                input_ids=token,
                attention_mask=mask[:, : columns + step + 1],
                position_ids=position,
                cache=cache,
                logits_to_keep=1,
            )
            cache = out.cache
            out.logits.sum().item()  # the engine syncs once per step too; without it a GPU would only queue the work
    return rows * steps / (time.perf_counter() - started)


def build_labeller(job: JobConfig, path: str):
    """A PartitionLabeller for `path`: (b) the normal engine, (a) the same models re-encoding everything, via PlainPath."""
    from labelling.method import build
    from labelling.method.labeller import PartitionLabeller

    job = copy.deepcopy(job)
    for module in (job.dst, job.act_tag):
        module.model.use_past_key_value_cache = path == "b"
    lms = {name: build.language_model(module, job.max_batch_tokens) for name, module in (("dst", job.dst), ("act", job.act_tag))}
    if path == "a":
        wrapped: dict[int, PlainPath] = {}  # modules sharing one model share one wrapper, so its counters add up once
        lms = {name: wrapped.setdefault(id(lm), PlainPath(lm)) for name, lm in lms.items()}
    schema = job.load_schema()
    indexes = (build.example_index(job.dst, "dst"), build.example_index(job.act_tag, "act"))
    return PartitionLabeller(job, schema, lms["dst"], lms["act"], *indexes)


def run_path(job: JobConfig, turns: Sequence[Turn], path: str, threads: int | None = None) -> PathResult:
    """Label `turns` along `path` in this process and measure it (use `run_isolated` for a clean memory figure)."""
    import torch

    if path not in PATHS:
        raise errors.LabellingError(f"unknown benchmark path {path!r}", f"paths: {', '.join(PATHS)}")
    threads = threads or settings.TORCH_THREADS.get()
    if threads:
        torch.set_num_threads(threads)
    labeller = build_labeller(job, path)
    load_rss = _peak_rss_mb()
    start = time.perf_counter()
    labels = labeller.label(list(turns))
    seconds = time.perf_counter() - start
    lms = {id(m.lm): m.lm for m in labeller.modules}.values()
    total = sum((lm.stats for lm in lms), EngineStats())
    stats: dict[str, float] = total.to_dict()
    if any(isinstance(lm, PlainPath) for lm in lms):
        stats["discarded_tokens"] = sum(lm.discarded_tokens for lm in lms if isinstance(lm, PlainPath))
    raw = None
    if total.decode_steps:  # measured after labelling, so it does not change the path's own figures
        engine = next(iter(lms))
        engine = getattr(engine, "lm", engine)  # the plain path wraps the same engine
        rows, columns = round(total.decode_rows / total.decode_steps), round(total.decode_columns / total.decode_steps)
        raw = raw_decode_rate(engine, max(rows, 1), max(columns, 1))
    return PathResult(
        path=path,
        turns=len(labels),
        seconds=seconds,
        stats=stats,
        peak_rss_mb=_peak_rss_mb(),
        load_rss_mb=load_rss,
        threads=torch.get_num_threads(),
        metrics=labeller.metrics.summary(),
        labels={f"{lab.dialogue_id}#{lab.turn_id}": canonical_label(lab.state, lab.acts) for lab in labels},
        raw_decode_tokens_per_s=raw,
    )


def canonical_label(state: dict, acts: list) -> dict[str, str]:
    """A turn's label as two canonical strings: the state as sorted JSON, the (canonically ordered) acts as JSON."""
    return {"state": json.dumps(state, sort_keys=True), "acts": json.dumps(acts_to_json(acts))}


def run_isolated(job: JobConfig, turns: Sequence[Turn], path: str, threads: int | None = None) -> PathResult:
    """`run_path` in a fresh spawned process: its peak RSS is then this path's alone, with nothing loaded before."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        outcome = pool.submit(_child, job, list(turns), path, threads).result()
    if "error" in outcome:  # LabellingError subclasses lose their hint when pickled, so they travel as fields
        kind, message, hint = outcome["error"]
        raise getattr(errors, kind, errors.LabellingError)(message, hint)
    return PathResult(**outcome)


def _child(job: JobConfig, turns: list[Turn], path: str, threads: int | None) -> dict:
    try:
        return asdict(run_path(job, turns, path, threads))
    except errors.LabellingError as e:
        return {"error": (type(e).__name__, e.message, e.hint)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- comparing --------------------------------------------------------------------------------------------------------


def agreement(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]]) -> dict:
    """How often two runs chose the same state, the same acts, and both (the same label), over the turns both labelled."""
    keys = sorted(a.keys() & b.keys())
    n = len(keys)
    same = {part: [k for k in keys if a[k][part] == b[k][part]] for part in ("state", "acts")}
    both = [k for k in keys if a[k] == b[k]]
    return {
        "turns": n,
        "same_state": len(same["state"]) / n if n else None,
        "same_acts": len(same["acts"]) / n if n else None,
        "same_label": len(both) / n if n else None,
        "differing_turns": [k for k in keys if a[k] != b[k]],
    }


def report(results: dict[str, PathResult], setup: dict) -> dict:
    """The JSON report: the setup, each path's figures, b/a ratios and label agreement (the last two need both paths)."""
    out: dict = {"setup": setup, "paths": {p: r.figures() for p, r in results.items()}}
    if {"a", "b"} <= results.keys():
        fa, fb = out["paths"]["a"], out["paths"]["b"]
        out["ratio_b_over_a"] = {k: fb[k] / fa[k] if fa.get(k) and fb.get(k) else None for k in RATIO_KEYS}
        out["agreement"] = agreement(results["a"].labels, results["b"].labels)
    return out


def table_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    """The report as a header and rows of text (one row per figure), shared by the terminal and markdown tables."""
    paths = list(rep["paths"])
    ratio = rep.get("ratio_b_over_a")
    header = ["", *(f"({p}) {PATHS[p]}" for p in paths), *(["b/a"] if ratio else [])]
    formats = {
        "turns": "{:.0f}",
        "seconds": "{:.1f}",
        "turns_per_s": "{:.3f}",
        "generated_tokens_per_s": "{:.1f}",
        "prompt_tokens_per_s": "{:.0f}",
        "peak_rss_mb": "{:.0f}",
        "decode_tokens_per_s": "{:.1f}",
        "decode_rows_mean": "{:.1f}",
        "decode_columns_mean": "{:.0f}",
        "raw_decode_tokens_per_s": "{:.1f}",
        "decode_share_of_raw": "{:.0%}",
    }
    names = {
        "turns": "turns",
        "seconds": "wall s",
        "turns_per_s": "turns/s",
        "generated_tokens_per_s": "generated tokens/s",
        "prompt_tokens_per_s": "prompt tokens/s",
        "peak_rss_mb": "peak RSS (MB)",
        "decode_tokens_per_s": "decode phase: generated tokens/s",
        "decode_rows_mean": "decode phase: rows per step (mean)",
        "decode_columns_mean": "decode phase: cache length (mean)",
        "raw_decode_tokens_per_s": "bare forward loop, same rows and length: tokens/s",
        "decode_share_of_raw": "decode phase: share of the bare loop",
    }
    rows = []
    for key, fmt in formats.items():
        values = [rep["paths"][p].get(key) for p in paths]
        if all(v is None for v in values):
            continue
        cells = ["-" if v is None else fmt.format(v) for v in values]
        if ratio:
            cells.append(f"{ratio[key]:.2f}x" if ratio.get(key) else "")
        rows.append([names[key], *cells])
    if "agreement" in rep:
        agree = rep["agreement"]
        for part in ("label", "state", "acts"):
            value = agree[f"same_{part}"]
            text = "-" if value is None else f"{value:.1%} of {agree['turns']} turns"
            rows.append([f"same {part}", *([""] * len(paths)), text])
    return header, rows


def markdown(rep: dict) -> str:
    """The report as a markdown table, with the setup on one line above it."""
    return markdown_table(rep["setup"], *table_rows(rep))
