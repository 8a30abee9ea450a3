"""benchmarks/gpu_decode_step.py with --tiny: the decode-step check runs on the CPU and its report adds up."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_decode_step.py"


def test_tiny_step_check(tmp_path):
    torch.set_num_threads(1)
    script = runpy.run_path(str(SCRIPT), run_name="gpu_decode_step")
    out = tmp_path / "step.json"
    report = script["main"](
        ["--tiny", "--rows", "3", "--columns", "30", "--steps", "2", "--bandwidth-gbs", "50", "--out", str(out)]
    )
    assert json.loads(out.read_text()) == report
    assert report["device"] == "cpu" and "graph" not in report  # no CUDA graph on a CPU
    read = (
        report["weight_gb"] * 1e9
        + 3 * 30 * script["KVShape"].of(script["build_model"](True, "cpu", torch.float32).config, 4).kv_bytes_per_token
    )
    for name in ("eager", "static"):
        figures = report[name]
        assert 0 < figures["ms_min"] <= figures["ms_median"]
        assert figures["bandwidth_fraction"] == pytest.approx(read / 50e9 / (figures["ms_median"] / 1e3))
    assert report["sampler"]["ms_median"] > 0 and report["static_first_call_s"] > 0
