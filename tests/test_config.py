"""JobConfig: the reference's job files load, our profiles load, and bad files fail with a key path."""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
import typing
from pathlib import Path

import pytest

from labelling import config
from labelling.errors import ConfigError

# The shape of the reference's initial-labelling job_0.json (docs/method.md §2), written from its documented fields.
REFERENCE_JOB = {
    "data": {"eval_set_path_or_name": "Brendan/multiwoz_turns_v22_partitioned", "eval_set_split_name": "train_0_50"},
    "output": {},
    "wandb": {"run_tags": ["Starcoder Self Label - Initial Labelling"]},
    "profile": False,
    "data_num_partitions": 4,
    "data_warmup": 24,
    "manifest": {
        "type": "dynamo",
        "manifest_path": "Table",
        "group_id": "initial_labelling",
        "seed_retrievers_from_manifest": False,
        "write_to_manifest": True,
    },
    "dst": {
        "module_type": "dst",
        "model": {
            "model_type": "starcoder",
            "model_name_or_path": "bigcode/starcoder",
            "stop_sequences": ["\n\n", "#", "]"],
            "batch_size": 16,
            "use_past_key_value_cache": True,
            "attn_implementation": "flash_attention_2",
            "torch_dtype": "bfloat16",
            "load_in_8bit": False,
        },
        "retriever": {
            "use_retriever": True,
            "type": "mpnet",
            "model_name_or_path": "sentence-transformers/all-mpnet-base-v2",
            "k_examples": 8,
            "example_warmup": 32,
            "retrieval_input_format": "context_system_user",
            "use_normalizer": True,
            "minimum_distinct": 4,
        },
        "generation_cfg": {
            "prompt_mode": "causal_dst",
            "generation_mode": "noisy_channel_joint",
            "noisy_channel_prompt_mode": "noisy_channel_dst",
            "sampling_args": {"top_p": 0.7, "n": 8, "best_of": 8},
        },
        "add_predictions_to_index": True,
    },
    "act_tag": {
        "module_type": "act_tag",
        "model": {"model_type": "starcoder", "model_name_or_path": "bigcode/starcoder"},
        "retriever": {"k_examples": 6, "retrieval_input_format": "user_response", "minimum_distinct": 4},
        "generation_cfg": {"generation_mode": "noisy_channel_cond", "sampling_args": {"top_p": 0.8, "n": 8, "best_of": 8}},
    },
}


def test_reference_job_file_loads_with_warnings_for_legacy_keys(tmp_path, caplog):
    path = tmp_path / "job_0.json"
    path.write_text(json.dumps(REFERENCE_JOB))
    with caplog.at_level(logging.WARNING):
        job = config.load(path)
    assert job.dst.generation_cfg.sampling_args.top_p == 0.7
    assert job.act_tag.retriever.k_examples == 6
    assert job.manifest.group_id == "initial_labelling"
    assert "wandb" in caplog.text


def test_yaml_and_profiles(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("dst:\n  retriever:\n    k_examples: 2\n")
    job = config.load(path, profile="cpu-small")
    assert job.dst.retriever.k_examples == 2
    assert job.dst.model.model_name_or_path == "smollm2"
    assert config.load(profile="starcoder").dst.model.model_name_or_path == "bigcode/starcoder"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"dst": {"retriever": {"k_exampels": 3}}}, "dst.retriever.k_exampels: unknown key (did you mean 'k_examples'?)"),
        ({"dst": {"retriever": {"k_examples": "8"}}}, "dst.retriever.k_examples: expected int, got str"),
        (
            {"dst": {"generation_cfg": {"sampling_args": {"top_p": 1.5}}}},
            "dst.generation_cfg.sampling_args.top_p: must be in (0, 1]",
        ),
        ({"act_tag": {"retriever": {"k_examples": -1}}}, "act_tag.retriever.k_examples: must be >= 0"),
        ({"data_warmup": True}, "data_warmup: expected int, got bool"),
        ({"dst": {"generation_cfg": {"generation_mode": "beam"}}}, "generation_mode: must be one of"),
        ({"dst": []}, "dst: expected an object"),
        ({"dst": {"model": {"quantization": "3bit"}}}, "dst.model.quantization: must be 8bit, 4bit or null"),
    ],
)
def test_bad_values_name_the_key(patch, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.from_dict(patch, "cpu-small")


def test_malformed_file_and_unknown_profile(tmp_path):
    bad = tmp_path / "job.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        config.load(bad)
    with pytest.raises(ConfigError, match="built-in profiles: starcoder, cpu-small"):
        config.load(profile="gpt5")


# --- an honest config: every key is read, or a legacy key that warns ------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _attribute_reads(tree: ast.AST) -> set[str]:
    """Dotted attribute reads (``module.model.device``), also through local aliases (``m = module.model``; ``m.device``)."""
    reads: set[str] = set()
    for scope in ast.walk(tree):
        if not isinstance(scope, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        aliases: dict[str, str] = {}
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    pairs = (
                        zip(target.elts, node.value.elts, strict=False)
                        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                        else [(target, node.value)]
                    )
                    aliases.update({t.id: ast.unparse(v) for t, v in pairs if isinstance(t, ast.Name)})
        for node in ast.walk(scope):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                text = ast.unparse(node)
                base = text.split(".")[0]
                reads.add(text)
                if base in aliases:
                    reads.add(aliases[base] + text[len(base) :])
    return reads


def _fields(cls: type, parent: str | None = None):
    """(class, parent field name, field name) for every field of the config tree."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield cls, parent, f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _fields(hints[f.name], f.name)


def _read_through_methods(reads: set[str]) -> set[tuple[str, str]]:
    """(class name, field) pairs read by a method or property of a config class that code outside config.py uses,
    such as ``ModelConfig.weights_quantization`` or ``JobConfig.load_schema``; validation code is not a method."""
    tree = ast.parse((REPO / "labelling" / "config.py").read_text(encoding="utf-8"))
    found = set()
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for method in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            if any(r.endswith(f".{method.name}") for r in reads):
                found |= {(cls.name, r.split(".")[1]) for r in _attribute_reads(method) if r.startswith("self.")}
    return found


def test_every_config_field_is_read_somewhere_or_is_a_warned_legacy_key():
    """A field nothing reads would be a setting that silently does nothing: it must be read (outside config.py) or move
    to LEGACY_KEYS, which warns. Nested fields must be read through their parent (``model.batch_size``, or an alias of
    ``...model``), so a same-named attribute of something else does not count."""
    sources = [p for d in ("labelling", "cli", "tasks") for p in (REPO / d).rglob("*.py") if p.name != "config.py"]
    reads = set().union(*(_attribute_reads(ast.parse(p.read_text(encoding="utf-8"))) for p in sources))
    through_methods = _read_through_methods(reads)
    unread = []
    for cls, parent, name in _fields(config.JobConfig):
        loose = cls in (config.JobConfig, config.ModuleConfig)  # read through many names: job, config, cfg, module...
        suffix = f".{name}" if loose else f"{parent}.{name}"
        if not any(r.endswith(suffix) for r in reads) and (cls.__name__, name) not in through_methods:
            unread.append(f"{parent + '.' if parent else ''}{name}")
        assert name not in config.LEGACY_KEYS.get(cls, set()), f"{name} is both a field and a legacy key of {cls.__name__}"
    assert unread == [], f"config fields nothing reads: {unread}; read them, or move them to LEGACY_KEYS"


def test_the_checker_notices_an_unread_field():
    code = "def f(job):\n    m = job.dst.model\n    return m.device, job.seed\n"
    reads = _attribute_reads(ast.parse(code))
    assert any(r.endswith("model.device") for r in reads) and not any(r.endswith("model.torch_dtype") for r in reads)


def test_the_reference_fields_without_effect_warn_and_are_dropped(caplog):
    legacy = {
        "dst": {"module_type": "dst", "model": {"batch_size": 0, "stop_sequences": ["#"]}},
        "act_tag": {"generation_cfg": {"prompt_mode": "x", "noisy_channel_prompt_mode": "y"}},
        "manifest": {"write_to_manifest": False, "manifest_path": "Table"},
        "data": {"eval_set_path_or_name": "Brendan/multiwoz_turns_v22_partitioned"},
    }
    with caplog.at_level(logging.WARNING):
        job = config.from_dict(legacy)
    for path in ("dst.module_type", "dst.model.batch_size", "act_tag.generation_cfg.noisy_channel_prompt_mode"):
        assert f"config key {path} is from the reference's schema and has no effect here" in caplog.text
    assert "batch_size" not in job.to_dict()["dst"]["model"]


def test_a_renamed_key_is_read_under_its_new_name_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        job = config.from_dict({"pool_refresh_waves": 3})
    assert job.pool_refresh_batches == 3
    assert "config key pool_refresh_waves is now called pool_refresh_batches" in caplog.text
    assert "pool_refresh_waves" not in job.to_dict()
    with pytest.raises(ConfigError, match="the old name of 'pool_refresh_batches', given beside it"):
        config.from_dict({"pool_refresh_waves": 3, "pool_refresh_batches": 2})


def test_every_command_starts_from_the_one_default_profile(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"seed": 7}))
    bare, named = config.load(path), config.load(path, config.DEFAULT_PROFILE)
    assert bare == named and bare.seed == 7
    assert config.from_dict({}) == config.load() == config.load(profile=config.DEFAULT_PROFILE)


def test_a_greedy_override_gives_a_reference_model_the_greedy_token_limit():
    """label-split --mode greedy and the quality bench's greedy rows switch the mode after the config is resolved: the
    token limit that follows the mode follows it there too (128 for the reference's own job file, deviations G1), while
    an embedded model's own limit, or one the override itself sets, holds."""
    from labelling.bench import quality

    reference = config.load(REPO / "tests" / "fixtures" / "reference" / "job_0.json")
    assert reference.dst.generation_cfg.sampling_args.max_new_tokens == 120
    greedy = config.with_mode(reference, "greedy")
    for module in (greedy.dst, greedy.act_tag):
        assert module.generation_cfg.generation_mode == "greedy" and module.generation_cfg.sampling_args.max_new_tokens == 128
    assert reference.dst.generation_cfg.sampling_args.max_new_tokens == 120  # a copy: the resolved job is unchanged
    rows = quality.apply(reference, {m: {"generation_cfg": {"generation_mode": "greedy"}} for m in quality.MODULES})
    assert rows.dst.generation_cfg.sampling_args.max_new_tokens == rows.act_tag.generation_cfg.sampling_args.max_new_tokens == 128
    told = {"generation_cfg": {"generation_mode": "greedy", "sampling_args": {"max_new_tokens": 100}}}
    assert quality.apply(reference, {"dst": told}).dst.generation_cfg.sampling_args.max_new_tokens == 100
    small = config.load(profile="cpu-small")
    assert config.with_mode(small, "noisy_channel_joint").dst.generation_cfg.sampling_args.max_new_tokens == 48


def test_the_deviations_list_names_every_ignored_job_file_key():
    """docs/deviations.md's "Job-file keys with no effect here" lists every legacy key the loader warns about and drops."""
    doc = (REPO / "docs" / "deviations.md").read_text(encoding="utf-8")
    section = doc.split("## Job-file keys with no effect here", 1)[1].split("\n## ", 1)[0]
    missing = sorted(key for keys in config.LEGACY_KEYS.values() for key in keys if f"`{key}`" not in section)
    assert missing == []
