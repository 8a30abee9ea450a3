"""The models a job needs (LMs, embedders, example indexes), loaded once per process and shared across partitions.

A worker that labels many partitions must not reload a 15B model per task; the DST and act modules share
one model when they name the same one.
"""

from __future__ import annotations

from labelling.config import JobConfig, ModuleConfig
from labelling.labeller import PartitionLabeller
from labelling.lm import LanguageModel, _device
from labelling.retrieval import Embedder, ExampleIndex, build_index
from labelling.schema import Schema

_LOADED: dict[tuple, object] = {}


def language_model(module: ModuleConfig, max_batch_tokens: int) -> LanguageModel:
    """The LM a module names, loaded on first use and then reused."""
    m = module.model
    quantization = m.quantization or ("8bit" if m.load_in_8bit else None)
    key = ("lm", m.model_name_or_path, m.device, m.torch_dtype, m.use_past_key_value_cache, max_batch_tokens, quantization)
    if key not in _LOADED:
        _LOADED[key] = LanguageModel.load(
            m.model_name_or_path,
            device=m.device,
            dtype=m.torch_dtype,
            max_batch_tokens=max_batch_tokens,
            reuse_prefix=m.use_past_key_value_cache,
            quantization=quantization,
        )
    return _LOADED[key]


def embedder(name_or_path: str, device: str = "cpu") -> Embedder:
    """The sentence embedder, loaded on first use and then reused."""
    key = ("embedder", name_or_path, device)
    if key not in _LOADED:
        _LOADED[key] = Embedder.load(name_or_path, device=device)
    return _LOADED[key]


def example_index(module: ModuleConfig, kind: str) -> ExampleIndex | None:
    """A fresh, empty example index for one module (None when the module retrieves nothing)."""
    r = module.retriever
    if not r.use_retriever:
        return None
    device = embedder_device(module.model.device)
    return build_index(
        embedder(r.model_name_or_path, device),
        kind,
        k=r.k_examples,
        minimum_distinct=r.minimum_distinct,
        warmup=r.example_warmup,
        text_format=r.retrieval_input_format,
    )


def embedder_device(lm_device: str) -> str:
    """The embedder runs where the module's LM does: on the worker's GPU when `auto` finds one (a GPU embeds a pool in
    seconds, a CPU in minutes)."""
    return str(_device(lm_device))


def build_labeller(config: JobConfig, schema: Schema | None = None) -> PartitionLabeller:
    """A PartitionLabeller with shared models and fresh indexes, ready for one partition."""
    schema = schema or Schema.load(config.schema_path, tuple(config.services))
    return PartitionLabeller(
        config,
        schema,
        dst_lm=language_model(config.dst, config.max_batch_tokens),
        act_lm=language_model(config.act_tag, config.max_batch_tokens),
        dst_index=example_index(config.dst, "dst"),
        act_index=example_index(config.act_tag, "act"),
    )
