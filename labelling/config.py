"""JobConfig: one file (JSON or YAML) in the reference's job schema plus our own keys, checked strictly.

Unknown keys, wrong types and out-of-range values are errors that name the key path; the reference's
legacy keys (``wandb``, ``profile``, ...) are accepted with a warning so its job files run unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import json
import logging
import math
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from labelling.errors import ConfigError

log = logging.getLogger(__name__)
GENERATION_MODES = ("greedy", "noisy_channel_joint", "noisy_channel_cond")
TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")  # the names lm.DTYPES maps (kept apart: no torch import here)
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
QUANTIZATIONS = ("8bit", "4bit")  # what lm.LanguageModel.load accepts (named here too: config must not import torch)
RETRIEVAL_FORMATS = ("context_system_user", "user_response", "response")  # retrieval.TEXT_FORMATS' names (no numpy here)
DEFAULT_PROFILE = "cpu-small"  # what every command lays a job file over when no --profile is given


@dataclass
class ModelConfig:
    """Which language model a module uses and how it is loaded."""

    model_name_or_path: str = "smollm2"
    model_type: str = "causal_lm"
    torch_dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 16
    use_past_key_value_cache: bool = True
    load_in_8bit: bool = False  # the reference's flag: the same as quantization "8bit"
    quantization: str | None = None  # "8bit" | "4bit": bitsandbytes weights on CUDA (StarCoder-15B on 24 GB cards)
    stop_sequences: list[str] | None = None
    attn_implementation: str | None = None
    adapter_path: str | None = None


@dataclass
class RetrieverConfig:
    """How in-context examples are retrieved for a module."""

    use_retriever: bool = True
    model_name_or_path: str = "minilm"
    type: str = "mpnet"
    k_examples: int = 8
    example_warmup: int = 0
    minimum_distinct: int = 1
    retrieval_input_format: str | None = None
    use_normalizer: bool = True


@dataclass
class SamplingConfig:
    """Candidate sampling: n samples per turn with temperature, top-k, then top-p."""

    n: int = 5
    best_of: int = 0
    top_p: float = 0.9
    top_k: int = 50
    temperature: float = 1.0
    max_new_tokens: int = 120


@dataclass
class GenerationConfig:
    """How a module picks its label among candidates."""

    generation_mode: str = "noisy_channel_joint"
    prompt_mode: str | None = None
    noisy_channel_prompt_mode: str | None = None
    sampling_args: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class ModuleConfig:
    """One labelling module (DST or act tagging)."""

    module_type: str = "dst"
    model: ModelConfig = field(default_factory=ModelConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    generation_cfg: GenerationConfig = field(default_factory=GenerationConfig)
    add_predictions_to_index: bool = True
    fill_with_demos: bool = True


@dataclass
class ManifestConfig:
    """Which manifest group the run belongs to and whether it reads and writes it."""

    group_id: str = "default"
    seed_retrievers_from_manifest: bool = True
    write_to_manifest: bool = True
    type: str = "mongodb"
    manifest_path: str | None = None
    manifest_must_exist: bool = False
    group_id_must_exist: bool = False


@dataclass
class DataConfig:
    """What to label: a dataset (folder, hub name or corpus name) and one split of it."""

    eval_set_path_or_name: str | None = None
    eval_set_split_name: str | None = None


@dataclass
class JobConfig:
    """A whole labelling job; ``dst`` and ``act_tag`` are the two modules."""

    data: DataConfig = field(default_factory=DataConfig)
    dst: ModuleConfig = field(default_factory=ModuleConfig)
    act_tag: ModuleConfig = field(default_factory=lambda: ModuleConfig(module_type="act_tag"))
    manifest: ManifestConfig = field(default_factory=ManifestConfig)
    data_warmup: int = 0
    data_num_partitions: int = 4
    seed: int = 42
    pool_refresh_waves: int = 0
    max_batch_tokens: int = 16384
    services: list[str] = field(default_factory=lambda: ["hotel", "train", "attraction", "restaurant", "taxi"])
    schema_path: str | None = None

    def to_dict(self) -> dict:
        """Plain-dict form, for storing beside the labels and in dataset cards."""
        return dataclasses.asdict(self)

    def validate(self) -> JobConfig:
        """Raise ConfigError on out-of-range values; returns self so calls can chain."""
        _check(self.data_num_partitions >= 0, "data_num_partitions", "must be >= 0")
        _check(self.data_warmup >= 0, "data_warmup", "must be >= 0")
        _check(self.pool_refresh_waves >= 0, "pool_refresh_waves", "must be >= 0 (0 keeps the pool fixed)")
        _check(self.max_batch_tokens >= 256, "max_batch_tokens", "must be >= 256")
        _check(bool(self.services), "services", "must name at least one service")
        _check(len(set(self.services)) == len(self.services), "services", f"lists a service twice: {self.services}")
        if self.schema_path is None:  # another schema file is checked where it is read, on the machine that reads it
            from labelling.schema import Schema

            known = Schema.load(services=None).names
            unknown = [s for s in self.services if s not in known]
            _check(not unknown, "services", f"{unknown} are not services of the bundled schema ({', '.join(known)})")
        for name in ("dst", "act_tag"):
            _validate_module(name, getattr(self, name))
        return self


# Keys of the reference's schema that have no effect here; accepted so its job files load, with a warning.
LEGACY_KEYS = {
    JobConfig: {
        "output",
        "wandb",
        "profile",
        "schema_config",
        "resume_from_logs",
        "prompt_generator",
        "create_self_labelled_dataset",
        "publish_labelled_dataset_as",
    },
    DataConfig: {"train_set_path_or_name", "train_set_split_name"},
    ModuleConfig: {"verbatim_k_examples", "verbatim_documents_path"},
    ModelConfig: {"examples"},
    RetrieverConfig: {"index_set_path_or_name", "index_set_split_name", "from_artifact"},
}


_warned: set[str] | None = None  # inside warn_once(): the legacy keys already warned about


@contextlib.contextmanager
def warn_once() -> Iterator[None]:
    """Within this block each legacy key is warned about once: 160 reference job files would repeat each 160 times."""
    global _warned
    outer, _warned = _warned, set() if _warned is None else _warned
    try:
        yield
    finally:
        _warned = outer


def _check(ok: bool, path: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key {path}: {message}")


def _validate_module(name: str, module: ModuleConfig) -> None:
    s, r, g = module.generation_cfg.sampling_args, module.retriever, module.generation_cfg
    prefix = f"{name}.generation_cfg"
    _check(g.generation_mode in GENERATION_MODES, f"{prefix}.generation_mode", f"must be one of {', '.join(GENERATION_MODES)}")
    _check(0 < s.top_p <= 1, f"{prefix}.sampling_args.top_p", f"must be in (0, 1], got {s.top_p}")
    _check(s.top_k >= 0, f"{prefix}.sampling_args.top_k", f"must be >= 0 (0 disables top-k), got {s.top_k}")
    _check(0 < s.temperature < math.inf, f"{prefix}.sampling_args.temperature", f"must be > 0 and finite, got {s.temperature}")
    _check(s.n >= 1, f"{prefix}.sampling_args.n", f"must be >= 1, got {s.n}")
    _check(s.best_of >= 0, f"{prefix}.sampling_args.best_of", f"must be >= 0 (0 means n), got {s.best_of}")
    _check(s.max_new_tokens >= 1, f"{prefix}.sampling_args.max_new_tokens", f"must be >= 1, got {s.max_new_tokens}")
    m = module.model
    _check(bool(m.model_name_or_path.strip()), f"{name}.model.model_name_or_path", "must not be empty")
    _check(
        m.quantization in (None, *QUANTIZATIONS),
        f"{name}.model.quantization",
        f"must be 8bit, 4bit or null, not {m.quantization!r}",
    )
    _check(m.torch_dtype in TORCH_DTYPES, f"{name}.model.torch_dtype", f"must be one of {', '.join(TORCH_DTYPES)}")
    _check(bool(_DEVICE.fullmatch(m.device)), f"{name}.model.device", f"must be auto, cpu, mps, cuda or cuda:N, got {m.device!r}")
    _check(m.batch_size >= 1, f"{name}.model.batch_size", f"must be >= 1, got {m.batch_size}")
    _check(r.k_examples >= 0, f"{name}.retriever.k_examples", f"must be >= 0, got {r.k_examples}")
    _check(r.example_warmup >= 0, f"{name}.retriever.example_warmup", "must be >= 0")
    _check(r.minimum_distinct >= 1, f"{name}.retriever.minimum_distinct", "must be >= 1")
    _check(
        r.retrieval_input_format in (None, *RETRIEVAL_FORMATS),
        f"{name}.retriever.retrieval_input_format",
        f"must be one of {', '.join(RETRIEVAL_FORMATS)} or null, not {r.retrieval_input_format!r}",
    )


def _build(cls: type, data: object, path: str) -> object:
    if not isinstance(data, dict):
        raise ConfigError(f"config key {path or '<top>'}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key in LEGACY_KEYS.get(cls, set()):
            if _warned is None or where not in _warned:
                log.warning("config key %s is from the reference's schema and has no effect here; ignored", where)
            if _warned is not None:
                _warned.add(where)
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(fields)}"
            raise ConfigError(f"config key {where}: unknown key", hint)
        kwargs[key] = _coerce(hints[key], value, where)
    return cls(**kwargs)


def _coerce(hint: object, value: object, where: str) -> object:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {where}: expected a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"config key {where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def from_dict(data: dict, profile: str | None = None) -> JobConfig:
    """A validated JobConfig from a dict, laid over a built-in profile when one is named."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key <top>: expected an object, got {type(data).__name__}")
    if profile is not None:
        data = _merge(profile_dict(profile), data)
    # A module block without module_type is the module its key names (ModuleConfig's own default would say dst).
    data = {k: {"module_type": k, **v} if k in ("dst", "act_tag") and isinstance(v, dict) else v for k, v in data.items()}
    config = _build(JobConfig, data, "")
    assert isinstance(config, JobConfig)
    return config.validate()


def load(path: str | Path | None = None, profile: str | None = None) -> JobConfig:
    """Read a job file (.json, .yaml or .yml) laid over ``profile`` (DEFAULT_PROFILE when None); with no file, the profile."""
    profile = profile or DEFAULT_PROFILE
    if path is None:
        return from_dict({}, profile)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read job config ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})", "save the job config as UTF-8") from e
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # both parsers raise their own error types
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'} ({_where(e)})") from e
    return from_dict(data if data is not None else {}, profile)


def _where(error: Exception) -> str:
    """A parser error on one line: YAML's span several, with the offending text quoted underneath."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {getattr(error, 'problem', None) or 'syntax error'}"
    return " ".join(str(error).split())


def _module(mode: str, k: int, top_p: float, n: int, model: str, embedder: str, max_new: int, warmup: int) -> dict:
    generation = {
        "generation_mode": mode,
        "sampling_args": {"n": n, "best_of": n, "top_p": top_p, "top_k": 50, "temperature": 1.0, "max_new_tokens": max_new},
    }
    retriever = {"model_name_or_path": embedder, "k_examples": k, "example_warmup": warmup, "minimum_distinct": 4}
    return {"model": {"model_name_or_path": model}, "retriever": retriever, "generation_cfg": generation}


PROFILES = {
    # The reference's initial-labelling settings (method.md §2.3).
    "starcoder": {
        "dst": {
            **_module("noisy_channel_joint", 8, 0.7, 8, "bigcode/starcoder", "sentence-transformers/all-mpnet-base-v2", 120, 32),
            "module_type": "dst",
            "fill_with_demos": False,
        },
        "act_tag": {
            **_module("noisy_channel_cond", 6, 0.8, 8, "bigcode/starcoder", "sentence-transformers/all-mpnet-base-v2", 120, 32),
            "module_type": "act_tag",
            "fill_with_demos": False,
        },
        "data_warmup": 24,
        "data_num_partitions": 4,
    },
    # Embedded models on a CPU: fewer, shorter samples and fewer examples so a turn takes seconds.
    "cpu-small": {
        "dst": {**_module("noisy_channel_joint", 3, 0.7, 3, "smollm2", "minilm", 48, 3), "module_type": "dst"},
        "act_tag": {**_module("noisy_channel_cond", 3, 0.8, 3, "smollm2", "minilm", 40, 3), "module_type": "act_tag"},
        "data_warmup": 0,
        "data_num_partitions": 1,
    },
}


def profile_dict(name: str) -> dict:
    """The raw dict of a built-in profile; ConfigError lists the profiles when the name is unknown."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}", f"built-in profiles: {', '.join(PROFILES)}")
    return copy.deepcopy(PROFILES[name])
