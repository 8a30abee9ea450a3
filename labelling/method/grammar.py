"""Schema-constrained sampling: a Lark grammar of the DST and act completions, enforced token by token with llguidance.

The grammar is the language ``prompts.py`` writes and ``parsing.py`` reads back without an error: intent names, each
intent's slot arguments in schema order, categorical values, ``"[DELETE]"``, references to slots of the prior state,
act types with their fields, entity classes with their slot fields. Free-text values stay free (bounded in length).
A completion ends with ``]`` and a line break, which is the sampler's ``]\\n`` stop string.

The decode loop sees only :class:`RowConstraint`: ``allowed()`` gives the token mask before a draw and ``advance``
feeds the drawn token, so the hook is two calls wherever the loop draws a token.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import llguidance
import llguidance.hf
import numpy as np
import torch

from labelling.acts import ACT_FIELDS, EXTRA_ENTITY_FIELDS, GENERIC_ENTITY
from labelling.method.prompts import render_value
from labelling.schema import Schema, Service, Slot
from labelling.states import DELETE, State, strip_blanks

END = "]\n"  # closes the list; the sampler's stop string, so a constrained sample always stops there
MAX_TEXT = 120  # characters in one free-text value (the longest gold value of the bundled corpus has 76)
MAX_DIGITS = 6
MAX_ACTS = 8  # acts in one list (twice the most in the bundled corpus); repeats would be deduplicated anyway
GRAMMAR_CACHE_SIZE = 64
_BOOKING = "booking"  # the act service for booking details that belong to no one service (parser accepts it)
_ESCAPE = r"""\\(["\\'bfnrt]|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2})"""  # escapes both json.dumps and repr write
_TEXT = f"/\"([^\"\\\\\\n\\r]|{_ESCAPE}){{0,{MAX_TEXT}}}\"/ | /'([^'\\\\\\n\\r]|{_ESCAPE}){{0,{MAX_TEXT}}}'/"
_INT = f"/0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}}/"  # Python refuses leading zeros


def _lit(text: str) -> str:
    """A Lark string literal matching exactly ``text``."""
    return json.dumps(text)


def _alts(options: Iterable[str]) -> str:
    return " | ".join(dict.fromkeys(options))


def _string_forms(value: str) -> list[str]:
    """The source spellings Python reads back as ``value``: JSON's double quotes (DST) and repr's quotes (acts)."""
    return list(dict.fromkeys([json.dumps(value, ensure_ascii=False), repr(value)]))


def _ordered_subset(items: Sequence[str], separator: str, at_least_one: bool = True) -> str:
    """Items in the given order, each at most once: the only way to rule out duplicate keywords in a grammar."""
    sep = _lit(separator)
    options = [" ".join([items[i], *(f"({sep} {x})?" for x in items[i + 1 :])]) for i in range(len(items))]
    body = " | ".join(f"({o})" for o in options)
    return body if at_least_one else f"({body})?"


class SchemaGrammar:
    """The DST and act grammars of one schema, as Lark text, and matchers for them on one tokenizer."""

    def __init__(self, schema: Schema, tokenizer):
        self.schema = schema
        self.vocab = len(tokenizer)
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=self.vocab)  # ~1 s: build one per tokenizer
        self._fresh: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self.act_grammar = self._act_lark()

    # --- per-row constraints --------------------------------------------------------------------------

    def dst(self, prior: State) -> RowConstraint:
        """A constraint for one DST sample written after ``[agent.``; references may name only ``prior``'s slots."""
        return RowConstraint(self._matcher(self.dst_lark(prior)), self.vocab)

    def acts(self) -> RowConstraint:
        """A constraint for one act sample written after ``[``."""
        return RowConstraint(self._matcher(self.act_grammar), self.vocab)

    def accepts(self, completion: str, grammar: str) -> bool:
        """Whether ``grammar`` accepts the whole completion text (tokenised as the sampler's tokenizer would)."""
        matcher = self._matcher(grammar)
        tokens = self._tokenizer.tokenize_str(completion)
        return matcher.consume_tokens(tokens) and matcher.is_accepting() and not matcher.is_error()

    def _matcher(self, grammar: str) -> llguidance.LLMatcher:
        """A fresh matcher: built once per grammar text, then copied (a copy costs far less than a build)."""
        fresh = self._fresh.get(grammar)
        if fresh is None:
            fresh = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
            if fresh.is_error():
                raise ValueError(f"schema grammar does not compile: {fresh.get_error()}")
            self._fresh[grammar] = fresh
            if len(self._fresh) > GRAMMAR_CACHE_SIZE:
                self._fresh.popitem(last=False)
        else:
            self._fresh.move_to_end(grammar)
        return fresh.deep_copy()

    # --- DST ------------------------------------------------------------------------------------------

    def dst_lark(self, prior: State) -> str:
        """The DST grammar: ``no_change()``, or one call per changed service in schema order, then ``]`` + newline."""
        refs = [
            f"agent.state.{svc}.{self.schema.service(svc).slot(slot).identifier}"
            for svc, slots in strip_blanks(prior).items()
            if svc in self.schema
            for slot in slots
            if self.schema.service(svc).slot(slot) is not None
        ]
        rules = {"text": _TEXT}
        if refs:
            rules["ref"] = _alts(_lit(r) for r in sorted(refs))
        calls = []
        for service in self.schema.services:
            calls.append(f"call_{service.name}")
            rules[f"call_{service.name}"] = self._call_rule(service, rules, bool(refs))
        rules["calls"] = _ordered_subset(calls, ", agent.")
        rules["start"] = f'("no_change()" | calls) {_lit(END)}'
        return _lark(rules)

    def _call_rule(self, service: Service, rules: dict[str, str], refs: bool) -> str:
        alternatives = []
        for intent in service.intents:
            args = []
            for name in intent.slots:
                slot = service.slot(name)
                rule = f"v_{service.name}_{slot.identifier}"
                rules[rule] = self._dst_value(slot, refs)
                args.append(f"{_lit(slot.identifier + '=')} {rule}")
            alternatives.append(f'{_lit(intent.name + "(")} ({_ordered_subset(args, ", ")}) ")"')
        return _alts(alternatives)

    @staticmethod
    def _dst_value(slot: Slot, refs: bool) -> str:
        options = [_lit(f) for v in slot.values for f in _value_forms(slot, v)] if slot.categorical else ["text"]
        options += [_lit(f) for f in _string_forms(DELETE)]
        if refs:
            options.append("ref")
        return _alts(options)

    # --- acts -----------------------------------------------------------------------------------------

    def _act_lark(self) -> str:
        """The act grammar: up to ``MAX_ACTS`` act constructor calls with keyword fields in ``ACT_FIELDS`` order."""
        rules = {"text": _TEXT, "int": _INT, "value": "text | int"}
        union = self.schema.identifiers
        entities = []
        for service in self.schema.services:
            name = f"entity_{service.name}"
            rules[name] = self._entity_rule(service.entity_class(), [s.identifier for s in service.slots])
            entities.append(name)
        rules["entity_generic"] = self._entity_rule(GENERIC_ENTITY, list(union))
        rules["entity"] = _alts([*entities, "entity_generic"])
        services = [*self.schema.names, _BOOKING]
        rules["service"] = _alts(_lit(f) for s in services for f in _string_forms(s))
        for service in services:
            ids = union if service == _BOOKING else [s.identifier for s in self.schema.service(service).slots]
            rules[f"ids_{service}"] = _alts(_lit(f) for i in ids for f in _string_forms(i))
        rules["ids_any"] = _alts(_lit(f) for i in union for f in _string_forms(i))
        rules["request_args"] = _alts(
            [
                *(
                    f'({_alts(_lit("service=" + f) for f in _string_forms(s))}) ", values=[" (ids_{s} (", " ids_{s})*)? "]"'
                    for s in services
                ),
                '"service=" service',
                '"values=[" (ids_any (", " ids_any)*)? "]"',
            ]
        )
        fields = {"entity": '"entity=" entity', "service": '"service=" service', "num_choices": '"num_choices=" value'}
        acts = []
        for kind, names in ACT_FIELDS.items():
            if kind == "Request":
                args = "request_args?"
            else:
                args = _ordered_subset([fields[n] for n in names], ", ", at_least_one=False) if names else ""
            rules[f"act_{kind.lower()}"] = " ".join(part for part in (_lit(kind + "("), args, '")"') if part)
            acts.append(f"act_{kind.lower()}")
        rules["act"] = _alts(acts)
        more = ""
        for _ in range(MAX_ACTS - 1):
            more = f'(", " act {more})?'
        rules["start"] = f"(act {more})? {_lit(END)}"
        return _lark(rules)

    @staticmethod
    def _entity_rule(kind: str, identifiers: Sequence[str]) -> str:
        fields = [_lit(f"{i}=") + " value" for i in [*identifiers, *EXTRA_ENTITY_FIELDS]]
        return f'{_lit(kind + "(")} {_ordered_subset(fields, ", ", at_least_one=False)} ")"'


def _value_forms(slot: Slot, value: str) -> list[str]:
    """The spellings of a categorical value: as prompts render it (a bare int or JSON), and with repr's quotes."""
    rendered = render_value(slot, value)
    return [rendered] if rendered == value else _string_forms(value)


def _lark(rules: dict[str, str]) -> str:
    """Lark text with ``start`` first (llguidance and xgrammar both start there)."""
    order = ["start", *(r for r in rules if r != "start")]
    return "\n".join(f"{name}: {rules[name]}" for name in order) + "\n"


class RowConstraint:
    """One sample's position in the grammar: the tokens allowed next, advanced with each drawn token."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab: int):
        self._matcher = matcher
        self._vocab = vocab

    def allowed(self) -> torch.Tensor:
        """A bool mask over the tokenizer's vocabulary of the tokens that keep the completion inside the grammar."""
        packed = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)  # token t is bit t % 8 of byte t // 8
        return torch.from_numpy(np.unpackbits(packed, count=self._vocab, bitorder="little").view(np.bool_))

    def advance(self, token: int) -> None:
        """Feed the drawn token; a token outside the mask is a bug in the caller, so it raises."""
        if not self._matcher.consume_token(token):
            raise RuntimeError(f"token {token} is outside the schema grammar: {self._matcher.get_error()}")
