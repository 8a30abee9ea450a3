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

from labelling import embedded, settings
from labelling.bounded import NESTING, NODES, TooBig, load_yaml, measure_json, quoted, read_head, wide_encoding
from labelling.errors import ConfigError
from labelling.limits import MAX_CONFIG_BYTES, MAX_SCHEMA_BYTES, MISSING, file_problem
from labelling.schema import Schema

log = logging.getLogger(__name__)
DEFAULT_PROFILE = "cpu-rules"  # the profile every command starts from when none is named (README, Label quality: why)
GENERATION_MODES = ("greedy", "noisy_channel_joint", "noisy_channel_cond", "vote", "rules")  # rules: no LM (method/rules.py)
# How a module's LM label and the rule labeller's are combined (docs/deviations.md, C7): not at all (the reference); the
# rules' values and acts added where the LM's label lacks that slot or act kind ("fill"); the rules' label laid over the
# LM's, which adds only what the rules did not find ("override"); the rules' label as one more candidate ("candidate").
# "gaps" is "override" with the LM kept to what rules cannot spell: free-text (non-categorical) slots the rules left
# unset in the turn (names, places, times said in other words), and act kinds the rules did not tag.
RULE_MERGES = ("off", "fill", "override", "gaps", "candidate")
# What becomes of a sample that does not parse: it competes as "no change" / no acts (the reference), or it is dropped
# whenever another sample parsed (docs/deviations.md, C4).
UNPARSEABLE_SAMPLES = ("compete", "drop")
TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")  # the names lm.DTYPES maps (kept apart: no torch import here)
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
QUANTIZATIONS = ("8bit", "4bit")  # what lm.LanguageModel.load accepts (named here too: config must not import torch)
RETRIEVAL_FORMATS = ("context_system_user", "user_response", "response")  # retrieval.TEXT_FORMATS' names (no numpy here)
_SPLIT = re.compile(r"\w+")  # what ingest names splits (PREFIX_A_B): no path separators, no dots
# The documented range of every number a job config holds (README, Configuration): a value outside it is refused when
# the config is validated, before anything is written, instead of exhausting memory or time at run time.
MISSING_MODEL = "does not exist here (give a model folder, a .gguf file, or an alias such as smollm2 / minilm)"
RANGES: dict[str, tuple[float, float]] = {
    "n": (1, 64),
    "best_of": (0, 64),
    "top_k": (0, 100_000),
    "top_p": (0, 1),  # (0, 1]: 0 itself is refused
    "temperature": (0.01, 100),
    "max_new_tokens": (1, 4096),
    "k_examples": (0, 64),
    "example_warmup": (0, 100_000),
    "minimum_distinct": (1, 64),
    "data_warmup": (0, 100_000),
    "data_num_partitions": (0, 100_000),
    "pool_refresh_batches": (0, 100_000),
    "turns_per_batch": (0, 100_000),
    "max_batch_tokens": (256, 1 << 26),
    "seed": (0, 2**32 - 1),
    "examples_dialogues": (1, 10_000_000),
    "pool_min_confidence": (0, 1),
}


@dataclass
class ModelConfig:
    """Which language model a module uses and how it is loaded."""

    model_name_or_path: str = "smollm2"
    torch_dtype: str = "auto"
    device: str = "auto"
    use_past_key_value_cache: bool = True
    load_in_8bit: bool = False  # the reference's flag: the same as quantization "8bit"
    quantization: str | None = None  # "8bit" | "4bit": bitsandbytes weights on CUDA (StarCoder-15B on 24 GB cards)

    @property
    def weights_quantization(self) -> str | None:
        """The quantization the weights load with: `quantization`, else "8bit" for the reference's `load_in_8bit`."""
        return self.quantization or ("8bit" if self.load_in_8bit else None)


@dataclass
class RetrieverConfig:
    """How in-context examples are retrieved for a module."""

    use_retriever: bool = True
    model_name_or_path: str = "minilm"
    k_examples: int = 8
    example_warmup: int = 0
    minimum_distinct: int = 1
    retrieval_input_format: str | None = None
    use_normalizer: bool = True


@dataclass
class SamplingConfig:
    """Candidate sampling: n samples per turn with temperature, top-k, then top-p."""

    n: int = 5
    best_of: int = 0  # above n: draw best_of samples and keep the n likeliest
    top_p: float = 0.9
    top_k: int = 50
    temperature: float = 1.0
    max_new_tokens: int | None = None  # unset: the embedded model's own limit, else the reference's (120; 128 greedy)


@dataclass
class GenerationConfig:
    """How a module picks its label among candidates."""

    generation_mode: str = "noisy_channel_joint"
    sampling_args: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class ModuleConfig:
    """One labelling module (DST or act tagging)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    generation_cfg: GenerationConfig = field(default_factory=GenerationConfig)
    add_predictions_to_index: bool = True
    # None (unset) resolves by model when the config is validated (labelling/embedded.py): an embedded model gets its
    # record's settings (SmolLM2 and Qwen2.5-Coder: invented demos while the index is small, samples that do not parse
    # dropped, sampling inside the schema's grammar, grammar.py); any other model gets the reference's behaviour (no
    # demos, failed samples compete as "no change", unconstrained). So a reference job file laid over cpu-small stays
    # reference-like. `sampling_args.max_new_tokens` and `model.torch_dtype: auto` follow the model the same way.
    # `drop_unsaid_values` drops label values the turn never says (canonical.ground_state / ground_acts): on for the
    # embedded models, off for the reference, which keeps whatever its model writes.
    fill_with_demos: bool | None = None
    unparseable_samples: str | None = None
    constrain_to_schema: bool | None = None
    drop_unsaid_values: bool | None = None
    with_rules: str = "off"  # RULE_MERGES; ignored when generation_mode is rules (the rules alone label the module)

    @property
    def uses_rules(self) -> bool:
        """Whether this module needs the rule labeller: it labels by rules, or combines them with its LM."""
        return self.generation_cfg.generation_mode == "rules" or self.with_rules != "off"

    @property
    def uses_lm(self) -> bool:
        """Whether this module needs its LM (and its retriever): not when the rules alone label it."""
        return self.generation_cfg.generation_mode != "rules"


@dataclass
class RulesConfig:
    """The rule labeller's data: an ontology (labelling/ontology.py) and a cue file (labelling/cues.py); None means the
    bundled MultiWOZ files, which suit the bundled schema. A user's own schema brings its own."""

    ontology: str | None = None
    cues: str | None = None


@dataclass
class ManifestConfig:
    """The manifest group (set to the labelling group's name when the group is created) and whether labelling draws its
    examples from the group's completed partitions."""

    group_id: str = "default"
    seed_retrievers_from_manifest: bool = True


@dataclass
class DataConfig:
    """Which split a per-partition job file labels (the corpus itself is named on the command line)."""

    eval_set_split_name: str | None = None


@dataclass
class JobConfig:
    """A whole labelling job; ``dst`` and ``act_tag`` are the two modules."""

    data: DataConfig = field(default_factory=DataConfig)
    dst: ModuleConfig = field(default_factory=ModuleConfig)
    act_tag: ModuleConfig = field(default_factory=ModuleConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    manifest: ManifestConfig = field(default_factory=ManifestConfig)
    data_warmup: int = 0
    data_num_partitions: int = 4
    seed: int = 42
    pool_refresh_batches: int = 0
    # Turns labelled between index updates; 0 labels a whole turn-id wave at once. Unset: 0 for an embedded DST model,
    # else the reference's 2.
    turns_per_batch: int | None = None
    max_batch_tokens: int | None = None  # rows x columns per forward pass; None: sized from free GPU memory (16384 on CPU)
    services: list[str] = field(default_factory=lambda: ["hotel", "train", "attraction", "restaurant", "taxi"])
    schema_path: str | None = None
    # Labelled dialogues put into the example pool before the seed partition (labelling/examples.py): a corpus path in
    # any format `labelling ingest` reads, and how many of its dialogues (None: all).
    examples: str | None = None
    examples_dialogues: int | None = None
    # A self-label joins the example pool only when its confidence (labelling/method/confidence.py) is at least this.
    pool_min_confidence: float = 0.0

    def to_dict(self) -> dict:
        """Plain-dict form, for storing beside the labels and in dataset cards."""
        return dataclasses.asdict(self)

    def load_schema(self) -> Schema:
        """The service schema this job labels with: its schema file (default: the bundled one) cut to its services."""
        return Schema.load(self.schema_path, tuple(self.services))

    def validate(self) -> JobConfig:
        """Raise ConfigError on out-of-range values and on files that cannot be what they name (a schema that is not a
        regular file of bounded size, a local model path that does not exist); returns self so calls can chain."""
        _check(self.data_num_partitions >= 0, "data_num_partitions", "must be >= 0")
        _check(self.data_warmup >= 0, "data_warmup", "must be >= 0")
        _check(self.pool_refresh_batches >= 0, "pool_refresh_batches", "must be >= 0 (0 keeps the pool fixed)")
        if self.turns_per_batch is None:
            small = embedded.find(self.dst.model.model_name_or_path) is not None
            self.turns_per_batch = 0 if small else embedded.REFERENCE_TURNS_PER_BATCH
        _check(self.turns_per_batch >= 0, "turns_per_batch", "must be >= 0 (0 labels whole waves)")
        _check(
            self.max_batch_tokens is None or self.max_batch_tokens >= 256,
            "max_batch_tokens",
            "must be >= 256, or null to size it from the device memory left after loading",
        )
        for key in ("data_num_partitions", "data_warmup", "pool_refresh_batches", "turns_per_batch", "seed"):
            _in_range(key, getattr(self, key), key)
        if self.max_batch_tokens is not None:
            _in_range("max_batch_tokens", self.max_batch_tokens, "max_batch_tokens")
        if self.examples_dialogues is not None:
            _in_range("examples_dialogues", self.examples_dialogues, "examples_dialogues")
        _in_range("pool_min_confidence", self.pool_min_confidence, "pool_min_confidence")
        split = self.data.eval_set_split_name
        _check(
            split is None or bool(_SPLIT.fullmatch(split)),
            "data.eval_set_split_name",
            f"must be a split name (letters, digits, underscores), got {quoted(split)}",
        )
        _check(bool(self.services), "services", "must name at least one service")
        _check(len(set(self.services)) == len(self.services), "services", f"lists a service twice: {quoted(self.services)}")
        if self.schema_path is None:
            known = Schema.load(services=None).names
            unknown = [s for s in self.services if s not in known]
            _check(not unknown, "services", f"{quoted(unknown)} are not services of the bundled schema ({', '.join(known)})")
        else:  # its content is checked where it is read; a device, a folder or a huge file is refused here, unread
            problem = file_problem(self.schema_path, MAX_SCHEMA_BYTES)
            _check(problem in (None, MISSING), "schema_path", f"{self.schema_path}: {problem}")
        rules_used = [m for m in ("dst", "act_tag") if getattr(self, m).uses_rules]
        own_schema = self.schema_path is not None and file_problem(self.schema_path, MAX_SCHEMA_BYTES) is None
        _check(
            not rules_used or not own_schema or self.rules.cues is not None,
            "rules.cues",
            f"{' and '.join(rules_used)} label by rules, whose bundled cue file knows only the bundled MultiWOZ schema: "
            "give a cue file for your schema (labelling/cues.py says what it holds), or choose an LM profile "
            "such as --profile cpu-qwen",
        )
        for key in ("ontology", "cues"):
            path = getattr(self.rules, key)
            problem = None if path is None else file_problem(path, MAX_SCHEMA_BYTES)
            _check(problem is None, f"rules.{key}", f"{path}: {problem}")
        for name in ("dst", "act_tag"):
            _validate_module(name, getattr(self, name))
        _share_loading_settings(self.dst.model, self.act_tag.model)
        for name in ("dst", "act_tag"):  # after sharing: a dtype set on one module holds for both when they share a model
            module = getattr(self, name)
            if module.model.torch_dtype == "auto":
                module.model.torch_dtype = model_defaults(name, module)["torch_dtype"]
        return self


def _in_range(key: str, value: float, where: str) -> None:
    low, high = RANGES[key]
    _check(low <= value <= high, where, f"must be between {_number(low)} and {_number(high)}, got {_number(value)}")


def _number(value: float) -> str:
    """A number as messages show it: whole ones with thousands separators, others as %g (1e-300, 0.01)."""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e15):
        return f"{int(value):,}" if abs(value) < 1e15 else f"{float(value):g}"
    return f"{value:g}"


# Keys of the reference's schema that have no effect here; accepted so its job files load, with a warning. Every
# other key is a field that the package reads (tests/test_config.py checks both).
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
    DataConfig: {"eval_set_path_or_name", "train_set_path_or_name", "train_set_split_name"},  # the corpus is --corpus
    ModuleConfig: {"module_type", "verbatim_k_examples", "verbatim_documents_path"},  # the module is its key: dst, act_tag
    # Models load through transformers with our own batching (max_batch_tokens), stops and attention; no adapters.
    ModelConfig: {"examples", "model_type", "batch_size", "stop_sequences", "attn_implementation", "adapter_path"},
    RetrieverConfig: {"type", "index_set_path_or_name", "index_set_split_name", "from_artifact"},  # the embedder is named
    GenerationConfig: {"prompt_mode", "noisy_channel_prompt_mode"},  # the prompts follow generation_mode
    # The manifest lives in the store (MongoDB) and is always written; groups are created by `labelling run`.
    ManifestConfig: {"type", "manifest_path", "write_to_manifest", "manifest_must_exist", "group_id_must_exist"},
}


# Keys this package has renamed: the old name is read as the new one, with a warning, so older job files still run.
RENAMED_KEYS = {JobConfig: {"pool_refresh_waves": "pool_refresh_batches"}}  # a batch of the schedule, not a turn-id wave

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


def _share_loading_settings(dst: ModelConfig, act: ModelConfig) -> None:
    """Both modules naming one model share one loaded copy, so they load it alike. A loading key left at its default on
    one module takes the other's value (the reference's job files set torch_dtype on dst only); two different explicit
    values are an error, since a second copy (8-bit on one module only, say) would not fit the card sized for one."""
    if dst.model_name_or_path != act.model_name_or_path:
        return
    unset = ModelConfig()
    for key in ("torch_dtype", "device", "quantization"):
        ours, theirs = _loading_value(dst, key), _loading_value(act, key)
        if ours == theirs:
            continue
        if ours == _loading_value(unset, key):
            setattr(dst, key, theirs)
        elif theirs == _loading_value(unset, key):
            setattr(act, key, ours)
        else:
            raise ConfigError(
                f"config keys dst.model.{key} ({quoted(ours)}) and act_tag.model.{key} ({quoted(theirs)}) differ, "
                f"but both modules use {dst.model_name_or_path}, which is loaded once for both",
                f"set {key} alike in both modules, or on one of them only (load_in_8bit: true counts as quantization 8bit)",
            )


def _loading_value(model: ModelConfig, key: str) -> object:
    return model.weights_quantization if key == "quantization" else getattr(model, key)


# The module settings that, left unset, follow the module's model (embedded record or the reference's behaviour).
FOLLOW_THE_MODEL = tuple(embedded.REFERENCE_SETTINGS)


def model_defaults(name: str, module: ModuleConfig) -> dict:
    """The settings that follow a module's model: an embedded model's record (labelling/embedded.py), else the
    reference's behaviour, with its 120 new tokens (128 in greedy mode)."""
    record = embedded.find(module.model.model_name_or_path)
    if record is not None:
        return record.settings(name)
    greedy = module.generation_cfg.generation_mode == "greedy"
    tokens = embedded.REFERENCE_GREEDY_MAX_NEW_TOKENS if greedy else embedded.REFERENCE_MAX_NEW_TOKENS
    return {**embedded.REFERENCE_SETTINGS, "max_new_tokens": tokens, "torch_dtype": "auto"}


def _resolve_model_defaults(name: str, module: ModuleConfig) -> None:
    """Fill the settings left unset (None) with what suits the module's model (see ModuleConfig); `torch_dtype: auto`
    is resolved after both modules share their loading settings (JobConfig.validate)."""
    defaults = model_defaults(name, module)
    for key in FOLLOW_THE_MODEL:
        if getattr(module, key) is None:
            setattr(module, key, defaults[key])
    sampling = module.generation_cfg.sampling_args
    if sampling.max_new_tokens is None:
        sampling.max_new_tokens = defaults["max_new_tokens"]


def follow_mode(name: str, before: ModuleConfig, after: ModuleConfig) -> None:
    """After a decoding-mode override of a resolved module (``before`` -> ``after``: ``label-split --mode``, the quality
    bench's greedy rows), re-derive the token limit that follows the mode: a ``max_new_tokens`` that was the model's
    default under the old mode becomes its default under the new one (a reference model decoding greedily gets 128, as
    the reference's greedy pass), while a value set to something else, or changed by the override, holds."""
    old, new = before.generation_cfg, after.generation_cfg
    tokens = new.sampling_args.max_new_tokens
    if old.generation_mode != new.generation_mode and tokens == old.sampling_args.max_new_tokens:
        if tokens == model_defaults(name, before)["max_new_tokens"]:
            new.sampling_args.max_new_tokens = model_defaults(name, after)["max_new_tokens"]


def with_mode(job: JobConfig, mode: str) -> JobConfig:
    """A copy of a resolved ``job`` decoding both modules with ``mode``, its mode-following settings re-derived."""
    out = copy.deepcopy(job)
    for name in ("dst", "act_tag"):
        getattr(out, name).generation_cfg.generation_mode = mode
        follow_mode(name, getattr(job, name), getattr(out, name))
    return out.validate()


def _validate_module(name: str, module: ModuleConfig) -> None:
    _resolve_model_defaults(name, module)
    s, r, g = module.generation_cfg.sampling_args, module.retriever, module.generation_cfg
    prefix = f"{name}.generation_cfg"
    _check(g.generation_mode in GENERATION_MODES, f"{prefix}.generation_mode", f"must be one of {', '.join(GENERATION_MODES)}")
    merges = ", ".join(RULE_MERGES)
    _check(module.with_rules in RULE_MERGES, f"{name}.with_rules", f"must be one of {merges}, not {module.with_rules!r}")
    choices = ", ".join(UNPARSEABLE_SAMPLES)
    _check(module.unparseable_samples in UNPARSEABLE_SAMPLES, f"{name}.unparseable_samples", f"must be one of {choices}")
    _check(0 < s.top_p <= 1, f"{prefix}.sampling_args.top_p", f"must be in (0, 1], got {s.top_p}")
    _check(s.top_k >= 0, f"{prefix}.sampling_args.top_k", f"must be >= 0 (0 disables top-k), got {s.top_k}")
    _check(0 < s.temperature < math.inf, f"{prefix}.sampling_args.temperature", f"must be > 0 and finite, got {s.temperature}")
    _check(s.n >= 1, f"{prefix}.sampling_args.n", f"must be >= 1, got {s.n}")
    _check(s.best_of >= 0, f"{prefix}.sampling_args.best_of", f"must be >= 0 (0 means n), got {s.best_of}")
    _check(s.max_new_tokens >= 1, f"{prefix}.sampling_args.max_new_tokens", f"must be >= 1, got {s.max_new_tokens}")
    for key in ("n", "best_of", "top_k", "temperature", "max_new_tokens"):
        _in_range(key, getattr(s, key), f"{prefix}.sampling_args.{key}")
    m = module.model
    _check(bool(m.model_name_or_path.strip()), f"{name}.model.model_name_or_path", "must not be empty")
    _check(
        m.quantization in (None, *QUANTIZATIONS),
        f"{name}.model.quantization",
        f"must be 8bit, 4bit or null, not {quoted(m.quantization)}",
    )
    _check(m.torch_dtype in TORCH_DTYPES, f"{name}.model.torch_dtype", f"must be one of {', '.join(TORCH_DTYPES)}")
    _check(
        bool(_DEVICE.fullmatch(m.device)),
        f"{name}.model.device",
        f"must be auto, cpu, mps, cuda or cuda:N, got {quoted(m.device)}",
    )
    _check(r.k_examples >= 0, f"{name}.retriever.k_examples", f"must be >= 0, got {r.k_examples}")
    _check(r.example_warmup >= 0, f"{name}.retriever.example_warmup", "must be >= 0")
    _check(r.minimum_distinct >= 1, f"{name}.retriever.minimum_distinct", "must be >= 1")
    for key in ("k_examples", "example_warmup", "minimum_distinct"):
        _in_range(key, getattr(r, key), f"{name}.retriever.{key}")
    _check(
        r.retrieval_input_format in (None, *RETRIEVAL_FORMATS),
        f"{name}.retriever.retrieval_input_format",
        f"must be one of {', '.join(RETRIEVAL_FORMATS)} or null, not {quoted(r.retrieval_input_format)}",
    )
    for key, value in (
        (f"{name}.model.model_name_or_path", m.model_name_or_path),
        (f"{name}.retriever.model_name_or_path", r.model_name_or_path),
    ):
        problem = model_path_problem(value)  # one missing here may exist on the workers: see labelling.fleet.preflight
        _check(problem in (None, MISSING_MODEL), key, f"{value}: {problem}")


def model_path_problem(name: str) -> str | None:
    """What is wrong with a model given as a local path: missing, or neither a folder nor a .gguf file; None for a
    folder, a regular .gguf file, an alias or a hub id (those are checked where the model loads)."""
    if not embedded.looks_like_path(name):
        return None
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        problem = file_problem(path, 1 << 40)  # any size, but a regular file
        return MISSING_MODEL if problem == MISSING else problem
    if path.is_dir():
        return None
    if path.exists():
        return "is not a model folder (give a folder save_pretrained wrote, or a .gguf file)"
    return MISSING_MODEL


def _build(cls: type, data: object, path: str) -> object:
    if not isinstance(data, dict):
        raise ConfigError(f"config key {path or '<top>'}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in _renamed(cls, data, path).items():
        name = key if isinstance(key, str) and len(key) <= 100 else quoted(key)  # a key may be any YAML value
        where = f"{path}.{name}" if path else name
        if key in LEGACY_KEYS.get(cls, set()):
            if _warned is None or where not in _warned:
                log.warning("config key %s is from the reference's schema and has no effect here; ignored", where)
            if _warned is not None:
                _warned.add(where)
            continue
        if key not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(fields)}"
            raise ConfigError(f"config key {where}: unknown key", hint)
        kwargs[key] = _coerce(hints[key], value, where)
    return cls(**kwargs)


def _renamed(cls: type, data: dict, path: str) -> dict:
    """`data` with this class's renamed keys under their new names (each warned about); both names at once is an error."""
    renames = RENAMED_KEYS.get(cls, {})
    out = dict(data)
    for old, new in renames.items():
        if old not in out:
            continue
        where = f"{path}.{old}" if path else old
        if new in out:
            raise ConfigError(f"config key {where}: the old name of {new!r}, given beside it", hint=f"keep only {new!r}")
        log.warning("config key %s is now called %s; read as %s", where, new, new)
        out[new] = out.pop(old)
    return out


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
        raise ConfigError(f"config key {where}: expected {hint.__name__}, got {type(value).__name__} {quoted(value)}")
    return value


def _as_dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def from_dict(data: dict, profile: str | None = None) -> JobConfig:
    """A validated JobConfig from a dict laid over a built-in profile (default :data:`DEFAULT_PROFILE`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key <top>: expected an object, got {type(data).__name__}")
    data = _merge(profile_dict(profile or DEFAULT_PROFILE), data)
    config = _build(JobConfig, data, "")
    assert isinstance(config, JobConfig)
    return config.validate()


def refuse_unused_models(data: dict, config: JobConfig, profile: str) -> None:
    """ConfigError when a job file names a module's model while that module labels by rules (the default profile's
    mode), which loads no model: the file's author meant the model to label. Stored group configs are not checked:
    a rules profile names its unused model itself."""
    named = {m for m in ("dst", "act_tag") if "model_name_or_path" in _as_dict(_as_dict(data.get(m)).get("model"))}
    unused = [m for m in sorted(named) if not getattr(config, m).uses_lm]
    _check(
        not unused,
        f"{unused[0] if unused else ''}.model.model_name_or_path",
        f"names a model, but {' and '.join(unused)} label by rules (the {profile} profile), which load no model: "
        "set generation_mode (e.g. greedy) to use it, or start from an LM profile such as --profile cpu-qwen",
    )


def load(path: str | Path | None = None, profile: str | None = None) -> JobConfig:
    """Read a job file (.json, .yaml or .yml) laid over ``profile`` (default :data:`DEFAULT_PROFILE`); with no file, the
    profile itself."""
    profile = profile or DEFAULT_PROFILE
    if path is None:
        return from_dict({}, profile)
    path = Path(path)
    data = _parse_job_file(path, _read_job_file(path))
    config = from_dict(data if data is not None else {}, profile)
    refuse_unused_models(data if isinstance(data, dict) else {}, config, profile)
    return config


def _read_job_file(path: Path) -> bytes:
    """The bytes of a job file, read only when it is a regular file within :data:`MAX_CONFIG_BYTES` (``/dev/zero``, or
    a ``.yaml`` link to it, is refused unread) and never more than that many."""
    problem = file_problem(path, MAX_CONFIG_BYTES)
    if problem not in (None, MISSING):
        raise ConfigError(f"{path}: job config {problem}", "give a JSON or YAML job file")
    try:
        raw = read_head(path.expanduser(), MAX_CONFIG_BYTES)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read job config ({e.strerror})") from e
    if len(raw) > MAX_CONFIG_BYTES:  # it grew after it was measured
        raise ConfigError(f"{path}: job config is over the limit of {MAX_CONFIG_BYTES:,} bytes", "give a JSON or YAML job file")
    return raw


def _parse_job_file(path: Path, raw: bytes) -> object:
    """A job file's data: YAML composed and measured (aliases expanded, nesting) before any value is built, JSON measured
    before it is parsed; past a bound it is refused in one line naming the setting that raises it."""
    kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
    wide = wide_encoding(raw[:4])
    try:
        if wide is not None:
            raise UnicodeDecodeError("utf-8", raw, 0, 1, f"it starts with a {wide} byte-order mark")
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})", "save the job config as UTF-8") from e
    nesting = settings.MAX_NESTING.get()
    try:
        if kind == "YAML":
            return load_yaml(text, settings.MAX_YAML_NODES.get(), nesting)
        measure_json(raw, settings.MAX_JSON_ELEMENTS.get(), nesting)
        return json.loads(text)
    except TooBig as e:
        setting = {NESTING: settings.MAX_NESTING, NODES: settings.MAX_YAML_NODES}.get(e.bound, settings.MAX_JSON_ELEMENTS)
        raise ConfigError(f"{path}: job config {e}, the limit", f"raise {setting.name} if it is genuine") from e
    except Exception as e:  # both parsers raise their own error types
        raise ConfigError(f"{path}: not valid {kind} ({_where(e)})") from e


def _where(error: Exception) -> str:
    """A parser error on one line: YAML's span several, with the offending text quoted underneath."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {getattr(error, 'problem', None) or 'syntax error'}"
    return " ".join(str(error).split())


def _both_models(**settings: object) -> dict:
    """An override giving both modules' `model` the same loading settings (they share one loaded copy)."""
    return {module: {"model": dict(settings)} for module in ("dst", "act_tag")}


def _module(
    *,
    generation_mode: str,
    n: int,
    top_p: float,
    model: str,
    embedder: str,
    k_examples: int,
    example_warmup: int,
    fill_with_demos: bool | None,
    unparseable_samples: str | None,
    torch_dtype: str = "auto",
    constrain_to_schema: bool | None = False,
    drop_unsaid_values: bool | None = False,
) -> dict:
    """One module of a profile, as job-file data (top-k 50, temperature 1 and 4 distinct examples are common to all;
    `max_new_tokens` is left to follow the model and the decoding mode)."""
    sampling = {"n": n, "top_p": top_p, "top_k": 50, "temperature": 1.0}
    return {
        "model": {"model_name_or_path": model, "torch_dtype": torch_dtype},
        "retriever": {
            "model_name_or_path": embedder,
            "k_examples": k_examples,
            "example_warmup": example_warmup,
            "minimum_distinct": 4,
        },
        "generation_cfg": {"generation_mode": generation_mode, "sampling_args": sampling},
        "fill_with_demos": fill_with_demos,
        "unparseable_samples": unparseable_samples,
        "constrain_to_schema": constrain_to_schema,
        "drop_unsaid_values": drop_unsaid_values,
    }


# The reference's models, bf16 as its job files pin; failed samples compete as "no change" as in the reference.
_STARCODER = {
    "model": "bigcode/starcoder",
    "torch_dtype": "bfloat16",
    "embedder": "sentence-transformers/all-mpnet-base-v2",
    "fill_with_demos": False,
    "unparseable_samples": "compete",
}
# A small model needs to see the call format before its index fills: invented demos, and samples that do not parse
# are dropped rather than voting for "no change" (left unset, these follow the model's record: see ModuleConfig).
_CPU = {"embedder": "minilm", "fill_with_demos": None, "unparseable_samples": None, "drop_unsaid_values": None}
_CPU_DECODING = {"generation_mode": "greedy", "constrain_to_schema": None}
PROFILES = {
    # The reference's initial-labelling settings (docs/method.md §2.3), with its 2-turn batches on a large GPU (§2.4).
    "starcoder": {
        "dst": _module(
            **_STARCODER,
            generation_mode="noisy_channel_joint",
            n=8,
            top_p=0.7,
            k_examples=8,
            example_warmup=32,
        ),
        "act_tag": _module(
            **_STARCODER,
            generation_mode="noisy_channel_cond",
            n=8,
            top_p=0.8,
            k_examples=6,
            example_warmup=32,
        ),
        "data_warmup": 24,
        "data_num_partitions": 4,
        "turns_per_batch": 2,
    },
    # Embedded models on a CPU: greedy decoding inside the schema grammar, unsaid values dropped (both follow the model,
    # labelling/embedded.py). Chosen on train_850_900, never on the held-out quality slice (README, Label quality):
    # greedy + constraints; the vote of 3 samples gained 2 of 47 turns of turn accuracy, lost act F1 and took 3x as long.
    # SmolLM2-135M is the fast profile (the tests' real model); it labels far worse than Qwen2.5-Coder-0.5B.
    # The token limits follow the model: its record covers the 99th percentile of the bundled corpus's gold completions
    # in its own tokens; n and top-p apply when a config switches the channel or the vote on.
    "cpu-small": {
        "dst": _module(**_CPU, **_CPU_DECODING, model="smollm2", n=3, top_p=0.7, k_examples=3, example_warmup=3),
        "act_tag": _module(**_CPU, **_CPU_DECODING, model="smollm2", n=3, top_p=0.8, k_examples=3, example_warmup=3),
        "data_warmup": 0,
        "data_num_partitions": 1,
    },
}
# The same on the embedded Qwen2.5-Coder-0.5B-Instruct, a code model about 4x SmolLM2's size: the default profile, as
# the demo on it takes 191 s on 2 cores and its labels beat SmolLM2's on every figure (README, Label quality).
PROFILES["cpu-qwen"] = _merge(
    PROFILES["cpu-small"], {module: {"model": {"model_name_or_path": "qwen2.5-coder-0.5b"}} for module in ("dst", "act_tag")}
)
# The rule labeller alone (labelling/method/rules.py): no LM is loaded and no example retrieved. On the bundled corpus its
# labels beat every LM configuration measured on this CPU (README, Label quality); for another schema it needs that
# schema's cue file and ontology (`rules:` in the job file).
PROFILES["cpu-rules"] = _merge(
    PROFILES["cpu-qwen"], {module: {"generation_cfg": {"generation_mode": "rules"}} for module in ("dst", "act_tag")}
)
# The embedded Qwen2.5-Coder-1.5B-Instruct (`make install-quality`) writing only what the rules cannot: DST rules first,
# the LM filling free-text slots the rules left unset; acts by the rules (the LM's acts scored far below them).
PROFILES["cpu-quality"] = _merge(
    PROFILES["cpu-qwen"],
    {
        "dst": {"model": {"model_name_or_path": "qwen2.5-coder-1.5b"}, "with_rules": "gaps"},
        "act_tag": {"model": {"model_name_or_path": "qwen2.5-coder-1.5b"}, "generation_cfg": {"generation_mode": "rules"}},
    },
)


# StarCoder-15B with 8-bit weights (about 16 GB, computing in bf16) for 24 GB cards; "starcoder" (bf16, 31 GB) needs
# 40 GB and up. Either way the batch budget is sized from the memory left after loading.
PROFILES["starcoder-8bit"] = _merge(PROFILES["starcoder"], _both_models(quantization="8bit"))


REFERENCE_DECODING = {"dst": "noisy_channel_joint", "act_tag": "noisy_channel_cond"}  # docs/method.md §2.3


def with_reference_decoding(job: JobConfig) -> JobConfig:
    """A copy of ``job`` decoding as the reference does: noisy channel (joint for DST, conditional for acts), unconstrained,
    every value the model writes kept.

    The benchmark of the engine runs this workload whatever the profile's own decoding, and so do tests of the machinery
    (so their workload and timings do not move when a profile's label settings change).
    """
    job = copy.deepcopy(job)
    for name, mode in REFERENCE_DECODING.items():
        module = getattr(job, name)
        module.generation_cfg.generation_mode = mode
        module.constrain_to_schema = False
        module.drop_unsaid_values = False
    return job.validate()


def profile_dict(name: str) -> dict:
    """The raw dict of a built-in profile; ConfigError lists the profiles when the name is unknown."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}", f"built-in profiles: {', '.join(PROFILES)}")
    return copy.deepcopy(PROFILES[name])


def first_difference(a: object, b: object, path: str = "") -> str | None:
    """The dotted key path of the first place two plain JSON-like values differ, or None when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    return None if a == b else (path or "<top>")
