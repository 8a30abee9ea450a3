"""The models a job needs (LMs, embedders, example indexes), loaded once per process and shared across partitions.

A worker that labels many partitions must not reload a 15B model per task. Modules naming the same model with the
same loading settings share one loaded copy (config validation refuses the same model loaded two ways), and a job
whose model differs from the one loaded replaces it rather than loading a second copy beside it.
"""

from __future__ import annotations

import gc
import threading

from labelling.config import JobConfig, ModelConfig, ModuleConfig
from labelling.engine.lm import LanguageModel
from labelling.engine.loading import resolve_device
from labelling.method.labeller import PartitionLabeller
from labelling.method.retrieval import Embedder, ExampleIndex, build_index
from labelling.schema import Schema

_LOADED: dict[tuple, object] = {}
_LOADING = threading.Lock()  # a threads pool shares this process: two tasks must not load one model twice


def _weights_key(model: ModelConfig) -> tuple:
    """What decides the loaded weights: the model and how it is loaded (not batching or prefix reuse)."""
    return ("lm", model.model_name_or_path, model.device, model.torch_dtype, model.weights_quantization)


def language_model(module: ModuleConfig, max_batch_tokens: int | None) -> LanguageModel:
    """The LM a module names, loaded on first use and then reused; None sizes the batch budget from free memory."""
    m = module.model
    weights = _weights_key(m)
    with _LOADING:
        if weights not in _LOADED:
            _LOADED[weights] = LanguageModel.load(
                m.model_name_or_path,
                device=m.device,
                dtype=m.torch_dtype,
                max_batch_tokens=max_batch_tokens,
                reuse_prefix=m.use_past_key_value_cache,
                quantization=m.weights_quantization,
            )
        loaded = _LOADED[weights]
        if (loaded.max_batch_tokens_setting, loaded.reuse_prefix) == (max_batch_tokens, m.use_past_key_value_cache):
            return loaded
        # Same weights, other engine options (another group's budget, the plain path): a second engine, not a copy.
        view = (*weights, max_batch_tokens, m.use_past_key_value_cache)
        if view not in _LOADED:
            _LOADED[view] = LanguageModel(loaded.model, loaded.tokenizer, max_batch_tokens, m.use_past_key_value_cache)
        return _LOADED[view]


def keep_only(config: JobConfig) -> None:
    """Drop loaded LMs the job does not use, so a worker moving to a group with another model frees the old one first."""
    wanted = {_weights_key(m.model) for m in (config.dst, config.act_tag) if not by_rules(m)}
    stale = [key for key in _LOADED if key[0] == "lm" and key[:5] not in wanted]
    if not stale:
        return
    with _LOADING:
        for key in stale:
            _LOADED.pop(key, None)
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def embedder(name_or_path: str, device: str = "cpu") -> Embedder:
    """The sentence embedder, loaded on first use and then reused."""
    key = ("embedder", name_or_path, device)
    with _LOADING:
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
    return str(resolve_device(lm_device))


def build_labeller(config: JobConfig, schema: Schema | None = None) -> PartitionLabeller:
    """A PartitionLabeller with shared models and fresh indexes, ready for one partition."""
    schema = schema or config.load_schema()
    keep_only(config)
    return PartitionLabeller(
        config,
        schema,
        dst_lm=_module_lm(config.dst, config.max_batch_tokens),
        act_lm=_module_lm(config.act_tag, config.max_batch_tokens),
        dst_index=None if by_rules(config.dst) else example_index(config.dst, "dst"),
        act_index=None if by_rules(config.act_tag) else example_index(config.act_tag, "act"),
    )


def by_rules(module: ModuleConfig) -> bool:
    """Whether a module is labelled by the rules alone: it then loads no LM and retrieves no examples."""
    return not module.uses_lm


def _module_lm(module: ModuleConfig, max_batch_tokens: int | None) -> LanguageModel | None:
    return None if by_rules(module) else language_model(module, max_batch_tokens)
