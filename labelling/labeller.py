"""PartitionLabeller: labels the turns of one partition, wave by wave, with its own predictions as context.

Dialogues are shuffled (seeded) into sub-partitions; inside each, all turn-0s form a wave, then all
turn-1s, and so on. A wave runs DST, then act tagging, and every label joins its module's example index
before the next wave. Gold labels are stripped on entry and used only for running metrics.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from labelling.acts import Act, acts_from_json, acts_to_json
from labelling.canonical import Canonicaliser
from labelling.channel import GREEDY, Candidate, choose, needs_scoring, scoring_requests
from labelling.config import JobConfig, ModuleConfig
from labelling.demos import DEMOS
from labelling.generation import Prompt, SamplingParams
from labelling.metrics import MetricsAccumulator, turn_act_metrics, turn_dst_metrics
from labelling.prompts import (
    ACT_CONNECTIVE,
    ACT_PREFIX,
    ACT_STOPS,
    DST_CONNECTIVE,
    DST_PREFIX,
    DST_STOPS,
    Example,
    PromptBuilder,
)
from labelling.retrieval import ExampleIndex
from labelling.schema import Schema
from labelling.states import State
from labelling.turns import Turn

if TYPE_CHECKING:  # the labeller drives any object with LanguageModel's interface; torch loads only with a model
    from labelling.lm import LanguageModel

FLAG_DST_UNPARSEABLE = "dst_unparseable"
FLAG_ACTS_UNPARSEABLE = "acts_unparseable"
FLAG_EXAMPLES_DROPPED = "examples_dropped"
FLAG_PROMPT_TOO_LONG = "prompt_too_long"  # not even the target fits: the turn keeps its prior state and gets no acts
FLAG_CHANNEL_UNSCORED = "channel_unscored"  # the channel prompt does not fit: candidates ranked by sample log-prob
FLAGGED_TURNS = "flagged_turns"  # metrics key counting turns with any flag; each flag also counts as flag_<name>
NO_CHANGE, NO_ACTS = "no_change()]", "]"  # the completions meaning "nothing": a turn that cannot be prompted gets these
# Tokens kept free beyond the measured continuation: prompt and continuation are tokenised apart, and the joins may differ.
_CONTEXT_SLACK = 8


@dataclass
class ModuleOutput:
    """What one module decided for one turn, with the evidence: candidates, scores, examples used."""

    chosen: str
    candidates: list[Candidate]
    examples: list[tuple[str, int]]
    dropped_examples: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Stored form."""
        return {
            "chosen": self.chosen,
            "candidates": [c.to_dict() for c in self.candidates],
            "examples": [list(e) for e in self.examples],
            "dropped_examples": self.dropped_examples,
            "errors": self.errors,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModuleOutput:
        """Inverse of :meth:`to_dict`."""
        return cls(
            chosen=data["chosen"],
            candidates=[Candidate(c["canonical"], list(c["raw"]), c["sample_logprob"], c["score"]) for c in data["candidates"]],
            examples=[tuple(e) for e in data["examples"]],
            dropped_examples=data.get("dropped_examples", 0),
            errors=list(data.get("errors", [])),
        )


@dataclass
class TurnLabel:
    """The labels of one turn: cumulative state, its delta, system acts, per-module evidence, flags and metrics."""

    dialogue_id: str
    turn_id: int
    prior_state: State
    state: State
    delta: State
    acts: list[Act]
    dst: ModuleOutput
    act: ModuleOutput
    flags: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        """(dialogue_id, turn_id)."""
        return (self.dialogue_id, self.turn_id)

    def to_dict(self) -> dict:
        """JSON-ready form used by the JSONL output and the store."""
        return {
            "dialogue_id": self.dialogue_id,
            "turn_id": self.turn_id,
            "prior_state": self.prior_state,
            "state": self.state,
            "delta": self.delta,
            "acts": acts_to_json(self.acts),
            "dst": self.dst.to_dict(),
            "act": self.act.to_dict(),
            "flags": self.flags,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TurnLabel:
        """Inverse of :meth:`to_dict`."""
        return cls(
            dialogue_id=data["dialogue_id"],
            turn_id=int(data["turn_id"]),
            prior_state=data["prior_state"],
            state=data["state"],
            delta=data["delta"],
            acts=acts_from_json(data["acts"]),
            dst=ModuleOutput.from_dict(data["dst"]),
            act=ModuleOutput.from_dict(data["act"]),
            flags=list(data.get("flags", [])),
            metrics=dict(data.get("metrics", {})),
        )


def waves(turns: Sequence[Turn], partitions: int, seed: int, warmup: int = 0) -> list[list[Turn]]:
    """The processing order: seeded sub-partitions of dialogues, turn-id waves inside each, warm-up turns alone."""
    dialogue_ids = list(dict.fromkeys(t.dialogue_id for t in turns))
    random.Random(seed).shuffle(dialogue_ids)
    n = max(1, min(partitions, len(dialogue_ids)))
    size = len(dialogue_ids) // n
    chunks = [dialogue_ids[i * size : (i + 1) * size if i < n - 1 else None] for i in range(n)]
    out: list[list[Turn]] = []
    for chunk in chunks:
        members = set(chunk)
        mine = [t for t in turns if t.dialogue_id in members]
        for turn_id in sorted({t.turn_id for t in mine}):
            out.append([t for t in mine if t.turn_id == turn_id])
    return _split_warmup(out, warmup)


def _split_warmup(schedule: list[list[Turn]], warmup: int) -> list[list[Turn]]:
    out, count = [], 0
    for wave in schedule:
        while wave and count < warmup:
            out.append([wave[0]])
            wave, count = wave[1:], count + 1
        if wave:
            out.append(wave)
            count += len(wave)
    return out


def example_turn(turn: Turn, label: TurnLabel, last_acts: list[Act]) -> Turn:
    """A labelled turn as a retrievable example: the turn's text with predicted labels in the label fields."""
    return Turn(
        dialogue_id=turn.dialogue_id,
        turn_id=turn.turn_id,
        user_utterances=turn.user_utterances,
        system_utterances=turn.system_utterances,
        system_response=turn.system_response,
        domains=sorted(set(label.state) | {a.entity.kind.lower() for a in label.acts if a.entity}),
        slot_values=label.state,
        last_slot_values=label.prior_state,
        turn_slot_values=label.delta,
        system_response_acts=label.acts,
        last_system_response_acts=last_acts,
    )


class PartitionLabeller:
    """Labels a list of turns; no broker or database needed. Reuse one instance per partition run."""

    def __init__(
        self,
        config: JobConfig,
        schema: Schema,
        dst_lm: LanguageModel,
        act_lm: LanguageModel,
        dst_index: ExampleIndex | None,
        act_index: ExampleIndex | None,
    ):
        self.config = config
        self.schema = schema
        self.lms = {"dst": dst_lm, "act": act_lm}
        self.indexes = {"dst": dst_index, "act": act_index}
        self.builder = PromptBuilder(schema)
        self.canon = Canonicaliser(schema, normalize=config.dst.retriever.use_normalizer)
        self.metrics = MetricsAccumulator()
        self._states: dict[str, State] = {}
        self._acts: dict[str, list[Act]] = {}

    # --- public API -----------------------------------------------------------------------------------

    def add_examples(self, items: Sequence[Turn], vectors: Sequence[dict] | None = None) -> int:
        """Add labelled turns (e.g. from completed partitions) to both example indexes; returns how many were embedded.

        ``vectors[i]`` (module -> stored record) supplies item i's vectors; items without a usable one are embedded.
        """
        embedded = 0
        for module, index in self.indexes.items():
            if index is not None and items and self._module(module).add_predictions_to_index:
                stored = [v.get(module) for v in vectors] if vectors is not None else [None] * len(items)
                embedded += index.add_stored(list(items), stored)
        return embedded

    def label(
        self,
        turns: Sequence[Turn],
        done: Iterable[TurnLabel] = (),
        on_wave: Callable[[list[TurnLabel]], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[TurnLabel]:
        """Label ``turns`` and return one TurnLabel per turn, in processing order.

        ``done`` holds labels from an interrupted run: they are replayed into the history and indexes in
        the original order instead of being recomputed. ``on_wave`` receives each newly finished wave.
        """
        gold = {t.key: t for t in turns}
        previous = {lab.key: lab for lab in done}
        results: list[TurnLabel] = []
        c = self.config
        for wave in waves([t.without_gold() for t in turns], c.data_num_partitions, c.seed, c.data_warmup):
            replayed = [previous[t.key] for t in wave if t.key in previous]
            labels = replayed if len(replayed) == len(wave) else self._label_wave([t for t in wave if t.key not in previous])
            if len(replayed) not in (0, len(wave)):
                labels = replayed + labels
            self._record(wave, labels, gold)
            results.extend(labels)
            if on_wave and labels is not replayed:
                on_wave(labels)
            if progress:
                progress(len(wave))
        return results

    # --- one wave -------------------------------------------------------------------------------------

    def _module(self, name: str) -> ModuleConfig:
        return self.config.dst if name == "dst" else self.config.act_tag

    def _label_wave(self, wave: list[Turn]) -> list[TurnLabel]:
        priors = [self._states.get(t.dialogue_id, {}) for t in wave]
        dst_outputs, dst_labels, dst_flags = self._run_dst(wave, priors)
        act_outputs, act_labels, act_flags = self._run_acts(wave, priors, [lab.state for lab in dst_labels])
        out = []
        module_flags = [sorted(set(d) | set(a)) for d, a in zip(dst_flags, act_flags, strict=True)]
        for turn, prior, dst_out, dst_lab, act_out, act_lab, more in zip(
            wave, priors, dst_outputs, dst_labels, act_outputs, act_labels, module_flags, strict=True
        ):
            flags = [FLAG_DST_UNPARSEABLE] * dst_lab.failed + [FLAG_ACTS_UNPARSEABLE] * act_lab.failed
            if dst_out.dropped_examples or act_out.dropped_examples:
                flags.append(FLAG_EXAMPLES_DROPPED)
            flags += more
            out.append(
                TurnLabel(
                    turn.dialogue_id, turn.turn_id, prior, dst_lab.state, dst_lab.delta, act_lab.acts, dst_out, act_out, flags
                )
            )
        return out

    def _record(self, wave: list[Turn], labels: list[TurnLabel], gold: dict) -> None:
        """Update histories, grow the indexes, and score against gold when it exists."""
        by_key = {lab.key: lab for lab in labels}
        dst_items, act_items = [], []
        for turn in wave:
            lab = by_key[turn.key]
            item = example_turn(turn, lab, self._acts.get(turn.dialogue_id, []))
            dst_items.append(item)
            act_items.append(item)
            self._states[turn.dialogue_id] = lab.state
            self._acts[turn.dialogue_id] = lab.acts
            lab.metrics = self._score(lab, gold[turn.key])
            if lab.flags:  # counted with the metrics, so a partition's stored totals say how many turns were doubtful
                self.metrics.totals.update({FLAGGED_TURNS: 1, **{f"flag_{name}": 1 for name in set(lab.flags)}})
        for module, items in (("dst", dst_items), ("act", act_items)):
            index = self.indexes[module]
            if index is not None and self._module(module).add_predictions_to_index:
                index.add(items)

    def _score(self, lab: TurnLabel, gold: Turn) -> dict:
        metrics: dict = {}
        if gold.has_gold_state:
            metrics.update(turn_dst_metrics(lab.state, lab.delta, gold.slot_values, gold.turn_slot_values))
            self.metrics.add_dst(lab.state, lab.delta, gold.slot_values, gold.turn_slot_values)
        if gold.has_gold_acts:
            metrics.update(turn_act_metrics(lab.acts, gold.system_response_acts))
            self.metrics.add_acts(lab.acts, gold.system_response_acts)
        return metrics

    def _examples(self, module: str, queries: list[Turn]) -> list[list[Turn]]:
        """Retrieved examples per query, topped up with the built-in demos while the index is nearly empty."""
        cfg, index = self._module(module), self.indexes[module]
        k = cfg.retriever.k_examples
        found = index.search_batch(queries) if index is not None and k else [[] for _ in queries]
        if not cfg.fill_with_demos:
            return found
        return [list(DEMOS[: max(0, k - len(items))]) + items for items in found]

    def _fit(self, module: str, mode: str, examples: list[Example], target: Example, reserve: int) -> tuple[Prompt, int, bool]:
        """The prompt with as many examples as fit the context (least similar dropped first), how many were dropped, and
        whether it fits at all (with every example dropped, the target alone may still be too long)."""
        lm = self.lms[module]
        preamble = None
        for dropped in range(len(examples) + 1):
            prompt = self.builder.prompt(mode, examples[: len(examples) - dropped], target)
            if preamble is None:  # the same for every example count; counting it once saves a ~2k-token encode per try
                preamble = lm.count_tokens(prompt.preamble) + 1  # + a BOS the model may put first
            if preamble + lm.count_tokens(prompt.body) + reserve <= lm.context_length:
                return prompt, dropped, True
        return prompt, len(examples), False

    def _params(self, module: str, stops: tuple[str, ...]) -> SamplingParams:
        cfg = self._module(module)
        s = cfg.generation_cfg.sampling_args
        params = SamplingParams(
            n=s.n,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_new_tokens=s.max_new_tokens,
            stop=stops,
            seed=self.config.seed,
        )
        if cfg.generation_cfg.generation_mode == GREEDY:  # one sample, the argmax (top-k 1) at every step
            return replace(params, n=1, temperature=1.0, top_p=1.0, top_k=1)
        return params

    def _run_dst(self, wave: list[Turn], priors: list[State]):
        queries = [_query(t, prior) for t, prior in zip(wave, priors, strict=True)]
        found = self._examples("dst", queries)
        examples = [[self._dst_example(x) for x in items] for items in found]
        targets = [
            Example(prior, t.last_system_utterance, t.user_utterance, t.system_response)
            for t, prior in zip(wave, priors, strict=True)
        ]
        params = self._params("dst", DST_STOPS)

        def canonical(i: int, text: str):
            return self.canon.dst(text, priors[i], [wave[i].last_system_utterance, wave[i].user_utterance])

        observed = [t.user_utterance for t in wave]
        glue = (DST_PREFIX, DST_CONNECTIVE, NO_CHANGE)
        return self._run_module("dst", ("dst", "dst_channel"), found, examples, targets, params, canonical, glue, observed)

    def _run_acts(self, wave: list[Turn], priors: list[State], states: list[State]):
        queries = [_query(t, prior, state) for t, prior, state in zip(wave, priors, states, strict=True)]
        found = self._examples("act", queries)
        examples = [[self._act_example(x) for x in items] for items in found]
        targets = [
            Example(state, t.last_system_utterance, t.user_utterance, t.system_response)
            for t, state in zip(wave, states, strict=True)
        ]
        params = self._params("act", ACT_STOPS)
        observed = [t.system_response for t in wave]
        return self._run_module(
            "act",
            ("act", "act_channel"),
            found,
            examples,
            targets,
            params,
            lambda i, text: self.canon.acts(text),
            (ACT_PREFIX, ACT_CONNECTIVE, NO_ACTS),
            observed,
        )

    def _run_module(self, module, modes, found, examples, targets, params, canonical, glue, observed):
        """Sample, canonicalise, score and choose for one module over a wave; returns (outputs, labels, flags per turn).

        A turn whose prompt is too long even without examples is not sampled: it gets the module's "nothing" answer
        (``glue[2]``: no state change, no acts) and a flag, so one huge utterance never fails the whole partition.
        """
        lm, reserve = self.lms[module], params.max_new_tokens
        fitted = [self._fit(module, modes[0], ex, tg, reserve) for ex, tg in zip(examples, targets, strict=True)]
        runnable = [i for i, (_, _, fits) in enumerate(fitted) if fits]
        drawn = lm.sample([fitted[i][0] for i in runnable], params) if runnable else []
        samples = dict(zip(runnable, drawn, strict=True))
        candidates, parsed, flags = [], [], [[] for _ in targets]
        for i in range(len(targets)):
            cands, labels = _distinct(samples.get(i, []), lambda text, i=i: canonical(i, text))
            candidates.append(cands)
            parsed.append(labels)
        unscored = self._score_candidates(module, modes[1], examples, targets, candidates, glue, observed)
        outputs, chosen = [], []
        for i, cands in enumerate(candidates):
            prompt, dropped, fits = fitted[i]
            keys = [x.key for x in found[i][: len(found[i]) - dropped]]
            if not fits:
                nothing = canonical(i, glue[2])
                need = lm.count_tokens(prompt.preamble) + lm.count_tokens(prompt.body) + reserve
                error = f"prompt too long: {need} tokens with no examples, the context holds {lm.context_length}"
                chosen.append(nothing)
                outputs.append(ModuleOutput(nothing.text, [], keys, dropped, [error]))
                flags[i].append(FLAG_PROMPT_TOO_LONG)
                continue
            best = choose(cands)
            chosen.append(parsed[i][best.canonical])
            outputs.append(ModuleOutput(best.canonical, cands, keys, dropped, chosen[-1].errors))
            if i in unscored:
                flags[i].append(FLAG_CHANNEL_UNSCORED)
        return outputs, chosen, flags

    def _score_candidates(self, module, channel_mode, examples, targets, candidates, glue, observed) -> set[int]:
        """Channel scores onto the candidates; returns the turns whose channel prompt cannot fit the context (unscored)."""
        mode, lm = self._module(module).generation_cfg.generation_mode, self.lms[module]
        requests, owners, unscored = [], [], set()
        for i, cands in enumerate(candidates):
            if not needs_scoring(mode, cands):
                continue
            # What each request adds after the channel prompt: the same requests, built on an empty prompt.
            bare = scoring_requests(mode, Prompt("", ""), cands, glue[0], glue[1], observed[i])
            reserve = max(lm.count_tokens(p.body) + max(map(lm.count_tokens, conts)) for p, conts in bare) + _CONTEXT_SLACK
            channel, _, fits = self._fit(module, channel_mode, examples[i], targets[i], reserve)
            if not fits:
                unscored.add(i)
                continue
            for req in scoring_requests(mode, channel, cands, glue[0], glue[1], observed[i]):
                requests.append(req)
                owners.append(i)
        scores = lm.score_many(requests) if requests else []
        per_turn: dict[int, list[float]] = {}
        for owner, result in zip(owners, scores, strict=True):
            per_turn.setdefault(owner, []).extend(result)
        for i, flat in per_turn.items():
            for cand, score in zip(candidates[i], flat, strict=True):
                cand.score = score
        return unscored

    def _dst_example(self, item: Turn) -> Example:
        texts = [item.last_system_utterance, item.user_utterance]
        intent = self.builder.intent_string(item.last_slot_values or {}, item.slot_values or {}, texts)
        return Example(item.last_slot_values or {}, item.last_system_utterance, item.user_utterance, item.system_response, intent)

    def _act_example(self, item: Turn) -> Example:
        acts = self.builder.acts_string(item.system_response_acts or [])
        return Example(item.slot_values or {}, item.last_system_utterance, item.user_utterance, item.system_response, None, acts)


def _query(turn: Turn, prior: State, state: State | None = None) -> Turn:
    """The retrieval query for a turn: its text with the labeller's own predicted states."""
    return Turn(
        dialogue_id=turn.dialogue_id,
        turn_id=turn.turn_id,
        user_utterances=turn.user_utterances,
        system_utterances=turn.system_utterances,
        system_response=turn.system_response,
        last_slot_values=prior,
        slot_values=state,
    )


def _distinct(samples, canonical) -> tuple[list[Candidate], dict]:
    """Group samples by canonical form. Unparseable samples are no vote for "no change": they only count when nothing parsed."""
    labels: dict[str, object] = {}
    good: dict[str, Candidate] = {}
    bad: dict[str, Candidate] = {}
    for sample in samples:
        lab = canonical(sample.text)
        pool = bad if lab.failed else good
        cand = pool.get(lab.text)
        if cand is None:
            pool[lab.text] = Candidate(lab.text, [sample.text], sample.logprob)
        else:
            cand.raw.append(sample.text)
            cand.sample_logprob = max(cand.sample_logprob, sample.logprob)
        if lab.text not in labels or not lab.failed:
            labels[lab.text] = lab
    return list(good.values()) or list(bad.values()), labels
