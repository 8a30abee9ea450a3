"""PartitionLabeller: labels the turns of one partition, batch by batch, with its own predictions as context.

Dialogues are shuffled (seeded) into sub-partitions; inside each, all turn-0s form a wave, then all
turn-1s, and so on; a wave is labelled whole or in batches of ``turns_per_batch`` turns. A batch runs DST,
then act tagging, and every label joins its module's example index before the next batch. Gold labels are
stripped on entry and used only for running metrics.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from labelling.acts import Act
from labelling.config import JobConfig, ModuleConfig
from labelling.engine.generation import Prompt, Sample, SamplingParams
from labelling.method import confidence
from labelling.method.canonical import Canonicaliser
from labelling.method.channel import GREEDY, RULES, VOTE, choose, needs_scoring, scoring_requests, tally
from labelling.method.demos import DEMOS
from labelling.method.metrics import MetricsAccumulator
from labelling.method.parsing import reference_reads_cut
from labelling.method.prompts import (
    ACT_CONNECTIVE,
    ACT_PREFIX,
    ACT_STOPS,
    DST_CONNECTIVE,
    DST_PREFIX,
    DST_STOPS,
    Example,
    PromptBuilder,
)
from labelling.method.retrieval import ExampleIndex
from labelling.method.rules import RuleLabeller, free_text_gaps, merge_acts, merge_states, rule_labeller
from labelling.records import (
    FLAG_ACTS_UNPARSEABLE,
    FLAG_CHANNEL_UNSCORED,
    FLAG_DST_UNPARSEABLE,
    FLAG_EXAMPLES_DROPPED,
    FLAG_PROMPT_TOO_LONG,
    FLAGGED_TURNS,
    Candidate,
    ModuleOutput,
    TurnLabel,
    example_turn,
)
from labelling.schema import Schema
from labelling.states import State, compute_delta
from labelling.turns import Turn

if TYPE_CHECKING:  # the labeller drives any object with LanguageModel's interface; torch loads only with a model
    from labelling.engine.lm import LanguageModel
    from labelling.method.grammar import SchemaGrammar

NO_CHANGE, NO_ACTS = "no_change()]", "]"  # the completions meaning "nothing": a turn that cannot be prompted gets these
# Tokens kept free beyond the measured continuation: prompt and continuation are tokenised apart, and the joins may differ.
_CONTEXT_SLACK = 8


def batches(turns: Sequence[Turn], shuffle_groups: int, seed: int, warmup: int = 0, turns_per_batch: int = 0) -> list[list[Turn]]:
    """The processing order: dialogues shuffled (seeded) into ``shuffle_groups`` groups (the reference's
    ``data_num_partitions``), turn-id waves inside each group cut into batches of ``turns_per_batch`` turns (0: whole
    waves), the first ``warmup`` turns alone (docs/method.md §3.2)."""
    dialogue_ids = list(dict.fromkeys(t.dialogue_id for t in turns))
    random.Random(seed).shuffle(dialogue_ids)
    n = max(1, min(shuffle_groups, len(dialogue_ids)))
    size = len(dialogue_ids) // n
    chunks = [dialogue_ids[i * size : (i + 1) * size if i < n - 1 else None] for i in range(n)]
    out: list[list[Turn]] = []
    for chunk in chunks:
        members = set(chunk)
        mine = [t for t in turns if t.dialogue_id in members]
        for turn_id in sorted({t.turn_id for t in mine}):
            wave = [t for t in mine if t.turn_id == turn_id]
            step = turns_per_batch or len(wave)
            out += [wave[i : i + step] for i in range(0, len(wave), step)]
    return _split_warmup(out, warmup)


def schedule(turns: Sequence[Turn], config: JobConfig) -> list[list[Turn]]:
    """The batches a job labels ``turns`` in, each followed by an index update: :func:`batches` with the job's settings.
    The labeller and the runner (which resumes at batch boundaries) both take it from here, so they cannot disagree."""
    c = config
    return batches([t.without_gold() for t in turns], c.data_num_partitions, c.seed, c.data_warmup, c.turns_per_batch)


def _split_warmup(schedule: list[list[Turn]], warmup: int) -> list[list[Turn]]:
    out, count = [], 0
    for batch in schedule:
        while batch and count < warmup:
            out.append([batch[0]])
            batch, count = batch[1:], count + 1
        if batch:
            out.append(batch)
            count += len(batch)
    return out


@dataclass(frozen=True)
class LabellingModule:
    """One labelling module (DST or act tagging): its settings, model and index, the prompt modes and strings of its
    task, and how a turn becomes a retrieval query, an example, a target and a parsed label.

    The turn-dependent functions all take ``(turn, prior, state)``: the predicted state before the turn and, for act
    tagging, the state DST just predicted (None while DST runs).
    """

    name: str
    config: ModuleConfig
    lm: LanguageModel
    index: ExampleIndex | None
    modes: tuple[str, str]  # direct prompt, channel prompt
    stops: tuple[str, ...]
    prefix: str  # what every completion starts with, already in the prompt
    connective: str  # joins a candidate to the observed argument in a channel request
    nothing: str  # the completion meaning "no change" / "no acts"
    render: Callable[[Turn], Example]  # a retrieved (labelled) turn as an in-context example
    query: Callable[[Turn, State, State | None], Turn]
    target: Callable[[Turn, State, State | None], Example]
    parse: Callable[[Turn, State, str], object]  # completion -> canonical DstLabel / ActLabel
    observed: Callable[[Turn], str]  # x: what the channel model must explain

    @property
    def indexing(self) -> bool:
        """Whether this module's labels join its example index."""
        return self.index is not None and self.config.add_predictions_to_index


@dataclass
class _Prepared:
    """One turn of a batch inside one module: what was retrieved and the prompt that fits."""

    turn: Turn
    prior: State
    found: list[Turn]
    examples: list[Example]
    target: Example
    prompt: Prompt
    dropped: int
    fits: bool


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
        self.builder = PromptBuilder(schema)
        self.canon = Canonicaliser(schema, normalize=config.dst.retriever.use_normalizer)
        self.dst = LabellingModule(
            name="dst",
            config=config.dst,
            lm=dst_lm,
            index=dst_index,
            modes=("dst", "dst_channel"),
            stops=DST_STOPS,
            prefix=DST_PREFIX,
            connective=DST_CONNECTIVE,
            nothing=NO_CHANGE,
            render=self._dst_example,
            query=lambda turn, prior, _: _query(turn, prior),
            target=lambda turn, prior, _: Example(prior, turn.last_system_utterance, turn.user_utterance, turn.system_response),
            parse=lambda turn, prior, text: self.canon.dst(
                text, prior, [turn.last_system_utterance, turn.user_utterance], grounded=config.dst.drop_unsaid_values
            ),
            observed=lambda turn: turn.user_utterance,
        )
        self.act = LabellingModule(
            name="act",
            config=config.act_tag,
            lm=act_lm,
            index=act_index,
            modes=("act", "act_channel"),
            stops=ACT_STOPS,
            prefix=ACT_PREFIX,
            connective=ACT_CONNECTIVE,
            nothing=NO_ACTS,
            render=self._act_example,
            query=_query,
            target=lambda turn, _, state: Example(state, turn.last_system_utterance, turn.user_utterance, turn.system_response),
            parse=lambda turn, prior, text: self.canon.acts(
                text, turn.system_response if config.act_tag.drop_unsaid_values else None
            ),
            observed=lambda turn: turn.system_response,
        )
        self.rules: RuleLabeller | None = None
        if any(m.config.uses_rules for m in self.modules):
            r = config.rules
            self.rules = rule_labeller(schema, r.ontology, r.cues, bundled_schema=config.schema_path is None)
        self.metrics = MetricsAccumulator()
        self._states: dict[str, State] = {}
        self._acts: dict[str, list[Act]] = {}
        self._grammars: dict[str, SchemaGrammar] = {}

    @property
    def modules(self) -> tuple[LabellingModule, LabellingModule]:
        """DST, then act tagging: the order a batch runs them in."""
        return (self.dst, self.act)

    # --- public API -----------------------------------------------------------------------------------

    def add_examples(self, items: Sequence[Turn], vectors: Sequence[dict] | None = None) -> int:
        """Add labelled turns (e.g. from completed partitions) to both example indexes; returns how many were embedded.

        ``vectors[i]`` (module name -> stored record) supplies item i's vectors; items without a usable one are embedded.
        """
        embedded = 0
        for module in self.modules:
            if module.indexing and items:
                stored = [v.get(module.name) for v in vectors] if vectors is not None else [None] * len(items)
                embedded += module.index.add_stored(list(items), stored)
        return embedded

    def label(
        self,
        turns: Sequence[Turn],
        done: Iterable[TurnLabel] = (),
        on_batch: Callable[[list[TurnLabel]], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[TurnLabel]:
        """Label ``turns`` and return one TurnLabel per turn, in processing order.

        ``done`` holds labels from an interrupted run: they are replayed into the history and indexes in
        the original order instead of being recomputed. ``on_batch`` receives each newly finished batch of the
        schedule (a whole turn-id batch, or ``turns_per_batch`` turns of it).
        """
        gold = {t.key: t for t in turns}
        previous = {lab.key: lab for lab in done}
        results: list[TurnLabel] = []
        for batch in schedule(turns, self.config):
            replayed = [previous[t.key] for t in batch if t.key in previous]
            labels = replayed if len(replayed) == len(batch) else self._label_batch([t for t in batch if t.key not in previous])
            if len(replayed) not in (0, len(batch)):
                labels = replayed + labels
            self._record(batch, labels, gold)
            results.extend(labels)
            if on_batch and labels is not replayed:
                on_batch(labels)
            if progress:
                progress(len(batch))
        return results

    # --- one batch ------------------------------------------------------------------------------------

    def _label_batch(self, batch: list[Turn]) -> list[TurnLabel]:
        priors = [self._states.get(t.dialogue_id, {}) for t in batch]
        dst_outputs, dst_labels, dst_flags = self._run(self.dst, batch, priors, [None] * len(batch))
        act_outputs, act_labels, act_flags = self._run(self.act, batch, priors, [lab.state for lab in dst_labels])
        out = []
        for i, turn in enumerate(batch):
            dst_lab, act_lab = dst_labels[i], act_labels[i]
            flags = [FLAG_DST_UNPARSEABLE] * dst_lab.failed + [FLAG_ACTS_UNPARSEABLE] * act_lab.failed
            if dst_outputs[i].dropped_examples or act_outputs[i].dropped_examples:
                flags.append(FLAG_EXAMPLES_DROPPED)
            flags += sorted(set(dst_flags[i]) | set(act_flags[i]))
            label = TurnLabel(
                dialogue_id=turn.dialogue_id,
                turn_id=turn.turn_id,
                prior_state=priors[i],
                state=dst_lab.state,
                delta=dst_lab.delta,
                acts=act_lab.acts,
                dst=dst_outputs[i],
                act=act_outputs[i],
                flags=flags,
            )
            out.append(label)
        return out

    def _record(self, batch: list[Turn], labels: list[TurnLabel], gold: dict) -> None:
        """Update histories, grow the indexes, and score against gold when it exists."""
        by_key = {lab.key: lab for lab in labels}
        items = []
        for turn in batch:
            lab = by_key[turn.key]
            if admitted(lab, self.config.pool_min_confidence):
                items.append(example_turn(turn, lab, self._acts.get(turn.dialogue_id, [])))
            self._states[turn.dialogue_id] = lab.state
            self._acts[turn.dialogue_id] = lab.acts
            lab.metrics = self._score(lab, gold[turn.key])
            if lab.flags:  # counted with the metrics, so a partition's stored totals say how many turns were doubtful
                self.metrics.totals.update({FLAGGED_TURNS: 1, **{f"flag_{name}": 1 for name in set(lab.flags)}})
        for module in self.modules:
            if module.indexing and items:
                module.index.add(items)

    def _score(self, lab: TurnLabel, gold: Turn) -> dict:
        """Count the turn into the running totals; its own metrics (those gold exists for) are returned for the label."""
        return self.metrics.add_turn(gold, lab.state, lab.delta, lab.acts)

    def _examples(self, module: LabellingModule, queries: list[Turn]) -> list[list[Turn]]:
        """Retrieved examples per query, topped up with the built-in demos while the index is nearly empty."""
        k = module.config.retriever.k_examples
        found = module.index.search_batch(queries) if module.index is not None and k else [[] for _ in queries]
        if not module.config.fill_with_demos:
            return found
        return [list(DEMOS[: max(0, k - len(items))]) + items for items in found]

    def _fit(
        self, module: LabellingModule, mode: str, examples: list[Example], target: Example, reserve: int
    ) -> tuple[Prompt, int, bool]:
        """The prompt with as many examples as fit the context (least similar dropped first), how many were dropped, and
        whether it fits at all (with every example dropped, the target alone may still be too long)."""
        lm = module.lm
        preamble = None
        for dropped in range(len(examples) + 1):
            prompt = self.builder.prompt(mode, examples[: len(examples) - dropped], target)
            if preamble is None:  # the same for every example count; counting it once saves a ~2k-token encode per try
                preamble = lm.count_tokens(prompt.preamble) + 1  # + a BOS the model may put first
            if preamble + lm.count_tokens(prompt.body) + reserve <= lm.context_length:
                return prompt, dropped, True
        return prompt, len(examples), False

    def _params(self, module: LabellingModule) -> SamplingParams:
        """Sampling settings; ``best_of`` above ``n`` draws that many and keeps the n likeliest (docs/method.md §5.2)."""
        s = module.config.generation_cfg.sampling_args
        params = SamplingParams(
            n=max(s.n, s.best_of),
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_new_tokens=s.max_new_tokens,
            stop=module.stops,
            seed=self.config.seed,
        )
        if module.config.generation_cfg.generation_mode == GREEDY:  # one sample, the argmax (top-k 1) at every step
            return replace(params, n=1, temperature=1.0, top_p=1.0, top_k=1)
        return params

    def _prepare(self, module: LabellingModule, batch: list[Turn], priors: list[State], states: list) -> list[_Prepared]:
        found = self._examples(module, [module.query(t, p, s) for t, p, s in zip(batch, priors, states, strict=True)])
        reserve = module.config.generation_cfg.sampling_args.max_new_tokens
        prepared = []
        for turn, prior, state, items in zip(batch, priors, states, found, strict=True):
            examples = [module.render(x) for x in items]
            target = module.target(turn, prior, state)
            prompt, dropped, fits = self._fit(module, module.modes[0], examples, target, reserve)
            prepared.append(_Prepared(turn, prior, items, examples, target, prompt, dropped, fits))
        return prepared

    def _constraints(self, module: LabellingModule, runnable: list[_Prepared]) -> list | None:
        """Per-prompt constraint factories when the module samples with `constrain_to_schema`, else None."""
        if not module.config.constrain_to_schema or not runnable:
            return None
        grammar = self._grammars.get(module.name)
        if grammar is None:
            from labelling.method.grammar import SchemaGrammar  # llguidance loads only when constraints are on

            grammar = self._grammars[module.name] = SchemaGrammar(self.schema, module.lm.tokenizer)
        return [partial(grammar.dst, p.prior) if module is self.dst else grammar.acts for p in runnable]

    def _run(self, module: LabellingModule, batch: list[Turn], priors: list[State], states: list):
        """Sample, canonicalise, score and choose for one module over a batch; returns (outputs, labels, flags per turn).

        A turn whose prompt is too long even without examples is not sampled: it gets the module's "nothing" answer
        (no state change, no acts) and a flag, so one huge utterance never fails the whole partition. So does a turn
        whose constrained samples were all cut by ``max_new_tokens`` (no flag: its ``cut_samples`` and error say so).
        """
        if module.config.generation_cfg.generation_mode == RULES:
            return self._run_rules(module, batch, priors, states)
        ruled = self._rule_labels(module, batch, priors, states) if module.config.uses_rules else None
        prepared = self._prepare(module, batch, priors, states)
        params = self._params(module)
        keep = module.config.generation_cfg.sampling_args.n if params.n > 1 else 1
        runnable = [p for p in prepared if p.fits]
        constraints = self._constraints(module, runnable)
        extra = {"constraints": constraints} if constraints else {}  # an LM without constraint support still samples
        drawn = module.lm.sample([p.prompt for p in runnable], params, **extra) if runnable else []
        # A constrained sample cut by max_new_tokens is a grammar prefix, not a label: it is dropped and counted.
        cut = {id(p): sum(not s.stopped for s in d) if constraints else 0 for p, d in zip(runnable, drawn, strict=True)}
        samples = {
            id(p): _likeliest([s for s in d if s.stopped or not constraints], keep) for p, d in zip(runnable, drawn, strict=True)
        }
        compete = module.config.unparseable_samples == "compete"
        candidates, parsed, flags = [], [], [[] for _ in prepared]
        for i, p in enumerate(prepared):
            cands, labels = _distinct(samples.get(id(p), []), partial(self._read, module, p), compete)
            if ruled is not None and module.config.with_rules == "candidate":
                _add_candidate(cands, labels, ruled[i], _completion(module, ruled[i].text))
            candidates.append(cands)
            parsed.append(labels)
        unscored = self._score_candidates(module, prepared, candidates)
        mode, outputs, chosen = module.config.generation_cfg.generation_mode, [], []
        for i, p in enumerate(prepared):
            keys = [x.key for x in p.found[: len(p.found) - p.dropped]]
            if not p.fits or not candidates[i]:
                nothing = module.parse(p.turn, p.prior, module.nothing)
                chosen.append(self._merged(module, p, nothing, ruled[i] if ruled else None))
                error = self._nothing_reason(module, p, params, cut.get(id(p), 0))
                outputs.append(ModuleOutput(nothing.text, [], keys, p.dropped, [error], cut.get(id(p), 0), confidence=0.0))
                if not p.fits:
                    flags[i].append(FLAG_PROMPT_TOO_LONG)
                continue
            best = choose(candidates[i])
            lm_label = parsed[i][best.canonical]
            chosen.append(self._merged(module, p, lm_label, ruled[i] if ruled else None))
            evidence = confidence.Evidence(mode, candidates[i], best, samples.get(id(p), []), cut[id(p)])
            sure = confidence.of(evidence)
            if ruled is not None:  # a hybrid: how far the LM's own label agrees with the rules' (confidence.agreement)
                sure = confidence.agreement(sure, lm_label, ruled[i])
            label = chosen[-1]
            outputs.append(ModuleOutput(label.text, candidates[i], keys, p.dropped, label.errors, cut[id(p)], sure))
            if i in unscored:
                flags[i].append(FLAG_CHANNEL_UNSCORED)
        return outputs, chosen, flags

    def _rule_labels(self, module: LabellingModule, batch: list[Turn], priors: list[State], states: list) -> list:
        """The rule labeller's label of each turn, parsed as a completion would be (without dropping unsaid values:
        the rules only write what the turn says)."""
        out = []
        for turn, prior, state in zip(batch, priors, states, strict=True):
            if module is self.dst:
                new = self.rules.dst(turn.dialogue_id, turn.last_system_utterance, turn.user_utterance, prior)
                out.append(self._state_label(turn, prior, new))
            else:
                out.append(self._acts_label(self.rules.acts(turn.dialogue_id, turn.system_response, state or {})))
        return out

    def _state_label(self, turn: Turn, prior: State, state: State):
        """A state the labeller wrote itself (the rules', or a merge) as the canonical label a completion of it would
        parse to; nothing is dropped as unsaid (the rules only write what the turn says, the LM's part is grounded)."""
        text = self.builder.intent_string(prior, state, [turn.last_system_utterance, turn.user_utterance])
        return self.canon.dst(text[len(DST_PREFIX) :], prior, [])

    def _acts_label(self, acts: list[Act]):
        """Acts the labeller wrote itself as the canonical label a completion of them would parse to."""
        return self.canon.acts(self.builder.acts_string(acts)[len(ACT_PREFIX) :])

    def _run_rules(self, module: LabellingModule, batch: list[Turn], priors: list[State], states: list):
        """A module labelled by the rules alone: no LM, no retrieval; each label is its own single candidate."""
        labels = self._rule_labels(module, batch, priors, states)
        outputs = [
            ModuleOutput(lab.text, [Candidate(lab.text, [_completion(module, lab.text)], 0.0)], [], 0, list(lab.errors))
            for lab in labels
        ]
        return outputs, labels, [[] for _ in batch]

    def _merged(self, module: LabellingModule, p: _Prepared, lm_label, rule_label):
        """The chosen LM label combined with the rule label as ``with_rules`` says (fill / override); else as chosen."""
        how = module.config.with_rules
        if rule_label is None or how not in ("fill", "override", "gaps"):
            return lm_label
        first, second = (rule_label, lm_label) if how == "fill" else (lm_label, rule_label)  # the second one wins
        if module is self.dst:
            ours = compute_delta(p.prior, first.state)
            if how == "gaps":
                ours = free_text_gaps(self.schema, ours, compute_delta(p.prior, rule_label.state))
            merged = self._state_label(p.turn, p.prior, merge_states(p.prior, ours, compute_delta(p.prior, second.state)))
        else:
            merged = self._acts_label(merge_acts(second.acts, first.acts))
        merged.errors = [*lm_label.errors, *merged.errors]
        return merged

    @staticmethod
    def _read(module: LabellingModule, p: _Prepared, sample: Sample):
        """A sample's label. A sample cut by max_new_tokens reads as the reference reads it: whole once one `]` closes
        it, else unparseable (it then competes as "no change" / no acts, or is dropped, as `unparseable_samples` says)."""
        if not sample.stopped and not reference_reads_cut(module.prefix, sample.text):
            label = module.parse(p.turn, p.prior, module.nothing)
            return replace(label, failed=True, errors=[f"cut by max_new_tokens inside a value or call: {sample.text[-40:]!r}"])
        return module.parse(p.turn, p.prior, sample.text)

    @staticmethod
    def _nothing_reason(module: LabellingModule, p: _Prepared, params: SamplingParams, cut: int) -> str:
        """Why a turn got the module's "nothing" answer: its prompt cannot fit, or every constrained sample was cut."""
        if p.fits:
            return f"all {cut} constrained samples ran past max_new_tokens={params.max_new_tokens}: none is a whole label"
        need = module.lm.count_tokens(p.prompt.preamble) + module.lm.count_tokens(p.prompt.body) + params.max_new_tokens
        return f"prompt too long: {need} tokens with no examples, the context holds {module.lm.context_length}"

    def _score_candidates(
        self, module: LabellingModule, prepared: list[_Prepared], candidates: list[list[Candidate]]
    ) -> set[int]:
        """Scores onto the candidates: vote counts, or channel scores; returns the turns whose channel prompt cannot fit
        the context (unscored)."""
        mode, lm = module.config.generation_cfg.generation_mode, module.lm
        if mode == VOTE:
            for cands in candidates:
                tally(cands)
            return set()
        requests, owners, unscored = [], [], set()
        for i, (p, cands) in enumerate(zip(prepared, candidates, strict=True)):
            if not needs_scoring(mode, cands):
                continue
            observed = module.observed(p.turn)
            # What each request adds after the channel prompt: the same requests, built on an empty prompt.
            bare = scoring_requests(mode, Prompt("", ""), cands, module.prefix, module.connective, observed)
            reserve = max(lm.count_tokens(q.body) + max(map(lm.count_tokens, conts)) for q, conts in bare) + _CONTEXT_SLACK
            channel, _, fits = self._fit(module, module.modes[1], p.examples, p.target, reserve)
            if not fits:
                unscored.add(i)
                continue
            for req in scoring_requests(mode, channel, cands, module.prefix, module.connective, observed):
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


def _completion(module: LabellingModule, text: str) -> str:
    """A canonical label as the completion an LM would write for it (the text after the prompt's prefix)."""
    return text[len(module.prefix) :] if text.startswith(module.prefix) else text


def _add_candidate(candidates: list[Candidate], labels: dict, rule_label, raw: str) -> None:
    """The rule label as one more candidate: it joins an equal sampled candidate, else it competes with a sample
    log-prob below every sample's (it was not sampled), so only a channel score or a vote can choose it."""
    for cand in candidates:
        if cand.canonical == rule_label.text:
            cand.raw.append(raw)
            return
    floor = min((c.sample_logprob for c in candidates), default=0.0) - 1.0
    candidates.append(Candidate(rule_label.text, [raw], floor))
    labels[rule_label.text] = rule_label


def admitted(label: TurnLabel, threshold: float) -> bool:
    """Whether a self-label joins the example pool (``pool_min_confidence``): at or above the threshold, or unknown."""
    sure = label.confidence
    return threshold <= 0 or sure is None or sure >= threshold


def _query(turn: Turn, prior: State, state: State | None = None) -> Turn:
    """The retrieval query for a turn: its text with the labeller's own predicted states."""
    return turn.with_labels(last_slot_values=prior, slot_values=state)


def _likeliest(samples: list, n: int) -> list:
    """The ``n`` samples with the highest log-prob, in the order they were drawn (all of them when there are no more)."""
    if len(samples) <= n:
        return samples
    best = sorted(range(len(samples)), key=lambda i: -samples[i].logprob)[:n]
    return [samples[i] for i in sorted(best)]


def _distinct(samples, canonical, compete: bool = True) -> tuple[list[Candidate], dict]:
    """Group samples by canonical form (``canonical`` reads one sample into a label).

    With ``compete`` (the reference) an unparseable sample is a candidate like any other: it reads as "no change" or
    no acts and joins that candidate. Without it, unparseable samples count only when nothing parsed.
    """
    labels: dict[str, object] = {}
    good: dict[str, Candidate] = {}
    bad: dict[str, Candidate] = {}
    for sample in samples:
        lab = canonical(sample)
        pool = bad if lab.failed and not compete else good
        cand = pool.get(lab.text)
        if cand is None:
            pool[lab.text] = Candidate(lab.text, [sample.text], sample.logprob)
        else:
            cand.raw.append(sample.text)
            cand.sample_logprob = max(cand.sample_logprob, sample.logprob)
        if lab.text not in labels or not lab.failed:
            labels[lab.text] = lab
    return list(good.values()) or list(bad.values()), labels
