"""JobConfig: the reference's job files load, our profiles load, and bad files fail with a key path."""

from __future__ import annotations

import json
import logging
import re

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
