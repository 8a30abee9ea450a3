"""The decode step alone (issue 25's first GPU check, 2-3 minutes): where a step's time goes, before any wave is run.

StarCoder-15B's architecture with random bf16 weights, `--rows` rows on a cache of `--columns` random columns, the
reference's DST sampling (top-k 50, top-p 0.7). Timed per step, each after a device sync:
- eager: today's decode step (`LanguageModel._step`'s computation: a 2-D mask grown by a column, transformers' mask
  code, the cache appended in place) plus the draw and the host reading the tokens;
- static: the static-cache step (`labelling.engine.static_decode.step`) run eagerly: a ready 4-D mask, the sampler on
  the device, no host read;
- graph: the same step captured once as a CUDA graph and replayed (CUDA only);
- sampler: the draw alone at these rows.
Each is reported in ms and as a share of the bandwidth limit (weights plus every row's cached columns, over the
card's peak bandwidth). The prediction for 128 rows x 2.7k on an H200: eager 45-60 ms, graph 11-14 ms.

    python3 benchmarks/gpu_decode_step.py --out gpu_step.json                  # CUDA box: torch and transformers only
    python benchmarks/gpu_decode_step.py --tiny --rows 4 --columns 40 --steps 3 --out /tmp/step.json   # CPU (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_starcoder import STARCODER_TOP_P, build_model, card_bandwidth_gbs  # noqa: E402

from labelling.engine import graphs, sampling, static_decode  # noqa: E402
from labelling.engine.generation import SamplingParams  # noqa: E402
from labelling.engine.kv_cache import KVState, RoomyLayer  # noqa: E402
from labelling.engine.memory import KVShape  # noqa: E402

WARM_UP = 2  # untimed steps before each timed run


def random_state(model, rows: int, columns: int, room: int) -> KVState:
    """A cache of `rows` x `columns` random keys and values (every column real), with `room` spare columns."""
    config = model.config
    shape = KVShape.of(config, model.dtype.itemsize)
    dtype, device = model.dtype, next(model.parameters()).device
    cache = DynamicCache()
    cache.layers = [
        RoomyLayer(*(torch.randn(rows, shape.kv_heads, columns, shape.head_dim, dtype=dtype, device=device) for _ in "kv"), room)
        for _ in range(shape.layers)
    ]
    mask = torch.ones((rows, columns), dtype=torch.long, device=device)
    return KVState(cache, mask, torch.randn(rows, config.vocab_size, device=device))


def timed(run, steps: int, device: torch.device) -> list[float]:
    """Seconds of each of `steps` calls of `run`, after WARM_UP untimed ones, with a device sync around each."""
    for _ in range(WARM_UP):
        run()
    out = []
    for _ in range(steps):
        sync(device)
        started = time.perf_counter()
        run()
        sync(device)
        out.append(time.perf_counter() - started)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eager_step(model, params: SamplingParams, pad: int, holder: dict) -> None:
    """Today's decode step: feed every row its token on a 2-D mask grown by one column, draw, read the tokens."""
    state, tokens = holder["state"], holder["tokens"]
    alive = torch.tensor([True] * len(tokens), device=tokens.device)  # a blocking copy, as `_step` makes
    new = alive.long()[:, None]
    ids = torch.where(alive, tokens, pad)[:, None]
    positions = state.mask.sum(1, keepdim=True) * new
    mask = torch.cat([state.mask, new], dim=1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=state.cache, use_cache=True, logits_to_keep=1)
    u = torch.rand(len(tokens), device=tokens.device)
    holder["tokens"], _ = sampling.draw(out.logits[:, -1].float(), u, params)
    holder["tokens"].tolist()  # the host reads the tokens each step
    holder["state"] = KVState(out.cache, mask, None)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="a tiny GPTBigCode on the CPU in fp32 (CI)")
    p.add_argument("--rows", type=int, default=128)
    p.add_argument("--columns", type=int, default=2700)
    p.add_argument("--steps", type=int, default=20, help="timed steps per way")
    p.add_argument("--bandwidth-gbs", type=float, default=None, help="peak bandwidth, GB/s (default: the card's)")
    p.add_argument("--out", type=Path, default=Path("gpu_step.json"))
    options = p.parse_args(argv)
    device = torch.device("cpu" if options.tiny else "cuda")
    model = build_model(options.tiny, str(device), torch.float32 if options.tiny else torch.bfloat16)
    bandwidth = options.bandwidth_gbs or card_bandwidth_gbs(device)
    rows, columns, steps = options.rows, options.columns, options.steps
    runs = WARM_UP + steps
    params = SamplingParams(temperature=1.0, top_k=50, top_p=STARCODER_TOP_P, max_new_tokens=2 * runs + 2, seed=1)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
    kv_bytes = KVShape.of(model.config, model.dtype.itemsize).kv_bytes_per_token
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "rows": rows,
        "columns": columns,
        "weight_gb": weight_bytes / 1e9,
    }
    seconds = {}
    with torch.inference_mode():
        holder = {
            "state": random_state(model, rows, columns, runs + 1),
            "tokens": torch.zeros(rows, dtype=torch.long, device=device),
        }
        seconds["eager"] = timed(lambda holder=holder: eager_step(model, params, 0, holder), steps, device)
        holder.clear()  # frees the eager cache before the arenas
        for name, graphed in (("static", False), ("graph", True)):
            if graphed and device.type != "cuda":
                continue
            state = random_state(model, rows, columns, 0)
            capacity = static_decode.capacity_for(columns, params.max_new_tokens)
            arena = static_decode.Arena(state, static_decode.bucket_for(rows) or rows, capacity, params.max_new_tokens)
            arena.load(state, torch.zeros(rows, dtype=torch.long, device=device), torch.zeros(rows, device=device),
                       torch.rand(rows, params.max_new_tokens, device=device), [True] * rows)  # fmt: skip
            del state
            runner = graphs.runner_for(device, graphed)
            decoder = static_decode.StaticDecoder(model, arena, params, 0, runner)
            bucket = arena.rows
            sync(device)
            started = time.perf_counter()
            decoder.replay(bucket)  # captures (graph) or runs once
            sync(device)
            report[f"{name}_first_call_s"] = time.perf_counter() - started
            seconds[name] = timed(lambda decoder=decoder, bucket=bucket: decoder.replay(bucket), steps, device)
            del decoder, arena
        logits = torch.randn(rows, model.config.vocab_size, device=device)
        u = torch.rand(rows, device=device)
        seconds["sampler"] = timed(lambda: sampling.draw(logits, u, params), steps, device)
    read = weight_bytes + rows * columns * kv_bytes
    for name, times in seconds.items():
        ms = 1e3 * sorted(times)[len(times) // 2]
        report[name] = {"ms_median": ms, "ms_min": 1e3 * min(times)}
        if name != "sampler":
            report[name]["bandwidth_fraction"] = read / (bandwidth * 1e9) / (ms / 1e3) if bandwidth else None
    if "graph" in report:
        report["eager_over_graph"] = report["eager"]["ms_median"] / report["graph"]["ms_median"]
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
