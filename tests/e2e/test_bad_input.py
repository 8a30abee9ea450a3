"""Bad input a user can hand us, end to end: each is refused in one line naming what and where (no traceback without
--debug), or labelled with the trouble flagged and counted, never a crashed partition.

What other files already cover is not repeated here: config keys in test_config.py and test_fleet.py, corrupt corpora
and unknown 2.2 services or slots in test_ingest_cli.py and test_corpus.py, a broker that is down in test_fleet.py.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from labelling import settings
from labelling.corpus import cut_into_splits, read_corpus, write_dataset
from labelling.engine.lm import LanguageModel
from labelling.fleet import mongo_server, store
from labelling.method.labeller import _Prepared
from labelling.method.prompts import Example
from labelling.records import (
    FLAG_DST_UNPARSEABLE,
    FLAG_EXAMPLES_DROPPED,
    FLAG_PROMPT_TOO_LONG,
    FLAGGED_TURNS,
    Candidate,
    ModuleOutput,
    TurnLabel,
)
from tests.support.cli_helpers import run_cli
from tests.support.corpus_files import MWZ22
from tests.support.labellers import make_labeller
from tests.support.mongo_fixture import ingest_small, new_group, short_dialogues
from tests.support.partition_worker import tiny_job
from tests.support.tiny_models import smollm2_tokenizer, tiny_llama

PLANTED = "Zq7-planted-secret"


def one_line_error(code: int, err: str, *expected: str) -> None:
    """The CLI's contract for bad input: exit 2, a last ``error:`` line holding every expected fragment, no traceback
    (a command may say which store it opened before that)."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1, err
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in lines[-1], err


def label_split(monkeypatch, capsys, dataset: Path, split: str, out: Path, *extra) -> tuple[int, str, str]:
    """``labelling label-partition`` through the real entry point."""
    return run_cli(monkeypatch, capsys, "label-partition", "--dataset", dataset, "--split", split, "--out", out, *extra)


# --- job configs through the command line ------------------------------------------------------------------------


def _sampling(module: str, **values) -> dict:
    return {module: {"generation_cfg": {"sampling_args": values}}}


BAD_CONFIGS = {
    "negative temperature": (_sampling("dst", temperature=-0.5), "dst.generation_cfg.sampling_args.temperature: must be > 0"),
    "infinite temperature": (_sampling("act_tag", temperature=math.inf), "act_tag.generation_cfg.sampling_args.temperature"),
    "no samples": (_sampling("dst", n=0), "dst.generation_cfg.sampling_args.n: must be >= 1, got 0"),
    "negative top_k": (_sampling("dst", top_k=-3), "dst.generation_cfg.sampling_args.top_k: must be >= 0"),
    "top_p of zero": (_sampling("act_tag", top_p=0), "act_tag.generation_cfg.sampling_args.top_p: must be in (0, 1]"),
    "NaN top_p": (_sampling("dst", top_p=math.nan), "dst.generation_cfg.sampling_args.top_p: must be in (0, 1], got nan"),
    "no new tokens": (_sampling("dst", max_new_tokens=0), "dst.generation_cfg.sampling_args.max_new_tokens: must be >= 1"),
    "float for an int": (_sampling("dst", n=2.5), "dst.generation_cfg.sampling_args.n: expected int, got float 2.5"),
    "string for a float": (_sampling("dst", top_p="high"), "top_p: expected float, got str 'high'"),
    "unknown dtype": ({"dst": {"model": {"torch_dtype": "fp8"}}}, "dst.model.torch_dtype: must be one of auto, float32"),
    "unknown device": ({"act_tag": {"model": {"device": "gpu0"}}}, "act_tag.model.device: must be auto, cpu, mps, cuda"),
    "empty model name": ({"dst": {"model": {"model_name_or_path": " "}}}, "dst.model.model_name_or_path: must not be empty"),
    "negative warm-up": ({"data_warmup": -1}, "data_warmup: must be >= 0"),
    "tiny batch budget": ({"max_batch_tokens": 16}, "max_batch_tokens: must be >= 256"),
    "no services": ({"services": []}, "services: must name at least one service"),
    "unknown service": ({"services": ["hotel", "spa"]}, "services: ['spa'] are not services of the bundled schema"),
    "a service twice": ({"services": ["hotel", "hotel"]}, "services: lists a service twice"),
    "a list for the whole file": ([{"dst": {}}], "config key <top>: expected an object, got list"),
    "unknown nested key": (_sampling("dst", temprature=0.7), "temprature: unknown key (did you mean 'temperature'?)"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_job_config_is_one_line_naming_the_key(monkeypatch, capsys, tmp_path, case):
    content, expected = BAD_CONFIGS[case]
    job = tmp_path / "job.json"
    job.write_text(json.dumps(content))  # json writes NaN and Infinity, which json.loads reads back
    # label-partition reads its config before anything else, so no dataset, model or service is needed to see the error
    code, _, err = label_split(monkeypatch, capsys, tmp_path, "s", tmp_path / "o", "--config", job)
    one_line_error(code, err, expected)
    assert PLANTED not in err


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("job.yaml", "dst:\n  retriever: [k_examples: 3\n", "job.yaml: not valid YAML"),
        ("job.json", '{"dst": {"retriever": {"k_examples": 3}}', "job.json: not valid JSON"),
        ("missing.json", None, "missing.json: cannot read job config (No such file or directory)"),
    ],
)
def test_an_unreadable_job_file_is_one_line(monkeypatch, capsys, tmp_path, name, text, expected):
    if text is not None:
        (tmp_path / name).write_text(text)
    code, _, err = label_split(monkeypatch, capsys, tmp_path, "s", tmp_path / "o", "--config", tmp_path / name)
    one_line_error(code, err, expected)


# --- corpora and datasets --------------------------------------------------------------------------------------------


def _edited_dialogue(tmp: Path, edit, turns: int = 8) -> Path:
    """The 2.2 fixture's PMUL1579 cut to its first ``turns`` turns and changed by ``edit``, alone in a corpus folder."""
    (entry,) = json.loads((MWZ22 / "dialogues_002.json").read_text())
    entry["turns"] = entry["turns"][:turns]
    edit(entry["turns"])
    folder = tmp / "corpus"
    folder.mkdir()
    (folder / "dialogues_001.json").write_text(json.dumps([entry]))
    return folder


def test_a_lone_surrogate_in_an_utterance_is_one_line_naming_the_turn(monkeypatch, capsys, tmp_path):
    source = _edited_dialogue(tmp_path, lambda turns: turns[3].update(utterance="cheap \ud83d rooms"))
    code, _, err = run_cli(monkeypatch, capsys, "ingest", source, "--out", tmp_path / "out")
    one_line_error(code, err, "dialogue PMUL1579.json, turn 3: utterance is not valid Unicode (lone surrogate")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory, schema) -> Path:
    """The 2.2 fixture written by the ingest path as a dataset folder of three one-dialogue splits."""
    out = tmp_path_factory.mktemp("ds") / "data"
    return write_dataset(cut_into_splits(read_corpus(MWZ22, schema), 1), out, schema)


def test_label_split_names_a_missing_dataset_or_split(monkeypatch, capsys, tmp_path, small_dataset):
    code, _, err = label_split(monkeypatch, capsys, tmp_path / "nowhere", "s", tmp_path / "o")
    one_line_error(code, err, "nowhere: not a dataset folder", "labelling ingest SOURCE --out DIR")
    code, _, err = label_split(monkeypatch, capsys, small_dataset, "train_9_10", tmp_path / "o")
    one_line_error(code, err, "no split 'train_9_10'", "splits: train_0_1, train_1_2, train_2_3")
    assert not list(tmp_path.glob("o*"))


def test_label_split_names_a_dataset_that_holds_no_turn_splits(monkeypatch, capsys, tmp_path):
    import datasets

    rows = datasets.Dataset.from_dict({"text": ["hello", "bye"]})
    datasets.DatasetDict({"s": rows}).save_to_disk(str(tmp_path / "other"))
    rows.save_to_disk(str(tmp_path / "single"))
    code, _, err = label_split(monkeypatch, capsys, tmp_path / "other", "s", tmp_path / "o")
    one_line_error(code, err, "other: split 's' does not hold turn rows (KeyError: 'dialogue_id')")
    code, _, err = label_split(monkeypatch, capsys, tmp_path / "single", "s", tmp_path / "o")
    one_line_error(code, err, "single: holds one dataset, not named splits")


def test_a_corrupt_dataset_folder_is_one_line(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "dataset_dict.json").write_text('{"splits": ["train_0_1"]}')  # the marker, but no split folder behind it
    code, _, err = run_cli(monkeypatch, capsys, "ingest", folder)
    one_line_error(code, err, "broken: not a readable save_to_disk folder")


def test_non_ascii_long_and_empty_utterances_survive_the_dataset_and_the_store(tmp_path, schema, connected):
    texts = {0: "", 1: "", 2: "Ünïcødé 旅馆 near the café 🏨 — £40?", 3: "Ça coûte 40 £ 🙂", 4: "a very long request " * 2000}

    def edit(turns):
        for i, text in texts.items():
            turns[i]["utterance"] = text

    dialogues = read_corpus(_edited_dialogue(tmp_path, edit), schema)
    (turns,) = dialogues
    assert [t.user_utterance for t in turns[:3]] == [texts[0], texts[2], texts[4]]
    assert turns[0].system_response == "" and turns[1].system_response == texts[3]
    splits = cut_into_splits(dialogues, 1)
    import datasets

    saved = datasets.load_from_disk(str(write_dataset(splits, tmp_path / "out", schema)))["train_0_1"]
    assert saved["user_utterances"][2] == [texts[0], texts[2], texts[4]]
    corpus, names = ingest_small(dialogues, schema, split_size=1)
    assert store.load_turns(corpus, names[0]) == turns


# --- unknown groups ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a_group(mongo_uri, dev_dialogues, schema) -> str:
    store.connect(mongo_uri)  # an earlier test may have pointed the store elsewhere
    corpus, _ = ingest_small(short_dialogues(dev_dialogues, 1, 2), schema, split_size=1)
    return new_group(corpus, tiny_job())


@pytest.mark.parametrize("command", [["status"], ["evaluate"], ["export", "--out", "OUT"]])
def test_an_unknown_group_is_one_line_listing_the_known_ones(monkeypatch, capsys, tmp_path, connected, a_group, command):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--group", "nope")
    one_line_error(code, err, "unknown group 'nope'", "existing groups:", a_group)
    assert not (tmp_path / "out").exists()


# --- MongoDB that is not there or refuses us ----------------------------------------------------------------------------


STORE_COMMANDS = {
    "status": ["status", "--group", "g"],
    "evaluate": ["evaluate", "--group", "g"],
    "export": ["export", "--group", "g", "--out", "OUT"],
    "ingest": ["ingest", str(MWZ22), "--corpus", "c"],
    "run": ["run", "--corpus", "c", "--group", "g", "--local"],
}


STORE_FAULTS = [("bad credentials", command) for command in STORE_COMMANDS] + [("bad host", "status"), ("bad host", "run")]


@pytest.mark.parametrize(("fault", "command"), STORE_FAULTS)
def test_a_mongodb_that_is_down_or_refuses_us_fails_fast_with_the_password_masked(
    monkeypatch, capsys, tmp_path, connected, command, fault
):
    host = connected.partition("://")[2].partition("/")[0]  # the live nx-27017, which takes no credentials
    if fault == "bad host":
        host = f"127.0.0.1:{mongo_server._free_port()}"  # nothing listens there once the probe is closed
    uri = f"mongodb://labeller:{PLANTED}@{host}/labels"
    monkeypatch.setenv(settings.MONGODB_URI.name, uri)
    monkeypatch.setenv("LABELLING_MONGODB_TIMEOUT_MS", "1000")
    monkeypatch.delenv("LABELLING_BROKER_URL", raising=False)
    args = [str(tmp_path / "out") if a == "OUT" else a for a in STORE_COMMANDS[command]]
    started = time.monotonic()
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert time.monotonic() - started < 6
    expected = "is unreachable (no answer within 1 s)" if fault == "bad host" else "failed the authentication handshake"
    one_line_error(code, err, f"mongodb://labeller:***@{host}/labels", expected)
    assert PLANTED not in out + err
    assert not (tmp_path / "out").exists()


# --- model output that is empty or garbage, and prompts that do not fit ------------------------------------------------


def silent_lm(context: int = 8192) -> LanguageModel:
    """The tiny random Llama with an output layer that always picks end-of-sequence: every sample is the empty string."""
    tokenizer = smollm2_tokenizer()
    model = tiny_llama()
    model.config.max_position_embeddings = context
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    with torch.no_grad():
        head.bias[tokenizer.eos_token_id] = 50.0
    model.lm_head = head
    return LanguageModel.from_model(model, tokenizer)


def random_lm(context: int) -> LanguageModel:
    """The tiny random Llama (as conftest's ``tiny_lm``) with a context of ``context`` tokens."""
    model = tiny_llama()
    model.config.max_position_embeddings = context
    return LanguageModel.from_model(model, smollm2_tokenizer())


@pytest.fixture(scope="module")
def dialogue(dev_dialogues):
    """A 3-turn dialogue of the dev set (with gold, so metrics are counted too)."""
    return short_dialogues(dev_dialogues, 1, 3)[0]


def _flag_totals(labeller) -> dict[str, int]:
    return {k: v for k, v in labeller.metrics.totals.items() if k == FLAGGED_TURNS or k.startswith("flag_")}


def test_empty_model_output_keeps_the_previous_state_and_is_flagged_and_counted(fast_job, schema, embedder, dialogue):
    first = dialogue[0]
    known = {"hotel": {"area": "east"}}
    chosen = ModuleOutput('[agent.find_hotel(area="east")]', [], [])
    done = TurnLabel(first.dialogue_id, 0, {}, known, known, [], chosen, ModuleOutput("[]", [], []))
    labeller = make_labeller(fast_job, schema, silent_lm(), embedder)
    labels = labeller.label(dialogue, done=[done])
    later = [lab for lab in labels if lab.turn_id > 0]
    assert len(later) == 2
    for lab in later:
        assert all(raw == "" for cand in lab.dst.candidates for raw in cand.raw)
        assert lab.state == known and lab.prior_state == known and lab.delta == {}
        assert lab.flags == [FLAG_DST_UNPARSEABLE]
        assert lab.acts == []  # an empty act completion is the list closed at once: no acts, which is a valid answer
    assert _flag_totals(labeller) == {FLAGGED_TURNS: 2, f"flag_{FLAG_DST_UNPARSEABLE}": 2}


def test_garbage_from_every_candidate_is_flagged_and_counted_per_flag(fast_job, schema, tiny_lm, embedder, dev_dialogues):
    turns = [t for d in short_dialogues(dev_dialogues, 2, 3) for t in d]
    labeller = make_labeller(fast_job, schema, tiny_lm, embedder)
    labels = labeller.label(turns)
    garbled = [lab for lab in labels if FLAG_DST_UNPARSEABLE in lab.flags]
    assert garbled, "the tiny random model should write unparseable DST text"
    for lab in garbled:
        assert lab.state == lab.prior_state and all(lab.dst.errors or c.raw for c in lab.dst.candidates)
    totals = _flag_totals(labeller)
    assert totals[FLAGGED_TURNS] == sum(1 for lab in labels if lab.flags)
    for flag in {f for lab in labels for f in lab.flags}:
        assert totals[f"flag_{flag}"] == sum(flag in lab.flags for lab in labels)


def _zero_example_tokens(labeller, lm: LanguageModel, mode: str, turn, max_new: int) -> int:
    """What the target alone takes in ``mode``'s prompt for a turn with an empty state, plus room for the sample."""
    target = Example({}, turn.last_system_utterance, turn.user_utterance, turn.system_response)
    prompt = labeller.builder.prompt(mode, [], target)
    return 1 + lm.count_tokens(prompt.preamble) + lm.count_tokens(prompt.body) + max_new


def test_examples_are_dropped_until_the_prompt_fits_and_that_is_recorded(fast_job, schema, embedder, dialogue):
    probe_lm = silent_lm()
    probe = make_labeller(fast_job, schema, probe_lm, embedder)
    first, k = dialogue[0], fast_job.dst.retriever.k_examples
    needs = {
        mode: _zero_example_tokens(probe, probe_lm, mode, first, fast_job.dst.generation_cfg.sampling_args.max_new_tokens)
        for mode in ("dst", "act")
    }
    tight = silent_lm(context=max(needs.values()) + 20)  # room for the target, not for one more built-in example
    (label,) = make_labeller(fast_job, schema, tight, embedder).label([first])
    assert FLAG_EXAMPLES_DROPPED in label.flags and FLAG_PROMPT_TOO_LONG not in label.flags
    tightest = label.dst if needs["dst"] >= needs["act"] else label.act
    assert tightest.dropped_examples == k and tightest.examples == []
    for out in (label.dst, label.act):
        assert len(out.examples) + out.dropped_examples == k


def test_a_prompt_that_cannot_fit_at_all_flags_the_turns_and_the_partition_goes_on(fast_job, schema, embedder, dialogue):
    labeller = make_labeller(fast_job, schema, random_lm(context=512), embedder)  # the schema preamble alone is ~2k tokens
    labels = labeller.label(dialogue)
    assert len(labels) == len(dialogue)
    for lab in labels:
        assert lab.flags == [FLAG_EXAMPLES_DROPPED, FLAG_PROMPT_TOO_LONG]
        assert lab.state == lab.prior_state == {} and lab.acts == []
        assert lab.dst.candidates == [] and "prompt too long" in lab.dst.errors[0]
        assert lab.dst.dropped_examples == fast_job.dst.retriever.k_examples
    assert labeller.metrics.totals[f"flag_{FLAG_PROMPT_TOO_LONG}"] == len(dialogue)
    assert labeller.metrics.totals["n_dst"] == len(dialogue)  # still scored against gold: the turn counts as labelled


def test_a_channel_prompt_that_cannot_fit_leaves_the_candidates_to_their_sample_scores(fast_job, schema, embedder, dialogue):
    turn = dialogue[0]
    target = Example({}, turn.last_system_utterance, turn.user_utterance, turn.system_response)

    def score(context: int) -> tuple[set[int], list[float | None]]:
        labeller = make_labeller(fast_job, schema, random_lm(context), embedder)
        candidates = [Candidate('[agent.find_hotel(area="east")]', ["a"], -1.0), Candidate("[agent.no_change()]", ["b"], -2.0)]
        prepared = _Prepared(turn=turn, prior={}, found=[], examples=[], target=target, prompt=None, dropped=0, fits=True)
        unscored = labeller._score_candidates(labeller.dst, [prepared], [candidates])
        return unscored, [c.score for c in candidates]

    unscored, scores = score(8192)
    assert unscored == set() and None not in scores
    assert score(1000) == ({0}, [None, None])  # the channel preamble alone is longer: choose() falls back to log-probs


def test_empty_non_ascii_and_overlong_utterances_are_labelled_without_a_crash(fast_job, schema, tiny_lm, embedder, tmp_path):
    texts = {0: "", 1: "", 2: "Ünïcødé 旅馆 near the café 🏨 — £40?", 3: "Ça coûte 40 £ 🙂", 4: "a very long request " * 2500}

    def edit(turns):
        for i, text in texts.items():
            turns[i]["utterance"] = text

    (turns,) = read_corpus(_edited_dialogue(tmp_path, edit), schema)
    assert tiny_lm.count_tokens(texts[4]) > tiny_lm.context_length  # this turn cannot be prompted at all
    labels = {lab.turn_id: lab for lab in make_labeller(fast_job, schema, tiny_lm, embedder).label(turns)}
    assert sorted(labels) == [t.turn_id for t in turns]
    assert FLAG_PROMPT_TOO_LONG in labels[2].flags and labels[2].state == labels[2].prior_state
    assert all(FLAG_PROMPT_TOO_LONG not in labels[i].flags for i in (0, 1, 3))
    for lab in labels.values():  # what the JSONL output and the store keep reads back the same
        assert TurnLabel.from_dict(json.loads(json.dumps(lab.to_dict()))).to_dict() == lab.to_dict()


def test_flagged_turns_are_stored_with_the_partition_and_shown_by_evaluate(monkeypatch, capsys, connected, dialogue, schema):
    from labelling.fleet.runner import run_partition
    from labelling.method import build
    from labelling.method.labeller import PartitionLabeller

    lm = silent_lm()

    def silent_labeller(config, schema):
        dst, act = build.example_index(config.dst, "dst"), build.example_index(config.act_tag, "act")
        return PartitionLabeller(config, schema, lm, lm, dst, act)

    corpus, splits = ingest_small([dialogue], schema, split_size=1)
    group = new_group(corpus, tiny_job())
    assert run_partition(group, splits[0], labeller_factory=silent_labeller).status == "done"
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", "--group", group, "--json")
    assert code == 0, err
    report, expected = json.loads(out), {FLAGGED_TURNS: len(dialogue), f"flag_{FLAG_DST_UNPARSEABLE}": len(dialogue)}
    assert report["flags"] == expected and report["partitions"][0]["flags"] == expected
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", "--group", group)
    assert code == 0 and "flagged" in out
