"""A causal language model behind two operations: sample candidates, and score continuations of a prompt.

Prompt parts are tokenised separately (a forced token boundary between preamble, body and continuation), as the
reference does. Speed comes from levers behind the same interface, each switchable so the plain path stays available:
with `reuse_prefix`, the KV cache of each preamble is computed once and kept in a small LRU, each body is encoded once
on top of it and expanded to its n samples or its continuations; and several prompts share one forward pass, up to
`max_batch_tokens` (rows x columns); and with `guess_tokens`, a decode pass feeds each row's next token plus tokens
guessed by prompt lookup, kept only where they equal what the row's sampler draws; and on a CPU, few-row passes run
their linear layers as `weight @ x.T` (`labelling.engine.linear`). With `reuse_prefix=False` every row re-encodes its whole
prompt, decodes one token per pass and keeps torch's linear layers.

On a GPU the batch budget is sized from the memory left after loading (`labelling.engine.memory`) unless the config sets it,
a prefill too wide for the memory left to new tokens is fed in column slices, and a call that runs out of device memory
halves the budget and runs again (results do not depend on the batching). With `static_decode`, a batch decodes on a
static cache, captured as CUDA graphs on a GPU (`labelling.engine.static_decode`): the same samples, fewer host waits.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import torch

from labelling import settings
from labelling.engine import attention, eager_decode, graphs, linear, loading, memory, padding, sampling, static_decode
from labelling.engine.drafts import REPLACEMENT, Draft, decodes_piecewise
from labelling.engine.generation import Prompt, Sample, SamplingParams, TokenConstraint
from labelling.engine.kv_cache import Encoded, KVState, common_length, forward, shared_prefixes
from labelling.engine.lookup import PromptLookup
from labelling.engine.stats import EngineStats
from labelling.errors import ModelError

PREFIX_CACHE_SIZE = 4
# Prompt-lookup guesses per row and decode pass by default. On a CPU, with SmolLM2, 1 guess cut decode passes by a third
# and beat 2 and 4 (a pass costs about one more token's compute per guess). On an H200 a random-weight StarCoder kept
# almost no guesses and its sampling took twice as long with 4, and real weights could not be measured: off there.
GUESS_TOKENS_CPU, GUESS_TOKENS_GPU = 1, 0
# Scoring rows of mixed continuation lengths are split into passes of similar lengths where that saves more padded
# tokens than this per extra pass (`labelling.engine.padding`). On a GPU a pass of StarCoder-15B reads its 31 GB of
# weights once more: about the compute of 200 tokens on an H100 or H200 [estimate, not measured]. The CPU keeps one pass.
SCORE_PASS_COST_GPU = 256
log = logging.getLogger(__name__)


def _backs_off_on_oom(method):
    """Run an LM call under the model's lock, with this engine's linear layers switched on (`labelling.engine.linear`); on
    out-of-device-memory, halve the batch budget and run it whole again.

    A call's results do not depend on its batching (tests/engine/test_lm.py), so the rerun returns what the first try would
    have. The failed attempt's tensors are freed (the exception is dropped) before the cache is emptied.
    """

    @functools.wraps(method)
    def call(self: LanguageModel, *args, **kwargs):
        with self._lock, linear.few_rows(self.few_row_linear):
            while True:
                try:
                    return method(self, *args, **kwargs)
                except torch.OutOfMemoryError as exc:
                    error = str(exc).splitlines()[0] if str(exc) else "out of memory"
                self.budget.shrink(error)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    return call


class LanguageModel:
    """Samples and scores text with a Hugging Face causal LM; see the module docstring for the speed levers."""

    def __init__(
        self,
        model,
        tokenizer,
        max_batch_tokens: int | None = None,
        reuse_prefix: bool = True,
        guess_tokens: int | None = None,
        static_decode: bool | None = None,
    ):
        attention.use_packed_attention(model)  # grouped key/value heads read once per pass (labelling/engine/attention.py)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.reuse_prefix = reuse_prefix
        self.device = next(model.parameters()).device
        # The plain path keeps torch's own linear layers, as the reference runs them; the switch is per call
        # (`_backs_off_on_oom`), so a plain engine on the same model still gets torch's layers.
        self.few_row_linear = reuse_prefix and self.device.type == "cpu" and settings.FEW_ROW_LINEAR.get()
        if self.few_row_linear:
            linear.use_few_row_linear(model)  # fp32 CPU layers only (labelling/engine/linear.py)
        # Tokens guessed per row and decode pass by prompt lookup (0: one token per pass). A guess costs a column of
        # compute and is kept only if it is the token the row's sampler draws there, so samples do not change. The
        # plain path (no prefix reuse) decodes one token per pass, as the reference does.
        if guess_tokens is None and reuse_prefix:
            guess_tokens = settings.GUESS_TOKENS.get()
            if guess_tokens is None:
                guess_tokens = GUESS_TOKENS_GPU if self.device.type == "cuda" else GUESS_TOKENS_CPU
        self.guess_tokens = guess_tokens or 0
        # The static-cache decode loop, as CUDA graphs on a GPU (`labelling.engine.static_decode`; `_runs_static`).
        static_decode = settings.STATIC_DECODE.get() if static_decode is None else static_decode
        self.static_decode = reuse_prefix and static_decode
        self.runner_factory = functools.partial(graphs.runner_for, self.device, settings.CUDA_GRAPHS.get())
        # Padded tokens an extra scoring pass must save (None: one pass per chunk); the optimised path only.
        self.score_pass_cost = SCORE_PASS_COST_GPU if reuse_prefix and self.device.type == "cuda" else None
        # Sized from the memory left after loading on first use (None configured), halved on out-of-memory.
        self.budget = memory.BatchBudget(
            max_batch_tokens, str(self.device), lambda: loading.device_memory(self.device), lambda: self._shape
        )
        self._lock = threading.RLock()  # one call at a time: a threads pool shares the model and its caches
        config = model.config.get_text_config()
        limits = [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions")]
        self.context_length: int = int(next(n for n in [*limits, tokenizer.model_max_length] if n))
        self._bos = self._bos_ids()
        self._eos = self._eos_ids()
        # Any id will do as padding: padded columns are masked out and their logits never read.
        self._pad = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        self._prefixes: OrderedDict[str, tuple[list[int], KVState]] = OrderedDict()  # preamble -> its ids and state
        self._piecewise = decodes_piecewise(tokenizer)
        self.stats = EngineStats()  # shared with the decode loops and read by the speed benchmark

    @classmethod
    def load(
        cls,
        name_or_path: str,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch_tokens: int | None = None,
        reuse_prefix: bool = True,
        quantization: str | None = None,
    ) -> LanguageModel:
        """Load a hub id, a local folder, a `.gguf` file, or `smollm2` (the embedded model, converted once).

        The weights are created on the device and each shard is copied straight there (no whole model in host RAM).
        `quantization` ('8bit', '4bit') loads bitsandbytes weights on CUDA, so StarCoder-15B fits a 24 GB card; it
        computes in 16 bits. `max_batch_tokens` None sizes the batch budget from the memory left after loading.
        """
        model, tokenizer = loading.load_pretrained(name_or_path, device, dtype, quantization)
        return cls(model, tokenizer, max_batch_tokens, reuse_prefix)

    @classmethod
    def from_model(cls, model, tokenizer, device: str | None = None, dtype: str | None = None, **options) -> LanguageModel:
        """Wrap an already built model and tokenizer (tests, benchmarks), optionally moving or casting it."""
        if dtype not in (None, "auto"):
            model = model.to(loading.torch_dtype(dtype))
        return cls(model.to(loading.resolve_device(device)) if device else model, tokenizer, **options)

    @property
    def max_batch_tokens(self) -> int:
        """Tokens (rows x columns) per forward pass: as configured, else sized from free device memory on first use."""
        return self.budget.tokens

    @max_batch_tokens.setter
    def max_batch_tokens(self, value: int | None) -> None:
        self.budget.tokens = value

    @property
    def max_batch_tokens_setting(self) -> int | None:
        """The batch budget as configured (None: sized from memory), before sizing or back-off."""
        return self.budget.configured

    @property
    def new_token_bytes(self) -> int | None:
        """Bytes the tokens fed in one pass may take; None on a CPU (:class:`labelling.engine.memory.BatchBudget`)."""
        return self.budget.new_bytes

    @property
    def oom_backoffs(self) -> int:
        """Out-of-memory retries so far (each halved the budget)."""
        return self.budget.backoffs

    @functools.cached_property
    def _shape(self) -> memory.KVShape:
        return memory.KVShape.of(self.model.config.get_text_config(), self.model.dtype.itemsize)

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes when tokenised on its own, as every prompt part is."""
        return len(self._encode(text))

    @_backs_off_on_oom
    @torch.inference_mode()
    def sample(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        constraints: Sequence[Callable[[], TokenConstraint]] | None = None,
    ) -> list[list[Sample]]:
        """Draw `params.n` samples per prompt; a prompt's samples depend only on it and the seed, not on its batch.

        `constraints[i]`, when given, makes a fresh per-sample constraint for prompt i (see `eager_decode.decode`).
        """
        encoded = [self._encode_prompt(p) for p in prompts]
        out: list[list[Sample]] = [[] for _ in prompts]
        for chunk in self._chunks(encoded, [params.n] * len(prompts), [params.max_new_tokens] * len(prompts)):
            keys = [(i, j) for i, js in chunk for j in js]
            static = self._runs_static(len(keys), params, constraints)
            room = 0 if static else params.max_new_tokens  # the static loop copies the state into its own arena
            state = self._states([encoded[i] for i, _ in chunk], [len(js) for _, js in chunk], room)
            seeds = [sampling.sample_seed(prompts[i], params.seed, j) for i, j in keys]
            drafts = [Draft() for _ in seeds]
            uniforms = sampling.uniforms(seeds, params.max_new_tokens, self.device) if params.temperature > 0 else None
            loop = (self.model, state, drafts, uniforms, params, functools.partial(self._push, params=params), self._pad)
            if static:
                self.stats.static_batches += 1
                runner = self.runner_factory()
                logps = static_decode.decode(*loop, runner, self.stats)
                self.stats.graph_captures += runner.captures
                self.stats.capture_seconds += runner.capture_seconds
            elif self.guess_tokens and not constraints:
                self.stats.eager_batches += 1
                ids = {i: encoded[i].pre + encoded[i].body for i, _ in chunk}
                indexes = {i: PromptLookup.index_of(context) for i, context in ids.items()}
                lookups = [PromptLookup(ids[i], indexes[i]) for i, _ in keys]
                logps = eager_decode.decode_guessing(*loop, self.stats, lookups, self.guess_tokens)
            else:
                self.stats.eager_batches += 1
                made = [constraints[i]() for i, _ in keys] if constraints else None
                logps = eager_decode.decode(*loop, self.stats, made)
            for (i, _), draft in zip(keys, self._finished(drafts, logps, params), strict=True):
                out[i].append(draft.finish())
        return out

    def _runs_static(self, rows: int, params: SamplingParams, constraints) -> bool:
        """Whether a batch of `rows` samples decodes on the static cache (else the eager loops run it)."""
        fits = static_decode.bucket_for(rows) is not None and params.max_new_tokens > 1
        return self.static_decode and fits and not constraints and not self.guess_tokens

    def score(self, prompt: Prompt, continuations: list[str]) -> list[float]:
        """Summed fp32 log p(continuation | prompt) for each continuation, tokenised apart from the prompt."""
        return self.score_many([(prompt, continuations)])[0]

    @_backs_off_on_oom
    @torch.inference_mode()
    def score_many(self, requests: list[tuple[Prompt, list[str]]]) -> list[list[float]]:
        """`score` for many prompts at once, batched across prompts."""
        encoded = [self._encode_prompt(p) for p, _ in requests]
        conts = [[self._encode(c) for c in cs] for _, cs in requests]
        out = [[0.0] * len(cs) for cs in conts]
        widths = [max(map(len, cs), default=0) for cs in conts]
        for chunk in self._chunks(encoded, [len(cs) for cs in conts], widths):
            room = max(widths[i] for i, _ in chunk)
            keys = [(i, j) for i, js in chunk for j in js]
            groups = padding.length_groups([len(conts[i][j]) - 1 for i, j in keys], self.score_pass_cost)
            # One group: every prompt's rows expanded at once. Several: each prompt once, its rows taken per group.
            split = len(groups) > 1
            copies = [1] * len(chunk) if split else [len(js) for _, js in chunk]
            prompts = self._states([encoded[i] for i, _ in chunk], copies, 0 if split else room)
            owner = [k for k, (_, js) in enumerate(chunk) for _ in js]
            for group in groups:
                state = prompts.take([owner[r] for r in group], room) if split else prompts
                rows = [keys[r] for r in group]
                for (i, j), value in zip(rows, self._score_rows(state, [conts[i][j] for i, j in rows]), strict=True):
                    out[i][j] = value
        return out

    # -- tokenisation ---------------------------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _encode_prompt(self, prompt: Prompt) -> Encoded:
        encoded = Encoded(prompt.preamble, self._bos + self._encode(prompt.preamble), self._encode(prompt.body))
        if not len(encoded):
            raise ValueError("cannot condition on an empty prompt")
        return encoded

    def _bos_ids(self) -> list[int]:
        """[BOS] if the tokenizer puts one before a text on its own, else []: only the very start of a prompt gets it."""
        bos = self.tokenizer.bos_token_id
        with_special = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return [bos] if bos is not None and with_special[:1] == [bos] else []

    def _eos_ids(self) -> set[int]:
        """Token ids that end a sample: the tokenizer's and generation config's EOS, and `<|endoftext|>` as the reference."""
        ids = {self.tokenizer.eos_token_id}
        generation = getattr(self.model, "generation_config", None)
        eos = getattr(generation, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos])
        ids.add(self.tokenizer.get_vocab().get("<|endoftext|>"))
        return {i for i in ids if i is not None}

    # -- batching and KV states ---------------------------------------------------------------------------------

    def _chunks(self, encoded: list[Encoded], copies: list[int], extra: list[int]) -> Iterator[list[tuple[int, range]]]:
        """Split the rows (`copies[i]` for prompt i) into forward passes of about `max_batch_tokens` rows x columns.

        A row of prompt i is `extra[i]` tokens longer than the prompt. A pass holds one preamble, and a prompt's rows
        are split across passes only when they do not fit in one on their own.
        """
        first_seen: dict[str, int] = {}
        order = sorted(range(len(encoded)), key=lambda i: first_seen.setdefault(encoded[i].preamble, i))
        chunk: list[tuple[int, range]] = []
        rows = width = 0
        for i in order:
            need = len(encoded[i]) + extra[i]
            if need > self.context_length:
                raise ModelError(f"{len(encoded[i])} prompt tokens + {extra[i]} more exceed the context of {self.context_length}")
            remaining = range(copies[i])
            while remaining:
                wider = max(width, need)
                other_preamble = chunk and encoded[chunk[0][0]].preamble != encoded[i].preamble
                if chunk and ((rows + len(remaining)) * wider > self.max_batch_tokens or other_preamble):
                    yield chunk
                    chunk, rows, width = [], 0, 0
                    continue
                take = max(1, min(len(remaining), self.max_batch_tokens // wider - rows))
                chunk.append((i, remaining[:take]))
                rows, width, remaining = rows + take, wider, remaining[take:]
        if chunk:
            yield chunk

    def _states(self, encoded: list[Encoded], copies: list[int], room: int) -> KVState:
        """State after each prompt, its row repeated `copies[i]` times, with `room` spare tokens per row.

        The prompts share one preamble. The plain path re-encodes every row in full.
        """
        repeat = [i for i, c in enumerate(copies) for _ in range(c)]
        if not self.reuse_prefix:
            rows = [encoded[i].pre + encoded[i].body for i in repeat]
            self.stats.prompt_tokens += sum(map(len, rows))
            return self._extend(KVState.empty(len(rows), self.device), rows).take(list(range(len(rows))), room)
        preamble = self._preamble(encoded[0])
        bodies = [e.body for e in encoded]
        groups = shared_prefixes(bodies)
        heads = [bodies[members[0]][:shared] for shared, members in groups]
        self.stats.prompt_tokens += sum(map(len, heads))
        state = self._extend(preamble.take([0] * len(heads), room=max(map(len, bodies))), heads)
        if len(groups) < len(bodies):  # each body's own rest, on a copy of its group's shared head
            tails = [bodies[i][shared:] for shared, members in groups for i in members]
            self.stats.prompt_tokens += sum(map(len, tails))
            owners = [g for g, (_, members) in enumerate(groups) for _ in members]
            state = self._extend(state.take(owners, room=max(map(len, tails))), tails)  # runs are consecutive: rows stay in order
        return state.take(repeat, room)

    def _preamble(self, encoded: Encoded) -> KVState:
        """The one-row state after a preamble, from the LRU or computed once (callers only ever read it via `take`).

        A new preamble starts from the cached one it shares the most leading tokens with: a module's channel preamble
        repeats all but the last few lines of its direct one.
        """
        cached = self._prefixes.get(encoded.preamble)
        if cached is not None:
            self.stats.prefix_hits += 1
            self._prefixes.move_to_end(encoded.preamble)
            return cached[1]
        self.stats.prefix_misses += 1
        common, closest = max(
            ((common_length(ids, encoded.pre), state) for ids, state in self._prefixes.values()),
            key=lambda pair: pair[0],
            default=(0, None),
        )
        shared = min(common, len(encoded.pre) - 1)  # at least one token is fed: its logits are the state's
        start = closest.prefix(shared, room=len(encoded.pre) - shared) if shared else KVState.empty(1, self.device)
        self.stats.prompt_tokens += len(encoded.pre) - shared
        state = self._extend(start, [encoded.pre[shared:]])
        self._prefixes[encoded.preamble] = (encoded.pre, state)
        if len(self._prefixes) > PREFIX_CACHE_SIZE:
            self._prefixes.popitem(last=False)
        return state

    def _extend(self, state: KVState, rows: list[list[int]]) -> KVState:
        """Feed each row's tokens after `state`, consuming its cache; the result holds the logits after the new tokens.

        A prefill too large for the new-token memory is fed in column slices, each on the cache of the one before.
        """
        width = max(map(len, rows), default=0)
        step = self.budget.columns_per_pass(len(rows), width, scored=False)
        for start in range(0, width, step):
            state = self._extend_once(state, [r[start : start + step] for r in rows])
        return state

    def _extend_once(self, state: KVState, rows: list[list[int]]) -> KVState:
        if not any(rows):
            return state
        ends = torch.tensor([[max(len(r) - 1, 0)] for r in rows], device=self.device)
        logits, cache, mask = forward(self.model, state, rows, ends, self._pad, self.stats)
        last = logits[:, 0].float()
        if state.last is not None:  # rows that fed nothing keep their previous logits
            fed_nothing = torch.tensor([not r for r in rows], device=self.device)
            last[fed_nothing] = state.last[fed_nothing]
        return KVState(cache, mask, last)

    # -- scoring and sampled text -------------------------------------------------------------------------------------

    def _score_rows(self, state: KVState, conts: list[list[int]]) -> list[float]:
        """Summed fp32 log-probs of each continuation after its row of `state` (the row's last logits give token 1)."""
        self.stats.scored_tokens += sum(map(len, conts))
        width = max(map(len, conts), default=0)
        targets = torch.zeros((len(conts), width), dtype=torch.long)
        for i, c in enumerate(conts):
            targets[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        targets = targets.to(self.device)
        pieces = [sampling.token_logps(state.last[:, None, :], targets[:, :1])]
        # A continuation's last token predicts nothing we score, so it is not fed; long ones go in column slices.
        fed = [c[:-1] for c in conts]
        step = self.budget.columns_per_pass(len(conts), width - 1, scored=True)
        for start in range(0, width - 1, step):
            logits, cache, mask = forward(self.model, state, [c[start : start + step] for c in fed], 0, self._pad, self.stats)
            state = KVState(cache, mask, None)
            pieces.append(sampling.token_logps(logits.float(), targets[:, 1 + start : 1 + start + logits.shape[1]]))
        token_logps = torch.cat(pieces, dim=1)
        lengths = torch.tensor([len(c) for c in conts], device=self.device)
        valid = torch.arange(width, device=self.device)[None, :] < lengths[:, None]
        return (token_logps * valid).sum(1).tolist()

    def _finished(self, drafts: list[Draft], logps: list[list[float]], params: SamplingParams) -> list[Draft]:
        """Give each draft the log-probs of its kept tokens (`logps[d]` may run past them: an EOS, a finished row's
        padding) and, with piecewise decoding, check its text against its ids decoded whole."""
        piecewise = self._piecewise  # the first failed check turns it off for later calls, not for this one's drafts
        for draft, row in zip(drafts, logps, strict=True):
            draft.logps = row[: len(draft.ids)]
            if piecewise:
                self._check_text(draft, params)
        return drafts

    def _push(self, draft: Draft, token: int, params: SamplingParams) -> None:
        """Append a sampled token to a draft and check, on the decoded text, whether it has stopped."""
        if token in self._eos and not params.ignore_eos:
            draft.done = True
            return
        searched = len(draft.settled_text)  # text before this was searched at earlier steps and cannot change
        draft.starts.append(len(draft.text))
        draft.ids.append(token)
        draft.text = self._text(draft)
        hits = [i for i in (draft.text.find(s, max(0, searched - len(s) + 1)) for s in params.stop if s) if i >= 0]
        if hits:
            draft.cut, draft.done = min(hits), True

    def _text(self, draft: Draft) -> str:
        """The draft's text: its settled text plus the decoded ids after it (all ids when the tokenizer needs that).

        Decoding ids, not single tokens, keeps multi-byte characters split across tokens intact; the ids after the
        settled ones are settled in turn once their text no longer ends in a half character (U+FFFD).
        """
        if not self._piecewise:
            return self.tokenizer.decode(draft.ids, skip_special_tokens=False)
        tail = self.tokenizer.decode(draft.ids[draft.settled :], skip_special_tokens=False)
        text = draft.settled_text + tail
        if not tail.endswith(REPLACEMENT):
            draft.settled, draft.settled_text = len(draft.ids), text
        return text

    def _check_text(self, draft: Draft, params: SamplingParams) -> None:
        """Guard piecewise decoding: if a draft's text is not its ids decoded whole, redo it the exact way, and from then on."""
        if draft.text == self.tokenizer.decode(draft.ids, skip_special_tokens=False):
            return
        if self._piecewise:
            log.warning("tokenizer %s decodes differently piece by piece; decoding whole texts from now on", type(self.tokenizer))
        self._piecewise = False
        exact = Draft()
        for token in draft.ids:
            if not exact.done:
                self._push(exact, token, params)
        exact.logps, exact.done = draft.logps[: len(exact.ids)], exact.done or draft.done
        vars(draft).update(vars(exact))
