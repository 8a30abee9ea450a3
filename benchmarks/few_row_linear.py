"""Decode passes of the embedded model with torch's linear layers (plain) against few-row ones (labelling/engine/linear.py),
in one process, interleaved, at the batch shapes `labelling bench` decodes at; then the model's linear layers alone.

For each shape (rows x tokens per row, on a cache of `--cache` random tokens) it times `--steps` passes with each kind
of layer, the two alternating `--rounds` times (best round kept, so a busy neighbour slows both alike), and reports ms
per pass, the ratio plain / few-row, and the largest difference between the two passes' logits. Then, for each count
of input rows, one pass through all the model's linear weights (no attention) three ways: torch's `linear`,
`weight @ x.T` whatever the rows, and `few_row_linear` as shipped (one row padded to two; torch's layer above
`MAX_ROWS`), which is where `MAX_ROWS` comes from.

    .venv/bin/python benchmarks/few_row_linear.py --threads 2 --out benchmarks/results/few_row_linear.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from labelling.engine import linear
from labelling.engine.kv_cache import KVState
from labelling.engine.lm import LanguageModel

SHAPES = [(1, 1), (1, 2), (3, 1), (3, 2), (6, 2), (9, 1), (9, 2)]  # rows, tokens per row
LAYER_ROWS = [1, 2, 3, 4, 6, 9, 12, 16, 18, 27]  # input rows for the layers-only timing


def time_passes(lm: LanguageModel, cache: KVState, rows: int, width: int, steps: int) -> tuple[float, torch.Tensor]:
    """Seconds per pass of `steps` passes of `rows` rows x `width` tokens on copies of `cache`, and the last logits."""
    state = cache.take([0] * rows, room=(steps + 1) * width)
    feed = [[5 + j for j in range(width)]] * rows
    state = lm._extend(state, feed)  # warm-up pass, not timed
    started = time.perf_counter()
    for _ in range(steps):
        state = lm._extend(state, feed)
    return (time.perf_counter() - started) / steps, state.last


def time_layers(weights: list[torch.Tensor], rows: int, rounds: int) -> dict[str, float]:
    """Best-of-`rounds` ms for one pass of `rows` random input rows through every weight, for each way of computing it."""
    ways = {
        "linear_ms": torch.nn.functional.linear,
        "weight_x_t_ms": lambda x, w: torch.mm(w, x.t()).t().contiguous(),
        "few_row_ms": linear.few_row_linear,
    }
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(rounds):
        for name, way in ways.items():
            started = time.perf_counter()
            for w in weights:
                way(inputs[w.shape[1]], w)
            best[name] = min(best[name], time.perf_counter() - started)
    return {"rows": rows, **{name: seconds * 1000 for name, seconds in best.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=int, default=2200, help="cache length (the bench decodes at about 2.2k)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = LanguageModel.load("smollm2")
    ids = torch.randint(0, lm.tokenizer.vocab_size, (args.cache,), generator=torch.Generator().manual_seed(0)).tolist()
    rows_out = []
    with torch.inference_mode():
        cache = lm._extend(KVState.empty(1, lm.device), [ids])
        for rows, width in SHAPES:
            best, logits = {False: float("inf"), True: float("inf")}, {}
            for _ in range(args.rounds):
                for on in (False, True):
                    with linear.few_rows(on):
                        seconds, logits[on] = time_passes(lm, cache, rows, width, args.steps)
                    best[on] = min(best[on], seconds)
            diff = float((logits[True] - logits[False]).abs().max())
            rows_out.append(
                {
                    "rows": rows,
                    "tokens_per_row": width,
                    "plain_ms": best[False] * 1000,
                    "few_row_ms": best[True] * 1000,
                    "ratio": best[False] / best[True],
                    "max_logit_diff": diff,
                }
            )
            r = rows_out[-1]
            print(
                f"{rows} rows x {width}: plain {r['plain_ms']:.1f} ms, few-row {r['few_row_ms']:.1f} ms, "
                f"{r['ratio']:.2f}x, max logit diff {diff:.1e}",
                flush=True,
            )
        weights = [m.weight for m in lm.model.modules() if isinstance(m, torch.nn.Linear)]
        layers = []
        for rows in LAYER_ROWS:
            layers.append(time_layers(weights, rows, args.rounds))
            r = layers[-1]
            print(
                f"{len(weights)} layers, {rows} rows: linear {r['linear_ms']:.1f} ms, weight @ x.T {r['weight_x_t_ms']:.1f} ms, "
                f"few_row_linear {r['few_row_ms']:.1f} ms",
                flush=True,
            )
    if args.out:
        setup = {"model": "smollm2", "threads": args.threads, "cache": args.cache, "steps": args.steps, "rounds": args.rounds}
        with open(args.out, "w") as f:
            json.dump({"setup": setup, "shapes": rows_out, "layers": layers}, f, indent=1)


if __name__ == "__main__":
    main()
