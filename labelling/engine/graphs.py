"""Runners that turn a decode step into something replayable: eagerly (every call runs the Python step again) or as a
captured CUDA graph (the step's kernels recorded once, then launched as one graph with no Python or dispatcher work).

A step given to a runner reads and writes only static buffers (`labelling.engine.static_decode`), so replaying the
recorded kernels computes what calling the step again would. A runner's `capture` may run the step once to warm up
(CUDA's capture needs its kernels chosen and its workspaces allocated first): the caller makes that run harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

Step = Callable[[], None]


class EagerRunner:
    """Runs the step itself at each replay: the static cache without graphs (CPUs, and the reference on a GPU)."""

    name = "eager"
    warms_up = False  # capture does not run the step

    def __init__(self) -> None:
        self.captures = 0
        self.capture_seconds = 0.0

    def capture(self, step: Step) -> Step:
        return step  # nothing captured: `captures` stays 0


class CudaGraphRunner:
    """Captures the step as a `torch.cuda.CUDAGraph`, all graphs of one runner sharing one memory pool.

    The step is run once on a side stream first (CUDA's recipe: kernels picked, cuBLAS workspaces made), then recorded.
    Recording runs nothing on the device. The pool lives as long as the runner and its graphs.
    """

    name = "cuda_graph"
    warms_up = True

    def __init__(self, device: torch.device):
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.captures = 0
        self.capture_seconds = 0.0

    def capture(self, step: Step) -> Step:
        started = time.perf_counter()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            step()
        torch.cuda.synchronize(self.device)
        self.graphs.append(graph)
        self.captures += 1
        self.capture_seconds += time.perf_counter() - started
        return graph.replay


def runner_for(device: torch.device, graphs: bool) -> EagerRunner | CudaGraphRunner:
    """A CUDA graph runner on a CUDA device when `graphs`, else the eager one."""
    return CudaGraphRunner(device) if graphs and device.type == "cuda" else EagerRunner()
