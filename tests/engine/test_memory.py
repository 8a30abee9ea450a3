"""GPU memory on the CPU: the batch budget from the real StarCoder-15B config and made-up free-memory figures, the
16-bit compute dtype of quantized weights, and the out-of-memory back-off with an injected error, down to a whole
partition that fails a batch at a large budget and completes it at a smaller one with no turn lost or doubled."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import GPTBigCodeConfig

from labelling.engine import loading, memory
from labelling.engine.lm import LanguageModel, Prompt, SamplingParams
from labelling.engine.loading import load_dtype
from labelling.engine.memory import KVShape, batch_token_budget
from labelling.errors import ModelError
from labelling.fleet import store
from labelling.fleet.runner import run_partition
from tests.support.mongo_fixture import ingest_small, new_group, short_dialogues
from tests.support.partition_worker import tiny_job, tiny_labeller_factory
from tests.support.tiny_models import smollm2_tokenizer, tiny_gpt_bigcode, tiny_llama

GiB = 1 << 30
# StarCoder-15B as published in bigcode/starcoder's config.json (GPTBigCode; the same figures benchmarks/gpu_starcoder.py
# builds its random-weight model from, and ../shared/reviews/gpu-readiness.md uses: MQA, 20 KiB of KV per token in bf16).
STARCODER_15B = dict(vocab_size=49152, n_embd=6144, n_layer=40, n_head=48, n_inner=24576, n_positions=8192, multi_query=True)
BF16 = 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the arithmetic -------------------------------------------------------------------------------------------------


def test_starcoder_kv_size_per_token():
    shape = KVShape.of(GPTBigCodeConfig(**STARCODER_15B), BF16)
    assert (shape.layers, shape.kv_heads, shape.heads, shape.head_dim) == (40, 1, 48, 128)
    assert shape.kv_bytes_per_token == 40 * 1 * 128 * 2 * 2 == 20 * 1024
    # Twice the KV (copies while rows are expanded or leave) plus one layer's K and V repeated for 48 query heads.
    assert shape.peak_bytes_per_token == 2 * 20480 + 2 * 48 * 128 * 2 == 64 * 1024


def _kv_share(free_gib: float, total_gib: int) -> int:
    """The KV share of what is usable: three quarters of free memory less the 5% margin."""
    return int(int((free_gib - 0.05 * total_gib) * GiB) * 0.75)


@pytest.mark.parametrize(
    ("card", "total_gib", "free_gib", "expected"),
    [
        # 31 GB of bf16 weights on an 80 GB A100/H100: 48 GiB free, 4 GiB (5%) kept back, 64 KiB per token.
        ("80 GB, bf16", 80, 48, _kv_share(48, 80) // (64 * 1024)),
        # H200: 141 GB, about 109 GiB left after the weights, 7.05 GiB kept back.
        ("141 GB, bf16", 141, 109, _kv_share(109, 141) // (64 * 1024)),
        # 24 GB card with 8-bit weights (about 16 GB): 6 GiB left, 1.2 GiB kept back.
        ("24 GB, 8-bit", 24, 6, _kv_share(6, 24) // (64 * 1024)),
        # A 16 GB card after 8-bit weights: less free than the margin, so nothing fits.
        ("16 GB, 8-bit", 16, 0.5, 0),
    ],
)
def test_starcoder_budget_from_free_memory(card, total_gib, free_gib, expected):
    shape = KVShape.of(GPTBigCodeConfig(**STARCODER_15B), BF16)
    budget = batch_token_budget(int(free_gib * GiB), int(total_gib * GiB), shape)
    assert budget == expected, card
    if budget:  # a whole 16-turn wave of 8 samples of ~2.9k-token prompts fits the big cards, two turns the 24 GB one
        assert budget >= 16 * 8 * 2900 if total_gib >= 80 else 2 * 8 * 2900 <= budget < 16 * 8 * 2900


def test_starcoder_bytes_per_new_token():
    shape = KVShape.of(GPTBigCodeConfig(**STARCODER_15B), BF16)
    assert (shape.hidden, shape.inner, shape.vocab) == (6144, 24576, 49152)
    # residual, normed input, attention output, MLP output (4 x 6144); 48 query heads and one K and V head of 128;
    # three MLP-wide tensors (3 x 24576); bf16.
    assert shape.new_token_bytes == (4 * 6144 + 48 * 128 + 2 * 128 + 3 * 24576) * 2 == 209_408
    # Scored: plus the bf16 logits, their fp32 copy and two fp32 temporaries over the 49,152-token vocabulary.
    assert shape.scored_token_bytes == 209_408 + 49152 * (2 + 8)
    budget = memory.pass_budget(48 * GiB, 80 * GiB, shape)  # the 80 GB card above
    assert budget.new_bytes == int(44 * GiB * 0.25)
    # A 2.9k-token prompt per row: a plain prefill of 128 rows feeds 41 columns per pass, a ~40-row wave all of it.
    assert memory.new_tokens_per_pass(budget.new_bytes, 128, shape.new_token_bytes) == 44 * GiB // 4 // (128 * 209_408)
    assert (
        memory.new_tokens_per_pass(budget.new_bytes, 40, shape.new_token_bytes)
        < 2900
        < memory.new_tokens_per_pass(budget.new_bytes, 4, shape.new_token_bytes)
    )
    assert memory.new_tokens_per_pass(0, 128, shape.new_token_bytes) == 1  # a pass always moves on


def test_kv_shape_of_grouped_query_attention():
    shape = KVShape.of(tiny_llama().config, 4)
    assert (shape.layers, shape.kv_heads, shape.heads, shape.head_dim) == (2, 2, 4, 16)
    assert shape.kv_bytes_per_token == 2 * 2 * 16 * 2 * 4


def test_margin_is_five_percent_and_at_least_one_gib():
    assert memory.margin_bytes(80 * GiB) == 4 * GiB
    assert memory.margin_bytes(8 * GiB) == GiB


# -- the engine's budget ---------------------------------------------------------------------------------------------


def test_budget_is_sized_from_free_memory_after_loading(monkeypatch):
    model = tiny_gpt_bigcode()
    shape = KVShape.of(model.config, 4)
    monkeypatch.setattr(loading, "device_memory", lambda device: (3 * GiB, 40 * GiB))
    lm = LanguageModel.from_model(model, smollm2_tokenizer())
    assert lm.max_batch_tokens == batch_token_budget(3 * GiB, 40 * GiB, shape) == GiB * 3 // 4 // shape.peak_bytes_per_token
    assert lm.new_token_bytes == GiB // 4  # the other quarter of the 1 GiB left after the 2 GiB margin
    assert LanguageModel.from_model(model, smollm2_tokenizer(), max_batch_tokens=4096).max_batch_tokens == 4096  # config


def test_no_room_after_loading_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(loading, "device_memory", lambda device: (GiB, 24 * GiB))
    lm = LanguageModel.from_model(tiny_gpt_bigcode(), smollm2_tokenizer())
    with pytest.raises(ModelError, match="no room for a batch") as err:
        lm.score(Prompt("x", "y"), ["z"])
    assert "quantization: 8bit" in str(err.value)


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_prefill_and_scoring_in_column_slices_give_the_same_numbers(monkeypatch, reuse_prefix):
    model, tok = tiny_gpt_bigcode(), smollm2_tokenizer()
    params = SamplingParams(n=3, max_new_tokens=6, seed=7)
    whole = LanguageModel.from_model(model, tok, max_batch_tokens=4096, reuse_prefix=reuse_prefix)
    expected_scores, expected_samples = whole.score_many(REQUESTS), whole.sample([p for p, _ in REQUESTS], params)
    assert whole.new_token_bytes is None  # a CPU: one pass feeds all
    shape = KVShape.of(model.config, 4)
    # Memory for about 3 new columns of 6 rows: every prompt and continuation is fed in several slices.
    monkeypatch.setattr(loading, "device_memory", lambda device: (GiB + 4 * 18 * shape.new_token_bytes, 2 * GiB))
    sliced = LanguageModel.from_model(model, tok, max_batch_tokens=4096, reuse_prefix=reuse_prefix)
    scores, samples = sliced.score_many(REQUESTS), sliced.sample([p for p, _ in REQUESTS], params)
    assert sliced.new_token_bytes == 18 * shape.new_token_bytes and sliced.max_batch_tokens == 4096
    assert sliced.stats.forward_passes > whole.stats.forward_passes + 4  # the slices
    flat = [x for row in scores for x in row]
    assert flat == pytest.approx([x for row in expected_scores for x in row], abs=1e-4)
    assert [[s.text for s in row] for row in samples] == [[s.text for s in row] for row in expected_samples]
    logprobs = [s.logprob for row in samples for s in row]
    assert logprobs == pytest.approx([s.logprob for row in expected_samples for s in row], abs=1e-4)


def test_cpu_budget_keeps_the_default():
    assert LanguageModel.from_model(tiny_llama(), smollm2_tokenizer()).max_batch_tokens == memory.CPU_BATCH_TOKENS


def test_quantized_weights_compute_in_16_bits():
    assert load_dtype("auto", "8bit") is torch.bfloat16 and load_dtype("float32", "4bit") is torch.bfloat16
    assert load_dtype("float16", "8bit") is torch.float16 and load_dtype("bfloat16", "8bit") is torch.bfloat16
    assert load_dtype("auto", None) == "auto" and load_dtype("float32", None) is torch.float32


def test_load_places_weights_on_the_device_in_the_asked_dtype(tmp_path):
    tiny_gpt_bigcode().save_pretrained(tmp_path)
    smollm2_tokenizer().save_pretrained(tmp_path)
    lm = LanguageModel.load(str(tmp_path), device="cpu", dtype="bfloat16")
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in lm.model.parameters()} == {"cpu"}


# -- out-of-memory back-off --------------------------------------------------------------------------------------------


class InjectedOOM:
    """A forward pre-hook that raises torch's out-of-memory error for any pass holding more than `limit` tokens
    (rows x cached-plus-new columns), as a GPU does when the batch outgrows its memory."""

    def __init__(self, limit: int):
        self.limit, self.raised, self.largest_ok = limit, 0, 0

    def __call__(self, module, args, kwargs) -> None:
        tokens = kwargs["attention_mask"].numel()
        if tokens > self.limit:
            self.raised += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {tokens} tokens > {self.limit})")
        self.largest_ok = max(self.largest_ok, tokens)


REQUESTS = [
    (Prompt("class Hotel:\n    def find_hotel(self, area: str):\n        ...\n", f"# user: turn {i}\nagent."), ["x", "find()"])
    for i in range(6)
]


def test_oom_halves_the_budget_and_gives_the_same_results():
    model, tok = tiny_gpt_bigcode(), smollm2_tokenizer()
    params = SamplingParams(n=3, max_new_tokens=6, seed=7)
    plain = LanguageModel.from_model(model, tok, max_batch_tokens=4096)
    expected_scores, expected_samples = plain.score_many(REQUESTS), plain.sample([p for p, _ in REQUESTS], params)
    lm = LanguageModel.from_model(model, tok, max_batch_tokens=4096)
    oom = InjectedOOM(limit=500)
    handle = model.register_forward_pre_hook(oom, with_kwargs=True)
    try:
        scores, samples = lm.score_many(REQUESTS), lm.sample([p for p, _ in REQUESTS], params)
    finally:
        handle.remove()
    assert oom.raised >= 2 and lm.oom_backoffs == oom.raised and lm.max_batch_tokens <= 512
    flat = [x for row in scores for x in row]
    assert flat == pytest.approx([x for row in expected_scores for x in row], abs=1e-4)
    assert [[s.text for s in row] for row in samples] == [[s.text for s in row] for row in expected_samples]
    logprobs = [s.logprob for row in samples for s in row]
    assert logprobs == pytest.approx([s.logprob for row in expected_samples for s in row], abs=1e-4)


def test_oom_below_the_floor_is_a_clear_error():
    model = tiny_gpt_bigcode()
    lm = LanguageModel.from_model(model, smollm2_tokenizer(), max_batch_tokens=2048)
    handle = model.register_forward_pre_hook(InjectedOOM(limit=0), with_kwargs=True)
    try:
        with pytest.raises(ModelError, match="out of memory on cpu even at max_batch_tokens=") as err:
            lm.score_many(REQUESTS)
    finally:
        handle.remove()
    assert lm.max_batch_tokens >= memory.MIN_BATCH_TOKENS and "quantization: 8bit" in str(err.value)


# -- a whole partition: a wave fails at a large budget, completes at a smaller one --------------------------------------


@pytest.fixture(scope="module")
def corpus(mongo_uri, dev_dialogues, schema):
    """Two splits of one 3-turn dialogue each."""
    return ingest_small(short_dialogues(dev_dialogues, 2, 3), schema, split_size=1)


def _labels(group: str, split: str) -> dict:
    stored = store.load_labels(group, split)
    keys = [s.label.key for s in stored]
    assert len(keys) == len(set(keys)), "a turn was labelled twice"
    return {s.label.key: _rounded(s.label.to_dict()) for s in stored}


def _rounded(value: object) -> object:
    """Log-probs to 3 decimals: another batching moves them in the 6th (fp32 sums in another order), nothing else."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


@pytest.mark.slow  # two partition runs, ~30 s on 2 cores: CI runs it in the slow step
def test_a_partition_backs_off_from_oom_and_labels_every_turn_once(connected, corpus):
    name, splits = corpus
    job = tiny_job()
    reference = new_group(name, job)
    assert run_partition(reference, splits[0], labeller_factory=tiny_labeller_factory(1 << 16)).status == "done"

    factory = tiny_labeller_factory(1 << 16)
    oom = InjectedOOM(limit=6000)  # one row of a ~2k-token prompt fits; a turn's 3 samples in one pass do not
    hooked = {}

    def hooked_factory(config, schema):
        labeller = factory(config, schema)
        lm = labeller.dst.lm
        hooked["lm"], hooked["handle"] = lm, lm.model.register_forward_pre_hook(oom, with_kwargs=True)
        return labeller

    group = new_group(name, job)
    try:
        result = run_partition(group, splits[0], labeller_factory=hooked_factory)
    finally:
        hooked["handle"].remove()
    lm = hooked["lm"]
    assert oom.raised >= 1 and lm.oom_backoffs == oom.raised and lm.max_batch_tokens < 1 << 16
    assert result.status == "done" and result.new_turns == result.turns == 3
    assert _labels(group, splits[0]) == _labels(reference, splits[0])  # nothing lost, nothing doubled, same labels


def test_a_partition_that_runs_out_of_memory_at_the_floor_fails_with_the_reason(connected, corpus):
    name, splits = corpus
    factory = tiny_labeller_factory(1024)

    def hopeless(config, schema):
        labeller = factory(config, schema)
        labeller.dst.lm.model.register_forward_pre_hook(InjectedOOM(limit=0), with_kwargs=True)
        return labeller

    group = new_group(name, tiny_job())
    with pytest.raises(ModelError):
        run_partition(group, splits[1], labeller_factory=hopeless)
    failed = store.partition(group, splits[1])
    assert failed.status == store.FAILED and "out of memory on cpu even at max_batch_tokens=" in failed.last_error
    assert store.count_labels(group, splits[1]) == 0


# -- the heartbeat covers the model load -----------------------------------------------------------------------------


def test_the_claim_stays_alive_while_the_models_load(connected, corpus):
    name, splits = corpus
    group = new_group(name, tiny_job())
    takeover = {}

    def slow_load(config, schema):
        time.sleep(2.5)  # a first download: longer than the 1 s lease
        try:
            takeover["claim"] = store.claim_partition(group, splits[1], "other-worker", lease_s=1.0)
        except store.PartitionBusy:
            takeover["claim"] = "busy"
        raise RuntimeError("enough: the load is what this test is about")

    with pytest.raises(RuntimeError, match="enough"):
        run_partition(group, splits[1], worker="slow", labeller_factory=slow_load, lease_s=1.0)
    assert takeover["claim"] == "busy"  # before the fix, the other worker took the claim of a run still loading


# -- one loaded copy per model ----------------------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path):
    tiny_gpt_bigcode().save_pretrained(tmp_path)
    smollm2_tokenizer().save_pretrained(tmp_path)
    return tmp_path


def _job_on(model_dir, **dst_model):
    job = tiny_job()
    for module in (job.dst, job.act_tag):
        module.model.model_name_or_path = str(model_dir)
        module.model.device = "cpu"
        module.model.torch_dtype = "auto"  # follows the model again: cpu-small resolved it for SmolLM2
    for key, value in dst_model.items():
        setattr(job.dst.model, key, value)
    return job


def test_modules_naming_one_model_share_one_copy_and_threads_load_it_once(monkeypatch, model_dir):
    from concurrent.futures import ThreadPoolExecutor

    from labelling.method import build

    monkeypatch.setattr(build, "_LOADED", {})
    real = loading.AutoModelForCausalLM.from_pretrained
    loads = []

    def counting(*args, **kwargs):
        loads.append(args[0])
        time.sleep(0.5)  # a slow load widens the window in which a second thread could start its own
        return real(*args, **kwargs)

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", counting)
    job = _job_on(model_dir).validate()
    with ThreadPoolExecutor(4) as pool:
        lms = list(pool.map(lambda m: build.language_model(m, None), [job.dst, job.act_tag, job.dst, job.act_tag]))
    assert len(loads) == 1 and all(lm is lms[0] for lm in lms)
    # The plain path (no prefix reuse) gets its own engine around the same weights, not a second copy.
    job.dst.model.use_past_key_value_cache = False
    plain = build.language_model(job.dst, None)
    assert plain is not lms[0] and plain.model is lms[0].model and len(loads) == 1


def test_the_same_model_loaded_two_ways_is_a_config_error_naming_both_keys(model_dir):
    from labelling.errors import ConfigError

    conflicting = _job_on(model_dir, quantization="8bit")
    conflicting.act_tag.model.quantization = "4bit"
    with pytest.raises(ConfigError) as err:
        conflicting.validate()
    message = str(err.value)
    assert "dst.model.quantization ('8bit')" in message and "act_tag.model.quantization ('4bit')" in message
    conflicting = _job_on(model_dir, torch_dtype="bfloat16")
    conflicting.act_tag.model.torch_dtype = "float16"
    with pytest.raises(ConfigError, match=r"dst.model.torch_dtype \('bfloat16'\) and act_tag.model.torch_dtype \('float16'\)"):
        conflicting.validate()


def test_a_loading_key_set_on_one_module_applies_to_both(model_dir):
    # 8-bit on dst only used to load a second, full-precision copy for act_tag (an OOM on a 24 GB card).
    job = _job_on(model_dir, quantization="8bit", torch_dtype="bfloat16").validate()
    assert job.act_tag.model.weights_quantization == "8bit" and job.act_tag.model.torch_dtype == "bfloat16"
    job = _job_on(model_dir, load_in_8bit=True)  # the reference's flag on one module
    job.act_tag.model.quantization = "8bit"
    assert job.validate().dst.model.weights_quantization == "8bit"


def test_starcoder_profiles_load_bf16_and_8bit_on_both_modules():
    from labelling import config

    bf16, int8 = config.load(profile="starcoder"), config.load(profile="starcoder-8bit")
    for module in (bf16.dst, bf16.act_tag):
        assert (module.model.torch_dtype, module.model.weights_quantization) == ("bfloat16", None)
    for module in (int8.dst, int8.act_tag):
        assert (module.model.torch_dtype, module.model.weights_quantization) == ("bfloat16", "8bit")
    assert bf16.max_batch_tokens is None and int8.max_batch_tokens is None  # sized from free memory


def test_a_job_on_another_model_frees_the_loaded_one(monkeypatch, model_dir, tmp_path_factory):
    from labelling.method import build

    monkeypatch.setattr(build, "_LOADED", {})
    first = _job_on(model_dir).validate()
    build.language_model(first.dst, None)
    other_dir = tmp_path_factory.mktemp("other")
    tiny_llama().save_pretrained(other_dir)
    smollm2_tokenizer().save_pretrained(other_dir)
    build.keep_only(_job_on(other_dir).validate())
    assert not [key for key in build._LOADED if key[0] == "lm"]
    build.keep_only(first)  # the model in use stays
    lm = build.language_model(first.dst, None)
    build.keep_only(first)
    assert build.language_model(first.act_tag, None) is lm
