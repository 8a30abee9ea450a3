"""Graph runners (labelling/engine/graphs.py): which runner a device gets, and the eager runner's replay. The CUDA graph
runner itself is exercised in tests/engine/test_gpu.py (skipped without CUDA); tests/engine/test_static_decode.py
replays through a fake runner that warms up as it does."""

from __future__ import annotations

import torch

from labelling.engine import graphs


def test_a_cpu_gets_the_eager_runner_even_with_graphs_asked_for():
    for asked in (True, False):
        runner = graphs.runner_for(torch.device("cpu"), asked)
        assert isinstance(runner, graphs.EagerRunner) and runner.name == "eager" and not runner.warms_up


def test_the_eager_runner_replays_by_calling_the_step():
    calls = []
    runner = graphs.EagerRunner()
    replay = runner.capture(lambda: calls.append(len(calls)))
    assert calls == []  # capturing runs nothing
    replay()
    replay()
    assert calls == [0, 1] and runner.captures == 0 and runner.capture_seconds == 0.0
