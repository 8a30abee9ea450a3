"""Loading a causal LM: device, dtype and quantisation choices, and free device memory.

Hub ids, local folders, `.gguf` files and the embedded models all go through :func:`load_pretrained`, which places
each weight shard straight on the device (no whole model in host RAM).
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from labelling.engine import model_files
from labelling.engine.memory import OOM_HINT
from labelling.errors import ConfigError, ModelError

QUANTIZATIONS = ("8bit", "4bit")  # bitsandbytes weights, CUDA only
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
SIXTEEN_BIT = (torch.bfloat16, torch.float16)


def load_pretrained(name_or_path: str, device: str, dtype: str, quantization: str | None) -> tuple:
    """(model, tokenizer) for a hub id, a local folder, a `.gguf` file, or an embedded model's alias (converted once)."""
    model_files.check_access(name_or_path)
    path = model_files.resolve_lm(name_or_path)
    target = resolve_device(device)
    dtype_ = load_dtype(dtype, quantization)
    quantized = quantization_kwargs(quantization, target, dtype_)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype_, device_map={"": target}, **quantized)
    except torch.OutOfMemoryError as exc:
        raise ModelError(f"language model {name_or_path!r} does not fit in the memory of {target}", hint=OOM_HINT) from exc
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load language model {name_or_path!r}: {str(exc).splitlines()[0]}",
            hint=f"give a local folder, a .gguf file, a reachable hub id, or one of {model_files.LM_ALIASES}",
        ) from exc
    return model, tokenizer


def torch_dtype(name: str) -> torch.dtype | str:
    """A torch dtype from 'float32', 'bfloat16', 'float16' or 'auto' (whatever the checkpoint holds)."""
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}", hint=f"use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load_dtype(name: str, quantization: str | None) -> torch.dtype | str:
    """The dtype to load with: the configured one, except that quantized weights compute in 16 bits (bfloat16 unless
    float16 was asked for); with fp32 or the checkpoint's dtype the KV cache and activations would take twice the memory."""
    dtype = torch_dtype(name)
    if quantization is not None and dtype not in SIXTEEN_BIT:
        return torch.bfloat16
    return dtype


def quantization_kwargs(name: str | None, device: torch.device, dtype: torch.dtype | str) -> dict:
    """`from_pretrained` arguments for bitsandbytes '8bit' / '4bit' weights; {} for full-precision weights.

    CUDA only: on CPU bitsandbytes is slower than fp32 and its 4-bit state_dict corrupts weights (benchmarks/OPTIMUM.md).
    """
    if name is None:
        return {}
    if name not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {name!r}", hint=f"use {' or '.join(QUANTIZATIONS)}, or leave it unset")
    if device.type != "cuda":
        raise ConfigError(f"quantization {name!r} needs a CUDA device, not {device}", hint="leave quantization unset on CPU")
    from transformers import BitsAndBytesConfig

    if name == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:  # NF4 with double quantisation; matmuls run in the 16-bit load dtype
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
        )
    return {"quantization_config": config}


def device_memory(device: torch.device) -> tuple[int, int] | None:
    """(free, total) bytes on a CUDA device, counting memory torch holds cached but unused as free; None elsewhere."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device), total


def resolve_device(name: str) -> torch.device:
    """A torch device from 'cpu', 'cuda', 'cuda:1' or 'auto' (CUDA when present)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}", hint="use cpu, cuda, cuda:N or auto") from exc
    # An explicit index, so weights placed with device_map land where the batch budget measures free memory.
    return torch.device("cuda", 0) if device.type == "cuda" and device.index is None else device
