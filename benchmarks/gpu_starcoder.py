"""GPU benchmark (issue 7, part 3): plain path (a) against optimised path (b) on a StarCoder-15B-architecture model,
and (s), the optimised path decoding on the static cache with CUDA graphs (issue 25), against (b) in the same call.

No weights can be downloaded on the GPU machines, so the model is StarCoder's GPTBigCode config (6144 wide, 40 layers,
48 heads, multi-query attention, 8k context) with random bf16 weights, initialised directly on the GPU. Outputs have
fixed lengths (no stop strings, EOS ignored), so both paths do exactly the same useful work. The workload is one wave of
DST turns built from the bundled MultiWOZ dev set with the labeller's real prompts (~1.4k-token schema preamble plus
retrieved examples, ~2-3k tokens in all): n samples per turn, then the noisy-channel scoring of C candidates per turn.

    python benchmarks/gpu_starcoder.py --prepare gpu_inputs                          # where the package is installed
    python3 benchmarks/gpu_starcoder.py --inputs gpu_inputs --out gpu_bench.json    # bare CUDA box: torch, transformers
    python benchmarks/gpu_starcoder.py --tiny --bandwidth-gbs 50 --out /tmp/tiny.json   # tiny GPTBigCode on the CPU (CI)
    python3 benchmarks/gpu_starcoder.py --inputs gpu_inputs --paths b,s --out gpu_static.json   # eager (b) vs graphs (s)

Both paths run with the product's own batch budget: sized from the GPU memory left after the weights (labelling.engine.memory),
unless --max-batch-tokens is given. It prints a JSON report (also written to --out): per path and phase, seconds,
tokens/s, sequences/s, batch rows per forward pass, peak GPU memory, and, for the decode steps alone (prefill and the
time around it left out), the share of the memory-bandwidth limit: the bytes each step must read (all weights, plus the
KV cache of every row) over the peak bandwidth (the card's, from a table, or --bandwidth-gbs), against the measured
time. Path (s) times its steps with CUDA events (no sync per step: the loop's host work overlaps the device) and
reports the decode loop taken, the graphs captured, and per row bucket the share of the bandwidth limit and of the
roofline (the larger of bytes over bandwidth and FLOPs over peak compute: compute binds above about 200 rows). Nothing
in the package imports this file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from any folder

from labelling import settings  # noqa: E402
from labelling.bench.speed import PATHS, REFERENCE_PROMPTS_PER_CALL, PlainPath  # noqa: E402
from labelling.engine import graphs, static_decode  # noqa: E402
from labelling.engine.lm import LanguageModel, Prompt, SamplingParams  # noqa: E402
from labelling.engine.memory import KVShape  # noqa: E402
from labelling.errors import ModelError  # noqa: E402

# StarCoder-15B (bigcode/starcoder config.json); ~15.5B parameters, ~31 GB in bf16.
STARCODER = dict(
    vocab_size=49152,
    n_embd=6144,
    n_layer=40,
    n_head=48,
    n_inner=24576,
    n_positions=8192,
    multi_query=True,
    activation_function="gelu_pytorch_tanh",
    bos_token_id=0,
    eos_token_id=0,
)
BENCH_PATHS = {**PATHS, "s": "optimised, static cache + CUDA graphs"}
TINY = dict(STARCODER, n_embd=64, n_layer=2, n_head=4, n_inner=256, n_positions=4096)
STARCODER_TOP_P = 0.7  # the reference's DST sampling (docs/method.md §2.3), top-k 50
TRANSFORMERS_NEEDED = (5, 24)  # the engine calls model(cache=...) and reads out.cache (requirements.txt pins 5.24.0)
# Vendor peak memory bandwidth, GB/s, by a part of the name torch reports; the first match wins (most specific first).
BANDWIDTH_GBS = (
    ("H200", 4800),
    ("H100 NVL", 3900),
    ("H100 PCIe", 2000),
    ("H100", 3350),
    ("A100-SXM4-80GB", 2039),
    ("A100 80GB PCIe", 1935),
    ("A100", 1555),
    ("L40S", 864),
    ("L40", 864),
    ("L4", 300),
    ("A10", 600),
    ("RTX 4090", 1008),
    ("RTX 3090", 936),
)
# Vendor dense bf16 peak, TFLOP/s, for the roofline; the first match wins.
PEAK_TFLOPS = (("H200", 989), ("H100 PCIe", 756), ("H100", 989), ("A100", 312), ("L40S", 362), ("L4", 121), ("A10", 125))


# -- model and prompts ------------------------------------------------------------------------------------------------


def build_model(tiny: bool, device: str, dtype: torch.dtype):
    """A GPTBigCode model with random weights, created on `device` directly (a 15B CPU init would take minutes)."""
    from transformers import AutoModelForCausalLM, GPTBigCodeConfig

    config = GPTBigCodeConfig(**(TINY if tiny else STARCODER))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def load_tokenizer(path: str | Path | None):
    """A 49152-token tokenizer available offline: the embedded SmolLM2 one unless a folder is given."""
    from transformers import AutoTokenizer

    if path is None:
        from labelling.engine import model_files

        path = model_files.smollm2_tokenizer_dir()
    return AutoTokenizer.from_pretrained(path)


def prepare(folder: Path, options: argparse.Namespace) -> None:
    """Write the wave's prompts and the tokenizer to `folder`: a GPU machine with only torch and transformers (and no
    network) then runs the benchmark from them with --inputs, without the corpus reader's dependencies."""
    prompts, requests = _package_workload(options)
    folder.mkdir(parents=True, exist_ok=True)
    load_tokenizer(options.tokenizer).save_pretrained(folder / "tokenizer")
    data = {
        "prompts": [[p.preamble, p.body] for p in prompts],
        "requests": [[[p.preamble, p.body], conts] for p, conts in requests],
    }
    (folder / "workload.json").write_text(json.dumps(data), encoding="utf-8")


def load_inputs(folder: Path) -> tuple[object, list[Prompt], list[tuple[Prompt, list[str]]]]:
    """The tokenizer, prompts and scoring requests that `prepare` wrote."""
    data = json.loads((folder / "workload.json").read_text(encoding="utf-8"))
    prompts = [Prompt(*p) for p in data["prompts"]]
    requests = [(Prompt(*p), list(conts)) for p, conts in data["requests"]]
    return load_tokenizer(folder / "tokenizer"), prompts, requests


def workload(turns: int, examples: int, candidates: int) -> tuple[list[Prompt], list[tuple[Prompt, list[str]]]]:
    """Direct DST prompts for `turns` dev-set turns, and their channel scoring requests (joint mode: one per turn).

    Each turn gets `examples` gold-labelled turns from further on in the corpus as its in-context examples, and
    `candidates` distinct intents (gold intents of other turns) to score, rendered as the labeller renders them.
    """
    from labelling.corpus import read_corpus
    from labelling.method.prompts import DST_CONNECTIVE, DST_PREFIX, Example, PromptBuilder, quote
    from labelling.schema import Schema

    schema = Schema.load()
    builder = PromptBuilder(schema)
    pool = [t for d in read_corpus(REPO / "labelling" / "data" / "multiwoz21_dev.json.zip", schema) for t in d if t.turn_id]

    def example(t) -> Example:
        prior = t.last_slot_values or {}
        intent = builder.intent_string(prior, t.slot_values or {}, [t.last_system_utterance, t.user_utterance])
        return Example(prior, t.last_system_utterance, t.user_utterance, t.system_response, intent)

    intents = list(dict.fromkeys(example(t).user_intent for t in pool))
    direct, requests = [], []
    for i in range(turns):
        target_turn = pool[i * 7]  # spread over dialogues
        shown = [example(t) for t in pool[i * 7 + 1 : i * 7 + 1 + examples * 5 : 5]]
        target = Example(target_turn.last_slot_values or {}, target_turn.last_system_utterance, target_turn.user_utterance, "")
        direct.append(builder.prompt("dst", shown, target))
        channel = builder.prompt("dst_channel", shown, target)
        tails = [s[len(DST_PREFIX) :] for s in intents[i : i + candidates]]
        requests.append((channel, [t + DST_CONNECTIVE + quote(target_turn.user_utterance) for t in tails]))
    return direct, requests


# -- measuring --------------------------------------------------------------------------------------------------------


@dataclass
class Passes:
    """The forward passes the model ran, recorded by a forward pre-hook: rows x new tokens, the columns of KV each row
    attends over, and when the pass began (after a device sync, so the time between two starts is one whole step)."""

    device: torch.device
    decode_width: int = 1  # a decode pass feeds each row its drawn token plus up to guess_tokens guesses
    shapes: list[tuple[int, int]] = field(default_factory=list)
    kv_columns: list[int] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    end: float | None = None

    def hook(self, module, args, kwargs) -> None:
        """Forward pre-hook: note the shape of the input ids and of the attention mask of one pass, and the time."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        _sync(self.device)  # the decode loop syncs every step anyway (it reads the drawn tokens), so this costs little
        self.starts.append(time.perf_counter())
        self.shapes.append(tuple(ids.shape))
        self.kv_columns.append(mask.shape[1] if mask is not None else ids.shape[1])

    def decode_figures(self, weight_bytes: int, kv_bytes_per_token: int, bandwidth_gbs: float | None) -> dict:
        """Seconds spent in decode steps (each from its start to the next pass's start, or the phase's end) and the
        share of the bandwidth limit they reached: bytes each step must read / peak bandwidth, over that time."""
        ends = [*self.starts[1:], self.end]
        steps = [(k, ends[k] - start) for k, start in enumerate(self.starts) if self.shapes[k][1] <= self.decode_width]
        seconds = sum(t for _, t in steps)
        read = sum(weight_bytes + self.shapes[k][0] * self.kv_columns[k] * kv_bytes_per_token for k, _ in steps)
        figures = {"decode_seconds": seconds, "decode_bytes_read": read}
        if bandwidth_gbs and seconds:
            figures["decode_bandwidth_fraction"] = read / (bandwidth_gbs * 1e9) / seconds
        else:
            figures["decode_bandwidth_fraction"] = None
        return figures

    def step_list(self) -> list[tuple[int, int, float]]:
        """(rows, cached columns, seconds) of each decode step."""
        ends = [*self.starts[1:], self.end]
        decode = [k for k in range(len(self.starts)) if self.shapes[k][1] <= self.decode_width]
        return [(self.shapes[k][0], self.kv_columns[k], ends[k] - self.starts[k]) for k in decode]

    def summary(self) -> dict:
        """Pass counts and batch sizes; a decode step is a pass feeding each row at most `decode_width` tokens."""
        decode = [rows for rows, width in self.shapes if width <= self.decode_width]
        prefill = [(rows, width) for rows, width in self.shapes if width > self.decode_width]
        return {
            "passes": len(self.shapes),
            "decode_steps": len(decode),
            "decode_rows_max": max(decode, default=0),
            "decode_rows_mean": sum(decode) / len(decode) if decode else 0.0,
            "prefill_passes": len(prefill),
            "prefill_rows_max": max((r for r, _ in prefill), default=0),
            "prefill_tokens_padded": sum(r * w for r, w in prefill),
        }


@dataclass
class Replays:
    """The static loop's steps, recorded around `StaticDecoder.replay`: rows (the bucket), columns (the arena's
    capacity, all of which a step reads) and a start mark, a CUDA event on a GPU (the loop is not synced per step,
    so the time between two marks is the device's time per step), the host clock on a CPU."""

    device: torch.device
    rows: list[int] = field(default_factory=list)
    columns: list[int] = field(default_factory=list)
    marks: list = field(default_factory=list)
    end: object = None

    def mark(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def wrap(self, replay):
        def recording(decoder, rows):
            self.rows.append(rows)
            self.columns.append(decoder.arena.capacity)
            self.marks.append(self.mark())
            return replay(decoder, rows)

        return recording

    def step_list(self) -> list[tuple[int, int, float]]:
        """(rows, columns, seconds) of each step: to the next step's mark, or to the phase's end for the last one."""
        ends = [*self.marks[1:], self.end]
        if self.device.type == "cuda":
            seconds = [start.elapsed_time(end) / 1e3 for start, end in zip(self.marks, ends, strict=True)]
        else:
            seconds = [end - start for start, end in zip(self.marks, ends, strict=True)]
        return list(zip(self.rows, self.columns, seconds, strict=True))


def bucket_figures(steps: list[tuple[int, int, float]], options) -> dict:
    """Per row count: decode steps, seconds, bytes read, and the shares of the bandwidth limit and of the roofline."""
    out = {}
    for rows in sorted({r for r, _, _ in steps}):
        mine = [(c, t) for r, c, t in steps if r == rows]
        seconds = sum(t for _, t in mine)
        read = sum(options.weight_bytes + rows * c * options.kv_bytes_per_token for c, _ in mine)
        flops = sum(rows * (2 * options.parameters + 4 * options.attention_width * c) for c, _ in mine)
        figures = {"steps": len(mine), "seconds": seconds, "ms_per_step": 1e3 * seconds / len(mine), "bytes_read": read}
        figures["flops"] = flops
        figures.update(roofline_shares(read, flops, seconds, options))
        out[str(rows)] = figures
    return out


def roofline_shares(read: float, flops: float, seconds: float, options) -> dict:
    """The shares of the bandwidth limit (bytes / bandwidth) and of the roofline (the larger of that and FLOPs / peak
    compute) that `seconds` reached; None where the card's figures are unknown."""
    bandwidth = read / (options.bandwidth_gbs * 1e9) if options.bandwidth_gbs else None
    compute = flops / (options.peak_tflops * 1e12) if options.peak_tflops else None
    bound = max((b for b in (bandwidth, compute) if b is not None), default=None)
    return {
        "bandwidth_fraction": bandwidth / seconds if bandwidth and seconds else None,
        "roofline_fraction": bound / seconds if bound and seconds else None,
        "compute_bound": bandwidth is not None and compute is not None and compute > bandwidth,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_path(path: str, model, tokenizer, prompts, requests, params: SamplingParams, options) -> tuple[dict, dict]:
    """Sample then score the whole wave along `path`; returns its figures and its outputs (for the agreement check)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    # The product's budget: None sizes it from the memory left now, as a worker does after loading.
    # The plain path feeds one token per pass, as the reference; the static loop runs batches without guesses.
    guesses = options.guess_tokens if path == "b" else 0
    lm = LanguageModel.from_model(
        model,
        tokenizer,
        max_batch_tokens=options.max_batch_tokens,
        reuse_prefix=path != "a",
        guess_tokens=guesses,
        static_decode=path == "s",
    )
    if path == "s":
        lm.runner_factory = lambda: graphs.runner_for(device, not options.no_graphs)
    engine = PlainPath(lm) if path == "a" else lm
    figures = {"path": path, "name": BENCH_PATHS[path], "max_batch_tokens": lm.max_batch_tokens, "guess_tokens": lm.guess_tokens}
    outputs = {}
    for phase in ("sample", "score"):
        passes = Passes(device, decode_width=1 + lm.guess_tokens)
        handle = model.register_forward_pre_hook(passes.hook, with_kwargs=True)
        replays, replay = Replays(device), static_decode.StaticDecoder.replay
        static_decode.StaticDecoder.replay = replays.wrap(replay)
        before, thrown = engine.stats.copy(), getattr(engine, "discarded_tokens", 0)
        _sync(device)
        start = time.perf_counter()
        try:
            if phase == "sample":
                outputs["samples"] = [[s.text for s in row] for row in engine.sample(prompts, params)]
            else:
                outputs["scores"] = engine.score_many(requests)
            replays.end = replays.mark()
            _sync(device)
        finally:
            handle.remove()
            static_decode.StaticDecoder.replay = replay
        passes.end = time.perf_counter()
        seconds = passes.end - start
        delta = (engine.stats - before).to_dict()
        delta["discarded_tokens"] = getattr(engine, "discarded_tokens", 0) - thrown  # the plain path's greedy pass
        figures[phase] = _phase_figures(phase, seconds, delta, passes.summary(), prompts, requests, params, options)
        if phase == "sample":
            figures[phase].update(passes.decode_figures(options.weight_bytes, options.kv_bytes_per_token, options.bandwidth_gbs))
            figures[phase].update(_loop_figures(path, lm, delta, passes, replays, options))
            figures[phase]["decode_steps_per_s"] = figures[phase]["decode_steps"] / seconds
    total = figures["sample"]["seconds"] + figures["score"]["seconds"]
    figures.update(seconds=total, turns_per_s=len(prompts) / total, peak_gpu_memory_gb=_peak_gb(device))
    # What the run ended at: a budget below the starting one means an out-of-memory retry halved it.
    new_gib = lm.new_token_bytes and lm.new_token_bytes / 2**30
    figures.update(max_batch_tokens_end=lm.max_batch_tokens, oom_backoffs=lm.oom_backoffs, new_token_gib=new_gib)
    return figures, outputs


def _loop_figures(path: str, lm: LanguageModel, delta: dict, passes: Passes, replays: Replays, options) -> dict:
    """The decode loop the sampling took, and its steps per row bucket; for (s), its steps are the replays (a captured
    graph runs no forward hook), counted and timed apart from the eager passes."""
    runner = "eager" if path != "s" else graphs.runner_for(lm.device, not options.no_graphs).name
    out = {
        "decode_loop": "static" if delta.get("static_batches") else "eager",
        "runner": runner if delta.get("static_batches") else None,
        "static_batches": delta.get("static_batches", 0),
        "eager_batches": delta.get("eager_batches", 0),
        "graph_captures": delta.get("graph_captures", 0),
        "capture_seconds": delta.get("capture_seconds", 0.0),
    }
    steps = replays.step_list() if replays.rows else passes.step_list()
    out["decode_buckets"] = bucket_figures(steps, options)
    if replays.rows:  # the static steps replace the eager decode passes in the headline figures
        seconds = sum(t for _, _, t in steps)
        read = sum(options.weight_bytes + r * c * options.kv_bytes_per_token for r, c, _ in steps)
        flops = sum(r * (2 * options.parameters + 4 * options.attention_width * c) for r, c, _ in steps)
        shares = roofline_shares(read, flops, seconds, options)
        out.update(decode_steps=len(steps), decode_rows_max=max(replays.rows), decode_seconds=seconds, decode_bytes_read=read)
        out.update(decode_bandwidth_fraction=shares["bandwidth_fraction"], decode_roofline_fraction=shares["roofline_fraction"])
        out["decode_rows_mean"] = sum(replays.rows) / len(replays.rows)
    else:
        seconds = sum(t for _, _, t in steps)
        read = sum(options.weight_bytes + r * c * options.kv_bytes_per_token for r, c, _ in steps)
        flops = sum(r * (2 * options.parameters + 4 * options.attention_width * c) for r, c, _ in steps)
        out["decode_roofline_fraction"] = roofline_shares(read, flops, seconds, options)["roofline_fraction"]
    return out


def _phase_figures(phase, seconds, delta, passes, prompts, requests, params, options) -> dict:
    """Rates for one phase. Useful tokens are those the labeller keeps; the plain path also generates discarded ones."""
    per_s = 1.0 / seconds
    out = {"seconds": seconds, **passes, "prompt_tokens": delta.get("prompt_tokens", 0)}
    out["prompt_tokens_per_s"] = out["prompt_tokens"] * per_s
    if phase == "sample":
        sequences = len(prompts) * params.n
        out.update(
            sequences=sequences,
            sequences_per_s=sequences * per_s,
            generated_tokens=delta.get("generated_tokens", 0),
            guessed_tokens=delta.get("guessed_tokens", 0),
            guesses_kept=delta.get("guesses_kept", 0),
            discarded_tokens=delta.get("discarded_tokens", 0),
            generated_tokens_per_s=delta.get("generated_tokens", 0) * per_s,
            useful_tokens_per_s=sequences * params.max_new_tokens * per_s,
        )
        out["decode_steps_per_s"] = passes["decode_steps"] * per_s
        if options.bandwidth_gbs:
            # Decode steps/s if a step only streamed the weights: one sequence alone is capped at this many tokens/s,
            # and batching is what lifts useful tokens/s past it.
            limit = options.bandwidth_gbs * 1e9 / options.weight_bytes
            out["bandwidth_limit_steps_per_s"] = limit
            out["useful_tokens_over_one_sequence_limit"] = out["useful_tokens_per_s"] / limit
    else:
        sequences = sum(len(c) for _, c in requests)
        out.update(
            sequences=sequences,
            sequences_per_s=sequences * per_s,
            scored_tokens=delta.get("scored_tokens", 0),
            scored_tokens_per_s=delta.get("scored_tokens", 0) * per_s,
        )
    return out


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def agreement(a: dict, b: dict) -> dict:
    """How far the two paths' outputs differ: identical samples, and the largest channel-score gap."""
    pairs = [(x, y) for ra, rb in zip(a["samples"], b["samples"], strict=True) for x, y in zip(ra, rb, strict=True)]
    gaps = [abs(x - y) for ra, rb in zip(a["scores"], b["scores"], strict=True) for x, y in zip(ra, rb, strict=True)]
    chosen = [_best(ra) == _best(rb) for ra, rb in zip(a["scores"], b["scores"], strict=True)]
    return {
        "same_samples": sum(x == y for x, y in pairs) / len(pairs),
        "max_score_gap": max(gaps, default=0.0),
        "same_best_candidate": sum(chosen) / len(chosen) if chosen else None,
    }


def _best(scores: list[float]) -> int:
    return max(range(len(scores)), key=scores.__getitem__)


# -- main -------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the reference's StarCoder settings on one H100."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="a tiny GPTBigCode on the CPU in fp32 (CI), not StarCoder-15B")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument("--turns", type=int, default=16, help="turns in the wave (the reference batches 2); not with --inputs")
    p.add_argument("--samples", type=int, default=8, help="samples per turn")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens per sample, exactly")
    p.add_argument("--candidates", type=int, default=8, help="channel candidates scored per turn")
    p.add_argument("--examples", type=int, default=8, help="in-context examples per prompt (prompt length)")
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="rows x columns per pass (default: sized from memory)",
    )
    p.add_argument(
        "--guess-tokens", type=int, default=None, help="prompt-lookup guesses per row and pass for (b) (default: the engine's)"
    )
    p.add_argument("--bandwidth-gbs", type=float, default=None, help="peak bandwidth, GB/s (default: the card's)")
    p.add_argument(
        "--paths", default="a,b", help="which paths to run: a (plain), b (optimised), s (optimised, static cache and graphs)"
    )
    p.add_argument("--no-graphs", action="store_true", help="path s runs its static step eagerly (no CUDA graphs)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (default: the card's)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded SmolLM2 one, 49152 tokens)")
    p.add_argument("--prepare", type=Path, default=None, help="only write the prompts and tokenizer to this folder")
    p.add_argument("--inputs", type=Path, default=None, help="run on the prompts and tokenizer --prepare wrote")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $LABELLING_TORCH_THREADS)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=Path("gpu_bench.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Build the model and the wave, run the chosen paths one after the other on the same weights, report."""
    options = parse_args(argv)
    if options.prepare:
        prepare(options.prepare, options)
        return {}
    threads = options.threads or settings.TORCH_THREADS.get()
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(options.device or ("cpu" if options.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --tiny for the CPU check")
    _check_transformers()
    options.bandwidth_gbs = options.bandwidth_gbs or card_bandwidth_gbs(device)
    options.peak_tflops = options.peak_tflops or card_peak_tflops(device)
    dtype = torch.float32 if options.tiny else torch.bfloat16
    # Inputs first: a bare machine without them fails in a second, not after building 31 GB of weights.
    tokenizer, prompts, requests = load_inputs(options.inputs) if options.inputs else _package_workload(options, tokenizer=True)
    started = time.perf_counter()
    model = build_model(options.tiny, str(device), dtype)
    _sync(device)
    built_s = time.perf_counter() - started
    options.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    shape = KVShape.of(model.config, dtype.itemsize)
    options.kv_bytes_per_token = shape.kv_bytes_per_token
    options.parameters = sum(p.numel() for p in model.parameters())
    options.attention_width = shape.layers * shape.heads * shape.head_dim  # FLOPs per cached column: 4 x this per row
    # Fixed lengths: no stop strings and EOS ignored, so every sample is exactly --new-tokens long on both paths.
    params = SamplingParams(
        n=options.samples, top_p=STARCODER_TOP_P, top_k=50, max_new_tokens=options.new_tokens, seed=options.seed, ignore_eos=True
    )
    _warm_up(model, device)
    report = {"setup": _setup(options, device, model, tokenizer, prompts, requests, built_s), "paths": {}}
    outputs = {}
    for path in dict.fromkeys(p.strip() for p in options.paths.split(",") if p.strip()):
        report["paths"][path], outputs[path] = run_path(path, model, tokenizer, prompts, requests, params, options)
    if {"a", "b"} <= outputs.keys():
        a, b = report["paths"]["a"], report["paths"]["b"]
        report["ratio_b_over_a"] = {
            "turns_per_s": b["turns_per_s"] / a["turns_per_s"],
            "sample_useful_tokens_per_s": b["sample"]["useful_tokens_per_s"] / a["sample"]["useful_tokens_per_s"],
            "score_sequences_per_s": b["score"]["sequences_per_s"] / a["score"]["sequences_per_s"],
        }
        report["agreement"] = agreement(outputs["a"], outputs["b"])
    if {"b", "s"} <= outputs.keys():  # the eager baseline and the static loop, in the same call on the same card
        b, st = report["paths"]["b"], report["paths"]["s"]
        report["ratio_s_over_b"] = {
            "turns_per_s": st["turns_per_s"] / b["turns_per_s"],
            "sample_useful_tokens_per_s": st["sample"]["useful_tokens_per_s"] / b["sample"]["useful_tokens_per_s"],
            "decode_seconds": st["sample"]["decode_seconds"] / b["sample"]["decode_seconds"],
        }
        report["agreement_s_b"] = agreement(outputs["b"], outputs["s"])
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    print(markdown(report))
    return report


def _package_workload(options: argparse.Namespace, tokenizer: bool = False) -> tuple:
    """The wave built from the bundled corpus (and the tokenizer, if asked): needs the package's own dependencies, which
    a bare GPU image lacks, so their absence is one line naming the two-step run instead of a traceback."""
    try:
        prompts, requests = workload(options.turns, options.examples, options.candidates)
        return (load_tokenizer(options.tokenizer), prompts, requests) if tokenizer else (prompts, requests)
    except (ImportError, ModelError) as exc:
        missing = getattr(exc, "name", None) or str(exc)
        sys.exit(
            f"error: building the prompts needs the package's dependencies ({missing} is missing here): run "
            "`python benchmarks/gpu_starcoder.py --prepare gpu_inputs` where the package is installed, carry gpu_inputs "
            "over, and run this script with --inputs gpu_inputs"
        )


def _check_transformers() -> None:
    """Warn, with the fix, when transformers is older than the engine is written for (the first forward would fail)."""
    import transformers

    version = tuple(int(part) for part in transformers.__version__.split(".")[:2] if part.isdigit())
    if version < TRANSFORMERS_NEEDED:
        print(
            f"warning: transformers {transformers.__version__} is older than 5.24, which the engine is written for; if the "
            "run fails, carry the wheels of transformers==5.24.0, tokenizers, huggingface_hub and safetensors "
            "(benchmarks/README.md)",
            file=sys.stderr,
        )


def card_peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 peak of a known CUDA card, TFLOP/s; None for a CPU or an unknown card (pass --peak-tflops)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((float(t) for part, t in PEAK_TFLOPS if part in name), None)


def card_bandwidth_gbs(device: torch.device) -> float | None:
    """The peak memory bandwidth of a known CUDA card, GB/s; None for a CPU or an unknown card (pass --bandwidth-gbs)."""
    return bandwidth_of(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def bandwidth_of(card: str) -> float | None:
    """Peak bandwidth (GB/s) of the card whose name torch reports as `card`, from BANDWIDTH_GBS; None if not listed."""
    return next((float(gbs) for part, gbs in BANDWIDTH_GBS if part in card), None)


def _warm_up(model, device: torch.device) -> None:
    """One short pass first, so neither path pays for CUDA context and kernel set-up."""
    with torch.inference_mode():
        model(input_ids=torch.zeros((1, 8), dtype=torch.long, device=device))
    _sync(device)


def _setup(options, device, model, tokenizer, prompts, requests, built_s: float) -> dict:
    lengths = [len(tokenizer(p.preamble + p.body)["input_ids"]) for p in prompts]
    channel = [len(tokenizer(p.preamble + p.body)["input_ids"]) for p, _ in requests]
    return {
        "model": "tiny GPTBigCode" if options.tiny else "StarCoder-15B architecture (GPTBigCode), random weights",
        "parameters": sum(p.numel() for p in model.parameters()),
        "weight_gb": options.weight_bytes / 1e9,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "build_s": built_s,
        "turns": len(prompts),
        "samples_per_turn": options.samples,
        "new_tokens": options.new_tokens,
        "candidates_per_turn": sum(len(c) for _, c in requests) / len(requests),
        "prompt_tokens_mean": sum(lengths) / len(lengths),
        "channel_prompt_tokens_mean": sum(channel) / len(channel),
        "max_batch_tokens": options.max_batch_tokens or "sized from free memory (per path, below)",
        "bandwidth_gbs": options.bandwidth_gbs,
        "peak_tflops": options.peak_tflops,
        "kv_bytes_per_token": options.kv_bytes_per_token,
        "plain_prompts_per_call": REFERENCE_PROMPTS_PER_CALL,
    }


def markdown(report: dict) -> str:
    """The headline figures as a markdown table, for benchmarks/README.md."""
    paths = report["paths"]
    rows = [
        ("turns/s", lambda f: f"{f['turns_per_s']:.2f}"),
        ("sampling: useful tokens/s", lambda f: f"{f['sample']['useful_tokens_per_s']:.0f}"),
        ("sampling: sequences/s", lambda f: f"{f['sample']['sequences_per_s']:.1f}"),
        ("sampling: decode rows per pass (max)", lambda f: str(f["sample"]["decode_rows_max"])),
        ("batch budget (tokens)", lambda f: str(f["max_batch_tokens"])),
        ("sampling: guesses per row and pass / kept", lambda f: f"{f['guess_tokens']} / {f['sample']['guesses_kept']}"),
        ("out-of-memory retries", lambda f: str(f.get("oom_backoffs", "-"))),
        ("sampling: decode steps, % of bandwidth limit", lambda f: _percent(f["sample"]["decode_bandwidth_fraction"])),
        ("sampling: decode steps, % of roofline", lambda f: _percent(f["sample"].get("decode_roofline_fraction"))),
        ("sampling: decode loop (graphs captured)", lambda f: _loop(f["sample"])),
        ("sampling: ms per decode step by rows", lambda f: _by_bucket(f["sample"])),
        ("scoring: candidates/s", lambda f: f"{f['score']['sequences_per_s']:.1f}"),
        ("scoring: prefill rows per pass (max)", lambda f: str(f["score"]["prefill_rows_max"])),
        ("peak GPU memory (GiB)", lambda f: "-" if f["peak_gpu_memory_gb"] is None else f"{f['peak_gpu_memory_gb']:.1f}"),
    ]
    lines = ["| | " + " | ".join(f"({p}) {BENCH_PATHS[p]}" for p in paths) + " |", "|---|" + "---|" * len(paths)]
    lines += [f"| {name} | " + " | ".join(cell(f) for f in paths.values()) + " |" for name, cell in rows]
    return "\n".join(lines) + "\n"


def _loop(sample: dict) -> str:
    if sample.get("decode_loop") != "static":
        return "eager"
    return f"static, {sample['runner']} ({sample['graph_captures']}, {sample['capture_seconds']:.1f} s)"


def _by_bucket(sample: dict) -> str:
    buckets = sample.get("decode_buckets") or {}
    cells = [f"{rows}: {b['ms_per_step']:.1f} ({_percent(b['bandwidth_fraction'])}%)" for rows, b in buckets.items()]
    return "; ".join(cells[-3:]) or "-"


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}"


if __name__ == "__main__":
    main()
