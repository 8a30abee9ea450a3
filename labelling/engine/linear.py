"""Linear layers for the few-row passes of decoding on a CPU: one matrix product that streams each weight once.

A decode pass feeds a handful of tokens, so each linear layer multiplies a few rows by a large weight. On the
development machine (2 cores of an AMD EPYC, torch 2.13), torch's fp32 `linear` ran such passes through SmolLM2's 211
weights far more slowly than `weight @ x.T`: 73.0 against 18.5 ms for 2 rows, 59.7 against 39.9 for 6; and one row
(a matrix-vector product) took 43.5 ms either way, but 19.8 padded to two rows (`benchmarks/few_row_linear.py`, which
also times whole decode passes). Other CPUs and builds may differ: `LABELLING_FEW_ROW_LINEAR=0` keeps torch's layer.
The numbers are the same up to float rounding (`tests/engine/test_linear.py`).

Only the optimised engine switches it on, around its own model calls (`few_rows`); the plain path keeps torch's layer.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Iterator

import torch

# Up to 9 rows `weight @ x.T` won in every run; at 12 and 16 one run each way; at 18 and 27 torch's layer won (prefill
# passes feed hundreds of rows). 16 covers a decode pass of 8 rows with one guess each.
MAX_ROWS = 16
_switch = threading.local()  # per thread: two engines in one process (a threads pool) may share a model


def use_few_row_linear(model: torch.nn.Module) -> None:
    """Route the model's fp32 CPU `nn.Linear` layers through `few_row_linear` (idempotent); off until `few_rows(True)`."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if type(module) is not torch.nn.Linear or "forward" in vars(module):
            continue  # subclasses (quantised layers) and layers already routed keep their own forward
        if weight is not None and weight.device.type == "cpu" and weight.dtype == torch.float32:
            module.forward = types.MethodType(_routed_forward, module)  # a bound method: a deep copy binds to the copy


def _routed_forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if getattr(_switch, "on", False):
        return few_row_linear(x, module.weight, module.bias)
    return torch.nn.functional.linear(x, module.weight, module.bias)


@contextlib.contextmanager
def few_rows(on: bool) -> Iterator[None]:
    """Within the block, routed layers on this thread use `few_row_linear` if `on`, torch's `linear` otherwise."""
    before = getattr(_switch, "on", False)
    _switch.on = on
    try:
        yield
    finally:
        _switch.on = before


def few_row_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`torch.nn.functional.linear(x, weight, bias)`, as `weight @ x.T` when x has at most `MAX_ROWS` rows."""
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    if n == 0 or n > MAX_ROWS:
        return torch.nn.functional.linear(x, weight, bias)
    if n == 1:  # a matrix-vector product takes the slow path too: two equal rows, one kept
        rows = rows.expand(2, -1).contiguous()
    out = torch.mm(weight, rows.t())[:, :n].t().contiguous()
    if bias is not None:
        out += bias
    return out.reshape(*x.shape[:-1], weight.shape[0])
