"""Evaluate Hugging Face optimum for labelling (issue 7, part 4): ONNX Runtime, and quanto / bitsandbytes weights.

Runs outside the package, in optional virtual environments (see benchmarks/OPTIMUM.md): `export` and `ort` need
optimum-onnx, which pins transformers<4.58; `engine` runs our real LanguageModel under transformers 5.x with fp32,
quanto and bitsandbytes weights, next to bare ONNX Runtime sessions. Each subcommand prints one JSON object.
The workload mirrors the engine: a schema preamble whose KV is cached, a dialogue body encoded once and expanded to
8 rows, then 8 continuations scored or 8 samples drawn after it. Nothing in the package or tests imports this file.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "labelling" / "data"
ROWS = 8
CONT_TOKENS = 40


# -- workload ---------------------------------------------------------------------------------------------------


def workload_texts(tokenizer_file: Path, preamble_tokens: int, body_tokens: int) -> dict:
    """Schema preamble, dialogue body and 8 utterance continuations from the bundled MultiWOZ files, cut to size.

    Returns both the texts (for the engine) and their separately tokenised ids (for the raw harness).
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    ids = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
    schema = json.loads((DATA / "multiwoz22_schema.json").read_text())
    lines = [
        f"{slot['name']}: {slot['description']}"
        + (f" ({', '.join(slot['possible_values'])})" if slot.get("is_categorical") else "")
        for service in schema
        for slot in service["slots"]
    ]
    preamble = _cut(tok, "Slots of the schema:\n" + "\n".join(lines) + "\n", preamble_tokens)
    with zipfile.ZipFile(DATA / "multiwoz21_dev.json.zip") as archive:
        dialogues = json.loads(archive.read(archive.namelist()[0]))
    turns = [
        f"{'user' if i % 2 == 0 else 'system'}: {turn['text'].strip()}\n"
        for d in dialogues.values()
        for i, turn in enumerate(d["log"])
    ]
    body, used = "", 0
    while len(ids(body + turns[used])) <= body_tokens:
        body, used = body + turns[used], used + 1
    conts = []
    for turn in turns[used:]:
        if len(conts) == ROWS:
            break
        if len(ids(turn)) >= CONT_TOKENS:
            conts.append(_cut(tok, turn, CONT_TOKENS))
    return {
        "preamble": preamble,
        "body": body,
        "continuations": conts,
        "ids": {"preamble": ids(preamble), "body": ids(body), "continuations": [ids(c) for c in conts]},
    }


def _cut(tok, text: str, n_tokens: int) -> str:
    """The prefix of `text` that re-tokenises to exactly `n_tokens` tokens (so every row has the same length)."""
    encoding = tok.encode(text, add_special_tokens=False)
    end = encoding.offsets[min(n_tokens, len(encoding.ids)) - 1][1]
    prefix = text[:end]
    while len(tok.encode(prefix, add_special_tokens=False).ids) > n_tokens:
        prefix = prefix[:-1]
    return prefix


# -- raw harness: the same KV orchestration on torch and on ONNX Runtime ----------------------------------------------

Past = tuple  # per layer (keys, values), each [rows, kv_heads, length, head_dim]


def torch_step(model) -> Callable:
    """A `step(ids, past) -> (logits, past)` over a Hugging Face model, past kept as plain per-layer tensors."""
    import transformers
    from transformers import DynamicCache

    # transformers 5 renamed the forward's `past_key_values` argument and output to `cache`.
    cache_arg = "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"

    def step(ids: torch.Tensor, past: Past | None) -> tuple[torch.Tensor, Past]:
        cache = DynamicCache()
        for layer, (k, v) in enumerate(past or ()):
            cache.update(k, v, layer)
        mask, positions = _mask_positions(ids, past)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_arg: cache})
        return out.logits.float(), tuple((layer.keys, layer.values) for layer in getattr(out, cache_arg).layers)

    return step


def _mask_positions(ids: torch.Tensor, past: Past | None) -> tuple[torch.Tensor, torch.Tensor]:
    """All-ones attention mask over past+new tokens, and the new tokens' positions (rows are never padded here)."""
    start = past[0][0].shape[2] if past else 0
    rows, width = ids.shape
    return torch.ones((rows, start + width), dtype=torch.long), torch.arange(start, start + width)[None].expand(rows, -1)


def session_step(folder: Path, threads: int) -> Callable:
    """The same `step` over a bare onnxruntime session of an optimum export: what an ORT engine backend would wrap."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    onnx_file = sorted(folder.glob("*.onnx"))[0]  # model.onnx, or model_quantized.onnx after ORTQuantizer
    session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    past_names = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    _, heads, _, head_dim = session.get_inputs()[3].shape

    def step(ids: torch.Tensor, past: Past | None) -> tuple[torch.Tensor, Past]:
        if past is None:
            empty = torch.zeros((ids.shape[0], heads, 0, head_dim))
            past = tuple((empty, empty) for _ in range(len(past_names) // 2))
        mask, positions = _mask_positions(ids, past)
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "position_ids": positions.contiguous().numpy()}
        feed |= {name: t.contiguous().numpy() for name, t in zip(past_names, (t for kv in past for t in kv), strict=True)}
        logits, *present = (torch.from_numpy(x) for x in session.run(None, feed))
        return logits, tuple(zip(present[::2], present[1::2], strict=True))

    return step


def ort_step(model) -> Callable:
    """The same `step` over optimum's ORTModelForCausalLM: its forward takes and returns past_key_values as tensors."""

    def step(ids: torch.Tensor, past: Past | None) -> tuple[torch.Tensor, Past]:
        mask, positions = _mask_positions(ids, past)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True)
        return out.logits.float(), tuple(tuple(kv) for kv in out.past_key_values)

    return step


def expand(past: Past, rows: int) -> Past:
    """The one-row past repeated to `rows` rows, as the engine expands a prompt to its samples or continuations."""
    return tuple((k.expand(rows, -1, -1, -1).contiguous(), v.expand(rows, -1, -1, -1).contiguous()) for k, v in past)


def raw_score(step: Callable, prefix: Past, body: list[int], conts: list[list[int]]) -> list[float]:
    """Summed log p of each continuation after preamble+body, the preamble's KV given, as the engine scores."""
    logits, past = step(torch.tensor([body]), prefix)
    last = logits[:, -1:].expand(len(conts), -1, -1)
    targets = torch.tensor(conts)
    later, _ = step(targets[:, :-1], expand(past, len(conts)))
    all_logits = torch.cat([last, later], dim=1)
    logps = all_logits.gather(-1, targets[..., None])[..., 0] - all_logits.logsumexp(-1)
    return logps.sum(1).tolist()


def raw_sample(step: Callable, prefix: Past, body: list[int], new_tokens: int, seed: int) -> list[list[int]]:
    """ROWS samples of exactly `new_tokens` tokens (temperature 1, no EOS stop) after preamble+body."""
    generator = torch.Generator().manual_seed(seed)
    logits, past = step(torch.tensor([body]), prefix)
    past, last = expand(past, ROWS), logits[:, -1].expand(ROWS, -1)
    drawn = []
    for i in range(new_tokens):
        token = torch.multinomial(last.softmax(-1), 1, generator=generator)
        drawn.append(token)
        if i + 1 < new_tokens:
            logits, past = step(token, past)
            last = logits[:, -1]
    return torch.cat(drawn, 1).tolist()


def same_prefix_fraction(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean fraction of each row's tokens before the first place where the two samplings differ."""
    fractions = []
    for row_a, row_b in zip(a, b, strict=True):
        same = next((i for i, (x, y) in enumerate(zip(row_a, row_b, strict=False)) if x != y), min(len(row_a), len(row_b)))
        fractions.append(same / max(len(row_a), len(row_b), 1))
    return sum(fractions) / len(fractions)


# -- runners: one backend's scoring and sampling, timed ---------------------------------------------------------------

Runner = Callable[[int], dict]  # repeat -> scores, score_s, sample_s, generated, tokens


def harness_runner(step: Callable, work: dict) -> Runner:
    """Run the raw harness on `step`; the preamble KV is computed here once, as the engine's LRU keeps it."""
    prefix = step(torch.tensor([work["preamble"]]), None)[1]

    def run(repeat: int) -> dict:
        started = time.perf_counter()
        scores = raw_score(step, prefix, work["body"], work["continuations"])
        scored = time.perf_counter()
        tokens = raw_sample(step, prefix, work["body"], CONT_TOKENS, seed=repeat)
        ended = time.perf_counter()
        return {
            "scores": scores,
            "score_s": scored - started,
            "sample_s": ended - scored,
            "generated": ROWS * CONT_TOKENS,
            "tokens": tokens,
        }

    return run


def engine_runner(engine, texts: dict) -> Runner:
    """Run our LanguageModel's score and sample; a first call caches the preamble KV, as a worker's first turn does."""
    from labelling.engine.lm import Prompt, SamplingParams

    prompt = Prompt(texts["preamble"], texts["body"])
    engine.score(prompt, texts["continuations"][:1])

    def run(repeat: int) -> dict:
        params = SamplingParams(n=ROWS, max_new_tokens=CONT_TOKENS, temperature=1.0, top_p=1.0, top_k=0, seed=repeat)
        started = time.perf_counter()
        scores = engine.score(prompt, texts["continuations"])
        scored = time.perf_counter()
        before = engine.stats.generated_tokens
        samples = engine.sample([prompt], params)[0]
        ended = time.perf_counter()
        tokens = [engine.tokenizer(s.text, add_special_tokens=False)["input_ids"] for s in samples]
        return {
            "scores": scores,
            "score_s": scored - started,
            "sample_s": ended - scored,
            "generated": engine.stats.generated_tokens - before,
            "tokens": tokens,
        }

    return run


def run_interleaved(runners: dict[str, Runner], repeats: int) -> dict[str, list[dict]]:
    """Each repeat runs every backend back to back, so a change in the shared machine's load hits all of them alike."""
    results: dict[str, list[dict]] = {name: [] for name in runners}
    with torch.inference_mode():
        for repeat in range(repeats):
            for name, run in runners.items():
                results[name].append(run(repeat))
    return results


def summarise(results: dict[str, list[dict]], base: str, extra: dict[str, dict]) -> dict:
    """Medians, speed ratios against `base`, and fidelity against it: max |Δ summed log-prob|, same ranking, same samples.

    Samples are compared with the first backend that draws the same way (`extra[name]["sampler"]`): same seeds.
    """
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    ref = results[base]
    out = {}
    for name, runs in results.items():
        score_s, sample_s = [r["score_s"] for r in runs], [r["sample_s"] for r in runs]
        row = {
            "score_s": round(median(score_s), 3),
            "sample_s": round(median(sample_s), 3),
            "sample_tok_s": round(median([r["generated"] / r["sample_s"] for r in runs]), 1),
            "score_s_all": [round(x, 3) for x in score_s],
            "sample_s_all": [round(x, 3) for x in sample_s],
            "score_speedup": round(median([r["score_s"] for r in ref]) / median(score_s), 3),
            "sample_speedup": round(median([r["sample_s"] for r in ref]) / median(sample_s), 3),
            # On a shared machine the fastest repeat is the least disturbed one, so best-of ratios are reported too.
            "score_speedup_best": round(min(r["score_s"] for r in ref) / min(score_s), 3),
            "sample_speedup_best": round(min(r["sample_s"] for r in ref) / min(sample_s), 3),
        } | compare_scores(runs[-1]["scores"], ref[-1]["scores"])
        twin = results[next(n for n in results if extra[n]["sampler"] == extra[name]["sampler"])]
        fractions = [same_prefix_fraction(r["tokens"], q["tokens"]) for r, q in zip(runs, twin, strict=True)]
        row["sampled_same_prefix"] = round(sum(fractions) / len(fractions), 3)
        out[name] = row | extra[name] | {"scores": [round(x, 4) for x in runs[-1]["scores"]]}
    return out


def compare_scores(scores: list[float], ref: list[float]) -> dict:
    """How far `scores` are from `ref`: max and mean |Δ|, same best, same full order, and the share of pairs kept in order."""
    diffs = [abs(a - b) for a, b in zip(scores, ref, strict=True)]
    pairs = [(i, j) for i in range(len(ref)) for j in range(i + 1, len(ref))]
    kept = sum((scores[i] - scores[j]) * (ref[i] - ref[j]) > 0 for i, j in pairs)
    return {
        "max_abs_logprob_diff": round(max(diffs), 5),
        "mean_abs_logprob_diff": round(sum(diffs) / len(diffs), 5),
        "same_best": _order(scores)[0] == _order(ref)[0],
        "same_ranking": _order(scores) == _order(ref),
        "pairs_in_order": round(kept / len(pairs), 3),
    }


def _order(scores: list[float]) -> list[int]:
    """Indices of `scores`, best first: what the noisy channel's choice depends on."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def _header(args: argparse.Namespace, work: dict) -> dict:
    """The settings and token counts that every result carries."""
    return {
        "threads": args.threads,
        "repeats": args.repeats,
        "tokens": {k: len(work[k]) for k in ("preamble", "body")} | {"continuations": [len(c) for c in work["continuations"]]},
    }


# -- subcommands ------------------------------------------------------------------------------------------------


def legacy_folder(model_dir: Path, out: Path) -> Path:
    """A copy of a transformers-5 model folder that transformers 4.x reads correctly (weights linked, not copied).

    transformers 5 writes `rope_parameters`; 4.x ignores it and would silently fall back to rope_theta=10000.
    """
    out.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.name != "config.json" and not (out / item.name).exists():
            (out / item.name).symlink_to(item)
    config = json.loads((model_dir / "config.json").read_text())
    rope = config.pop("rope_parameters", None) or {}
    config.update(rope_theta=rope.get("rope_theta", 10000.0), rope_scaling=None, torch_dtype=config.get("dtype", "float32"))
    (out / "config.json").write_text(json.dumps(config, indent=1))
    return out


def cmd_export(args: argparse.Namespace) -> dict:
    """Export the model to ONNX with KV inputs/outputs, and a dynamically int8-quantised copy (ORT's CPU int8)."""
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    torch.set_num_threads(args.threads)
    legacy = legacy_folder(Path(args.model), Path(args.out) / "legacy-model")
    fp32_dir, int8_dir = Path(args.out) / "onnx-fp32", Path(args.out) / "onnx-int8"
    started = time.perf_counter()
    main_export(str(legacy), str(fp32_dir), task="text-generation-with-past", device="cpu", do_validation=False)
    exported = time.perf_counter()
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
    ORTQuantizer.from_pretrained(str(fp32_dir)).quantize(save_dir=str(int8_dir), quantization_config=config)
    sizes = {d.name: round(sum(f.stat().st_size for f in d.glob("*.onnx*")) / 1e6, 1) for d in (fp32_dir, int8_dir)}
    return {"export_s": round(exported - started, 1), "quantize_s": round(time.perf_counter() - exported, 1), "onnx_mb": sizes}


def cmd_ort(args: argparse.Namespace) -> dict:
    """optimum's ORTModelForCausalLM (fp32 with and without IO binding, dynamic int8) against torch, same harness."""
    import onnxruntime
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    work = workload_texts(Path(args.model) / "tokenizer.json", args.preamble_tokens, args.body_tokens)["ids"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    legacy = legacy_folder(Path(args.model), Path(args.onnx) / "legacy-model")
    model = AutoModelForCausalLM.from_pretrained(str(legacy), dtype=torch.float32).eval()
    with torch.inference_mode():
        runners = {"torch_fp32": harness_runner(torch_step(model), work)}
        extra = {"torch_fp32": {"sampler": "harness"}}
        variants = (("ort_fp32", "onnx-fp32", False), ("ort_fp32_iobinding", "onnx-fp32", True), ("ort_int8", "onnx-int8", False))
        for name, folder, binding in variants:
            if name in args.backends:
                ort = ORTModelForCausalLM.from_pretrained(
                    Path(args.onnx) / folder,
                    use_cache=True,
                    use_io_binding=binding,
                    session_options=options,
                    provider="CPUExecutionProvider",
                )
                runners[name], extra[name] = harness_runner(ort_step(ort), work), {"sampler": "harness"}
    return _header(args, work) | summarise(run_interleaved(runners, args.repeats), "torch_fp32", extra)


def cmd_engine(args: argparse.Namespace) -> dict:
    """Our LanguageModel in fp32 against quanto and bitsandbytes weights behind it, and bare ORT sessions on the same work."""
    sys.path.insert(0, str(REPO))
    from transformers import AutoTokenizer

    from labelling.engine.lm import LanguageModel

    torch.set_num_threads(args.threads)
    texts = workload_texts(Path(args.model) / "tokenizer.json", args.preamble_tokens, args.body_tokens)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    runners: dict[str, Runner] = {}
    extra: dict[str, dict] = {}
    with torch.inference_mode():
        for name in ["engine_fp32", *args.backends]:
            before = _rss_mb()
            if name.startswith(("engine", "quanto", "bnb")):
                model = load_quantised(args.model, name)
                engine = LanguageModel.from_model(model, tokenizer, max_batch_tokens=args.max_batch_tokens)
                runners[name] = engine_runner(engine, texts)
                # bitsandbytes 0.50.2 on CPU: state_dict() on a 4-bit model corrupts its weights in place, so ask it instead.
                size = model.get_memory_footprint() if name.startswith("bnb") else _weight_bytes(model)
                extra[name] = {"sampler": "engine", "weights_mb": round(size / 1e6, 1)}
            elif name == "harness_torch_fp32":
                runners[name] = harness_runner(torch_step(load_quantised(args.model, "fp32")), texts["ids"])
                extra[name] = {"sampler": "harness"}
            elif name.startswith("session") and (Path(args.onnx) / name.removeprefix("session_")).is_dir():
                runners[name] = harness_runner(
                    session_step(Path(args.onnx) / name.removeprefix("session_"), args.threads), texts["ids"]
                )
                extra[name] = {"sampler": "harness"}
            else:
                continue
            gc.collect()
            extra[name]["rss_growth_mb"] = round(_rss_mb() - before, 1)
    return _header(args, texts["ids"]) | summarise(run_interleaved(runners, args.repeats), "engine_fp32", extra)


def load_quantised(folder: str, name: str):
    """The model with its linear layers' weights as `name` says: `quanto_int8`, `quanto_int4`, `bnb_8bit`, `bnb_4bit`, else fp32.

    lm_head stays unquantised and tied (bitsandbytes' default, copied for quanto): the logits feed every log-prob we use.
    bitsandbytes >= 0.46 has a CPU backend, so its log-prob drift can be measured here even though its speed cannot.
    """
    from transformers import AutoModelForCausalLM

    if name.startswith("bnb"):
        from transformers import BitsAndBytesConfig

        config = (
            BitsAndBytesConfig(load_in_8bit=True)
            if name == "bnb_8bit"
            else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
        )
        return AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, quantization_config=config, device_map="cpu"
        ).eval()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    if name.startswith("quanto"):
        from optimum.quanto import freeze, qint4, qint8, quantize

        quantize(model, weights={"quanto_int8": qint8, "quanto_int4": qint4}[name], exclude=["lm_head"])
        freeze(model)
    return model


def _rss_mb() -> float:
    """Resident memory of this process in MB (from /proc, Linux only)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _weight_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's weights occupy, counting quanto's packed data and scales, and tied tensors once."""
    seen, total = set(), 0
    stack = [t for t in model.state_dict(keep_vars=True).values()]
    while stack:
        tensor = stack.pop()
        if hasattr(tensor, "__tensor_flatten__"):  # a quanto QTensor: count its inner tensors
            names, _ = tensor.__tensor_flatten__()
            stack.extend(getattr(tensor, n) for n in names)
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.nbytes)
        if key not in seen:
            seen.add(key)
            total += tensor.nbytes
    return total


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run one subcommand, print its JSON (and write it to --json if given)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["export", "ort", "engine"])
    parser.add_argument(
        "--model", required=True, help="the SmolLM2 safetensors folder (labelling.engine.model_files.resolve_lm('smollm2'))"
    )
    parser.add_argument("--out", default="/tmp/optwork", help="export: where the ONNX folders go")
    parser.add_argument("--onnx", default="/tmp/optwork", help="ort: the folder given to export --out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preamble-tokens", type=int, default=1000)
    parser.add_argument("--body-tokens", type=int, default=400)
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument(
        "--backends",
        nargs="*",
        default=[
            "ort_fp32",
            "ort_fp32_iobinding",
            "ort_int8",
            "quanto_int8",
            "quanto_int4",
            "bnb_8bit",
            "bnb_4bit",
            "harness_torch_fp32",
            "session_onnx-fp32",
            "session_onnx-int8",
        ],
        help="which to compare (each command takes the ones it knows)",
    )
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    result = {"export": cmd_export, "ort": cmd_ort, "engine": cmd_engine}[args.command](args)
    result = {"command": args.command, "versions": _versions()} | result
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def _versions() -> dict:
    """Versions of the packages that decide the figures."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "optimum-quanto"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


if __name__ == "__main__":
    main()
