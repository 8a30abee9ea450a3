"""Scores of predicted labels against gold: joint goal accuracy, turn accuracy, state-slot F1 and act F1.

These are monitoring numbers only. Every function here needs gold labels, and nothing it computes may flow back
into labelling: no prompt, retrieved example, candidate score or stored label reads them. Turns without gold are
not counted (they are neither right nor wrong), so an unlabelled corpus simply yields ``n_dst == n_acts == 0``.

The headline numbers are exact: ``jga`` and ``turn_acc`` compare values for equality, ``state_f1`` counts
(service, slot, value) triples and ``acts_f1`` counts (act type, domain, slot) triples. Gold is normalised to the
schema's spellings when a corpus is read (the normaliser predictions go through), so exact matching is fair.
The reference's lenient numbers are kept beside them and named as such: ``jga_fuzzy`` and ``turn_acc_fuzzy``
(a value matches when it is a near-substring of the gold one, docs/method.md §11.1) and the fuzzy act families
``act_slots`` and ``act_values`` (§11.2); ``act_types`` compares act types alone.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

from rapidfuzz import fuzz

from labelling.acts import Act, Entity
from labelling.states import DELETE, State, flatten
from labelling.turns import Turn

STATE_MATCH_THRESHOLD = 95.0  # a value matches when partial_ratio is strictly above this, as in the reference
ACT_MATCH_THRESHOLD = 90.0  # an act element maps to a gold one when partial_ratio is at least this
EXACT_ACT_FAMILIES = ("acts", "act_types")  # exact sets: (type, domain, slot) triples, act types alone
FUZZY_ACT_FAMILIES = ("act_slots", "act_values")  # the reference's lenient slot-name and value families
ACT_FAMILIES = (*EXACT_ACT_FAMILIES, *FUZZY_ACT_FAMILIES)
F1_FAMILIES = ("state", *ACT_FAMILIES)
DST_METRICS = ("jga", "jga_fuzzy", "turn_acc", "turn_acc_fuzzy")
# Per-turn error counts kept beside the totals, so a group's breakdown adds up across partitions like the rest.
MISSED, INVENTED = "missed", "invented"
ERROR_PREFIX = "err:"  # err:<missed|invented>:<slot|act>:<name>
NO_SLOT = ""  # the slot of a triple for an act that names no slot (Goodbye(), Confirm(entity=Train()))
# The title of each summary figure wherever one is shown (status, evaluate, the HTML report, the export card, label-split,
# the quality table): the words README's metric glossary defines, so a column means the same in every table.
METRIC_TITLES = {
    "jga": "JGA (exact)",
    "jga_fuzzy": "JGA (fuzzy, reference)",
    "turn_acc": "turn accuracy",
    "state_f1": "slot F1",
    "acts_f1": "act F1",
    "act_types_f1": "act-type-only F1",
    "act_slots_f1": "act slot F1 (fuzzy, reference)",
    "act_values_f1": "act value F1 (fuzzy, reference)",
}


# --- dialogue states -----------------------------------------------------------------------------------------


def values_match(pred: str, gold: str) -> bool:
    """The reference's lenient value test (``partial_ratio > 95``: ``cheap`` matches ``cheaper``); DELETE matches only itself."""
    if pred == gold:
        return True
    # partial_ratio is a substring test: without this guard "[DELETE]" would match a gold value "DELETE".
    if DELETE in (pred, gold):
        return False
    return fuzz.partial_ratio(pred, gold) > STATE_MATCH_THRESHOLD


def states_match(pred: State | None, gold: State | None, fuzzy: bool = False) -> bool:
    """Whether two states (or deltas) set the same slots to equal values (``fuzzy``: the reference's lenient test)."""
    p = {k: str(v) for k, v in flatten(pred).items()}
    g = {k: str(v) for k, v in flatten(gold).items()}
    if p.keys() != g.keys():
        return False
    return all(values_match(p[k], g[k]) if fuzzy else p[k] == g[k] for k in g)


def turn_dst_metrics(pred_state: State | None, pred_delta: State | None, gold_state: State, gold_delta: State) -> dict[str, bool]:
    """One turn's exact ``jga`` and ``turn_acc`` (on deltas) and their reference-compatible ``_fuzzy`` forms."""
    return {
        "jga": states_match(pred_state, gold_state),
        "jga_fuzzy": states_match(pred_state, gold_state, fuzzy=True),
        "turn_acc": states_match(pred_delta, gold_delta),
        "turn_acc_fuzzy": states_match(pred_delta, gold_delta, fuzzy=True),
    }


def state_triples(state: State | None) -> set[tuple[str, str, str]]:
    """(service, slot, value) for every set slot of a cumulative state."""
    return {(svc, slot, str(value)) for (svc, slot), value in flatten(state).items()}


def turn_state_counts(pred_state: State | None, gold_state: State) -> dict[str, int]:
    """One turn's ``state_tp/fp/fn`` over (service, slot, value) triples, and which slots were missed or invented."""
    pred, gold = state_triples(pred_state), state_triples(gold_state)
    out = {"state_tp": len(pred & gold), "state_fp": len(pred - gold), "state_fn": len(gold - pred)}
    errors: Counter[str] = Counter()
    errors.update(_error_key(MISSED, "slot", f"{svc}-{slot}") for svc, slot, _ in gold - pred)
    errors.update(_error_key(INVENTED, "slot", f"{svc}-{slot}") for svc, slot, _ in pred - gold)
    return {**out, **dict(sorted(errors.items()))}  # sorted: set order follows PYTHONHASHSEED, output bytes must not


def _error_key(kind: str, what: str, name: str) -> str:
    return f"{ERROR_PREFIX}{kind}:{what}:{name}"


# --- dialogue acts -------------------------------------------------------------------------------------------


def act_domain(act: Act) -> str:
    """The domain an act is about: its service, else its entity's class (lower-cased), else none (``""``)."""
    if act.service:
        return act.service
    return act.entity.kind.lower() if act.entity is not None else ""


def act_triples(acts: Iterable[Act]) -> set[tuple[str, str, str]]:
    """(act type, domain, slot) for each slot an act names; an act naming no slot gives one triple with slot ``""``.

    Entity fields, requested slots and ``num_choices`` (as ``choice``, the field gold uses) are the slots; values
    are not part of the triple (the fuzzy ``act_values`` family looks at them).
    """
    out: set[tuple[str, str, str]] = set()
    for act in acts:
        domain = act_domain(act)
        slots = [*_act_slots(act)] + (["choice"] if act.num_choices is not None else [])
        out.update((act.kind, domain, slot) for slot in slots or [NO_SLOT])
    return out


def _act_slots(act: Act) -> Iterator[str]:
    """Slot names of one act: an entity's field names, a request's requested slots."""
    for _, value in act.arguments():
        if isinstance(value, Entity):
            yield from (f for f, _ in value.fields)
        elif isinstance(value, tuple):
            yield from value


def _act_attribute_names(act: Act) -> Iterator[str]:
    """Attribute names as the reference counts them: an entity contributes its field names instead of ``entity``."""
    for name, value in act.arguments():
        if isinstance(value, Entity):
            yield from (field for field, _ in value.fields)
        else:
            yield name


def _act_values(act: Act) -> Iterator[str]:
    """JSON of each attribute value of one act; entity fields are flattened one level.

    Request's ``values`` tuple yields one element per requested slot (``'"price_range"'``) rather than the
    reference's single ``'["price_range", "area"]'``: one extra requested slot then costs one false positive
    instead of making the whole request wrong.
    """
    for _, value in act.arguments():
        if isinstance(value, Entity):
            items: Iterable[object] = (v for _, v in value.fields)
        elif isinstance(value, tuple):
            items = value
        else:
            items = (value,)
        yield from (json.dumps(v) for v in items)


def act_elements(acts: Iterable[Act]) -> dict[str, list[str]]:
    """The elements of the reference's lenient families (slot names, JSON values), de-duplicated in first-seen order."""
    acts = list(acts)
    # dict.fromkeys is a set with a stable order, so "the first gold element that matches" does not depend on hashing.
    return {
        "act_slots": list(dict.fromkeys(s for a in acts for s in _act_attribute_names(a))),
        "act_values": list(dict.fromkeys(v for a in acts for v in _act_values(a))),
    }


def _align(pred: list[str], gold: list[str]) -> set[str]:
    """Each predicted element replaced by its gold counterpart: the identical one, else the first with partial_ratio >= 90.

    The reference takes the first fuzzy match only; checking for an identical element first keeps ``book_day``
    from being taken for a gold ``day`` that happens to come earlier.
    """
    known = set(gold)

    def counterpart(p: str) -> str:
        if p in known:
            return p
        return next((g for g in gold if fuzz.partial_ratio(p, g) >= ACT_MATCH_THRESHOLD), p)

    return {counterpart(p) for p in pred}


def _set_counts(family: str, pred: set, gold: set) -> dict[str, int]:
    return {f"{family}_tp": len(pred & gold), f"{family}_fp": len(pred - gold), f"{family}_fn": len(gold - pred)}


def turn_act_metrics(pred_acts: Iterable[Act] | None, gold_acts: Iterable[Act]) -> dict[str, int]:
    """One turn's ``{family}_tp``, ``_fp`` and ``_fn`` for every act family, and the act types missed or invented."""
    pred_acts, gold_acts = list(pred_acts or []), list(gold_acts)
    pred_t, gold_t = act_triples(pred_acts), act_triples(gold_acts)
    out = _set_counts("acts", pred_t, gold_t)
    out.update(_set_counts("act_types", {a.kind for a in pred_acts}, {a.kind for a in gold_acts}))
    pred, gold = act_elements(pred_acts), act_elements(gold_acts)
    for family in FUZZY_ACT_FAMILIES:
        out.update(_set_counts(family, _align(pred[family], gold[family]), set(gold[family])))
    errors: Counter[str] = Counter()
    errors.update(_error_key(MISSED, "act", kind) for kind, _, _ in gold_t - pred_t)
    errors.update(_error_key(INVENTED, "act", kind) for kind, _, _ in pred_t - gold_t)
    return {**out, **dict(sorted(errors.items()))}  # sorted, as in turn_state_counts


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Micro-averaged precision, recall and F1 from summed counts; each is 0 when its denominator is 0."""
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


# --- aggregation ---------------------------------------------------------------------------------------------


class MetricsAccumulator:
    """Running totals over turns; ``summary()`` turns them into ratios.

    Only integer counts are kept, so accumulators of separate partitions (or workers) combine exactly with
    ``+`` or ``merge`` and survive a JSON round trip through ``to_dict``/``from_dict``.
    """

    def __init__(self, totals: Mapping[str, int] | None = None):
        self.totals: Counter[str] = Counter(totals or {})

    def add_dst(
        self, pred_state: State | None, pred_delta: State | None, gold_state: State | None, gold_delta: State | None
    ) -> dict[str, bool] | None:
        """Count one turn's state prediction; returns its per-turn metrics, or None (not counted) when gold is missing."""
        if gold_state is None or gold_delta is None:
            return None
        turn = turn_dst_metrics(pred_state, pred_delta, gold_state, gold_delta)
        self.totals.update({"n_dst": 1, **{k: int(v) for k, v in turn.items()}, **turn_state_counts(pred_state, gold_state)})
        return turn

    def add_acts(self, pred_acts: Iterable[Act] | None, gold_acts: Iterable[Act] | None) -> dict[str, int] | None:
        """Count one turn's act prediction (None counts as no acts); returns its per-turn counts, or None without gold."""
        if gold_acts is None:
            return None
        turn = turn_act_metrics(pred_acts, gold_acts)
        self.totals.update({"n_acts": 1, **turn})
        return turn

    def add_turn(
        self, turn: Turn, pred_state: State | None, pred_delta: State | None, pred_acts: Iterable[Act] | None
    ) -> dict[str, bool | int]:
        """Count one labelled turn against the gold it carries; returns whichever per-turn metrics had gold."""
        dst = self.add_dst(pred_state, pred_delta, turn.slot_values, turn.turn_slot_values)
        acts = self.add_acts(pred_acts, turn.system_response_acts)
        return {**(dst or {}), **(acts or {})}

    def merge(self, other: MetricsAccumulator) -> MetricsAccumulator:
        """Add ``other``'s totals into this accumulator (in place) and return it."""
        # Counter.update keeps zero entries, unlike Counter.__add__; either is correct, this one is also in place.
        self.totals.update(other.totals)
        return self

    def __add__(self, other: MetricsAccumulator) -> MetricsAccumulator:
        return MetricsAccumulator(self.totals).merge(other)

    def __radd__(self, other: object) -> MetricsAccumulator:
        # sum() starts from 0; treating it as empty lets sum(per_partition) work without a start value.
        if other == 0:
            return MetricsAccumulator(self.totals)
        return NotImplemented

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MetricsAccumulator) and +self.totals == +other.totals

    def to_dict(self) -> dict[str, int]:
        """The raw counts, JSON-serialisable, for storing a partition's result."""
        return dict(self.totals)

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> MetricsAccumulator:
        """Inverse of :meth:`to_dict`."""
        return cls(data)

    def summary(self) -> dict[str, float | int]:
        """``DST_METRICS``, ``{family}_{precision,recall,f1}`` for each of ``F1_FAMILIES``, ``n_dst`` and ``n_acts``."""
        t = self.totals
        out: dict[str, float | int] = {name: _ratio(t[name], t["n_dst"]) for name in DST_METRICS}
        for family in F1_FAMILIES:
            scores = precision_recall_f1(t[f"{family}_tp"], t[f"{family}_fp"], t[f"{family}_fn"])
            out.update(zip((f"{family}_precision", f"{family}_recall", f"{family}_f1"), scores, strict=True))
        out.update(n_dst=t["n_dst"], n_acts=t["n_acts"])
        return out

    def errors(self, top: int | None = None) -> dict[str, list[tuple[str, int, int]]]:
        """The error breakdown: per state slot (``slots``) and per act type (``acts``), ``(name, missed, invented)``
        sorted by missed + invented, most first (the ``top`` first when given)."""
        out: dict[str, list[tuple[str, int, int]]] = {}
        for what, family in (("slot", "slots"), ("act", "acts")):
            names = {k.split(":", 3)[3] for k in self.totals if k.startswith(ERROR_PREFIX) and k.split(":")[2] == what}
            rows = [(n, self.totals[_error_key(MISSED, what, n)], self.totals[_error_key(INVENTED, what, n)]) for n in names]
            rows.sort(key=lambda r: (-(r[1] + r[2]), r[0]))
            out[family] = rows[:top] if top is not None else rows
        return out
