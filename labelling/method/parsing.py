"""Completion text -> a state update or an act list, with Python's ``ast`` parser and no execution of model text.

Each call of the list is read on its own, so one bad call (an unknown intent, a duplicate argument, a
reference to a missing slot) costs only itself: the rest of the update is kept and the problem recorded.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass, field

from labelling.acts import ACT_FIELDS, EXTRA_ENTITY_FIELDS, GENERIC_ENTITY, Act, Entity
from labelling.schema import Schema, Service
from labelling.states import DELETE, State, apply_delta, clean_value

_DELETE_VALUES = frozenset({DELETE.lower(), "", "delete"})  # compared lower-cased
_PLAIN = (str, int, float, bool, type(None))  # the only literal types a label holds; bytes, sets, dicts... are refused
# Deeply nested model text (thousands of "-" or "not") makes the parser recurse until it gives up; that is bad text, not a crash.
_TOO_DEEP = (RecursionError, MemoryError)
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


@dataclass
class DstParse:
    """The delta read from a DST completion, applied to the prior state; ``errors`` lists what was dropped."""

    delta: State
    state: State
    calls: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when nothing usable was read (not even ``no_change``)."""
        return self.calls == 0


@dataclass
class ActParse:
    """The acts read from an act completion; ``errors`` lists the parts that were dropped."""

    acts: list[Act]
    items: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when nothing usable was read: no list at all, or only items that are not acts (``[]`` is a valid answer)."""
        return not self.acts and bool(self.errors)


def outer_list(text: str) -> str:
    """The first bracketed list in ``text``, closed if generation stopped inside it; quotes are respected."""
    start = text.find("[")
    if start < 0:
        return ""
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for i, ch in enumerate(text[start:], start):
        if quote:
            escaped, quote = (False, quote) if escaped else (ch == "\\", None if ch == quote else quote)
        elif ch in "\"'":
            quote = ch
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                return text[start : i + 1]
    tail = text[start:].rstrip().rstrip(",")
    return tail + (quote or "") + "".join(reversed(stack))


def reference_reads_cut(prefix: str, text: str) -> bool:
    """Whether the reference can read a completion that ran out of new tokens (docs/deviations.md, N2).

    It repairs such text one way only: one `]` appended when a list is left open, the text cut where its first list
    closes (brackets counted, quotes not), then the whole executed as Python; anything else fails and reads as "no
    change" / no acts. Here that is a syntax check (nothing is executed): ``find_hotel(area="east")`` passes,
    ``find_hotel(name="acorn gu`` does not.
    """
    code = prefix + text
    if code.count("[") > code.count("]"):
        code += "]"
    depth = 0
    for i, ch in enumerate(code):
        depth += (ch == "[") - (ch == "]")
        if depth == 0 and ch == "]":
            code = code[: i + 1]
            break
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            ast.parse(code, mode="eval")
    except (SyntaxError, ValueError, *_TOO_DEEP):
        return False
    return True


def split_items(list_text: str) -> list[str]:
    """The top-level items of ``[a, b(c, d), ...]`` as source strings, without parsing them."""
    inner = list_text.strip()[1:-1]
    items, depth, quote, escaped, current = [], 0, None, False, []
    for ch in inner:
        if quote:
            escaped, quote = (False, quote) if escaped else (ch == "\\", None if ch == quote else quote)
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    items.append("".join(current).strip())
    return [i for i in items if i]


def parse_items(text: str) -> tuple[list[ast.expr], list[str]]:
    """The list's items as ASTs; an item that does not parse is reported and skipped, the others kept."""
    source = outer_list(text)
    if not source:
        return [], [f"no list found in {text[:60]!r}"]
    with warnings.catch_warnings():  # model text with odd escapes ("\ ") makes the parser warn; it is data, not our code
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return _parse_items(source)


def _parse_items(source: str) -> tuple[list[ast.expr], list[str]]:
    """The whole list in one parse when it is valid Python, else item by item."""
    try:
        tree = ast.parse(source, mode="eval").body
        if isinstance(tree, ast.List):
            return list(tree.elts), []
    except (SyntaxError, ValueError, *_TOO_DEEP):
        pass
    nodes, errors = [], []
    for item in split_items(source):
        try:
            nodes.append(ast.parse(item, mode="eval").body)
        except (SyntaxError, ValueError, *_TOO_DEEP):
            errors.append(f"unparseable item {item[:60]!r}")
    return nodes, errors


def _dotted(node: ast.expr) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _literal(node: ast.expr) -> object:
    """A string, number, bool or None (or a list of them), read without evaluating anything; else ValueError."""
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    try:
        value = ast.literal_eval(node)
    except _TOO_DEEP as e:
        raise ValueError("expression nested too deeply") from e
    if not isinstance(value, _PLAIN):
        raise ValueError(f"a {type(value).__name__} is not a label value")
    return value


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class DstParser:
    """Reads ``[agent.find_hotel(area="east"), ...]`` into a delta over the prior state."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self._intents = {i.name: svc for svc in schema.services for i in svc.intents}

    def parse(self, text: str, prior: State) -> DstParse:
        """Parse a DST completion (with its ``[agent.`` prefix) against ``prior``."""
        nodes, errors = parse_items(text)
        delta: State = {}
        calls = 0
        for node in nodes:
            try:
                calls += self._call(node, prior, delta, errors)
            except _TOO_DEEP:
                errors.append("a call nested too deeply to read")
        return DstParse(delta=delta, state=apply_delta(prior, delta), calls=calls, errors=errors)

    def _call(self, node: ast.expr, prior: State, delta: State, errors: list[str]) -> bool:
        name = _dotted(node.func) if isinstance(node, ast.Call) else None
        if not name or len(name) != 2 or name[0] != "agent":
            errors.append(f"not an agent call: {ast.unparse(node)[:60]}")
            return False
        if name[1] == "no_change":
            return True
        service = self._intents.get(name[1])
        if service is None:
            errors.append(f"unknown intent {name[1]!r}")
            return False
        if node.args:
            errors.append(f"{name[1]}: positional arguments ignored")
        intent = next(i for i in service.intents if i.name == name[1])
        seen: set[str] = set()
        out = delta.setdefault(service.name, {})
        for kw in node.keywords:
            self._argument(service, intent.slots, kw, prior, out, seen, errors)
        if not delta[service.name]:
            del delta[service.name]
        return True

    def _argument(
        self, service: Service, allowed, kw: ast.keyword, prior: State, out: dict, seen: set, errors: list[str]
    ) -> None:
        slot = service.slot_by_identifier(kw.arg or "")
        if slot is None or slot.name not in allowed:
            errors.append(f"{service.name}: unknown argument {kw.arg!r}")
            return
        if slot.name in seen:
            errors.append(f"{service.name}: {kw.arg} given twice, first kept")
            return
        seen.add(slot.name)
        try:
            value = self._value(kw.value, prior)
        except (ValueError, KeyError) as e:
            errors.append(f"{service.name}.{kw.arg}: {e}")
            return
        if value is not None:
            out[slot.name] = DELETE if value.strip().lower() in _DELETE_VALUES else clean_value(value)

    def _value(self, node: ast.expr, prior: State) -> str | None:
        path = _dotted(node)
        if path and path[:2] == ["agent", "state"] and len(path) == 4:
            service = self.schema.service(path[2]) if path[2] in self.schema else None
            slot = service.slot_by_identifier(path[3]) if service else None
            value = prior.get(path[2], {}).get(slot.name if slot else path[3])
            if not value:
                raise KeyError(f"reference to unset slot {'.'.join(path[2:])}")
            return value
        value = _literal(node)
        if value is None:
            return None
        if isinstance(value, list):
            raise ValueError("a list is not a slot value")
        return _as_text(value)


class ActParser:
    """Reads ``[Inform(entity=Hotel(area='east')), Goodbye()]`` into typed acts, dropping what does not fit."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self._entities = {svc.entity_class(): svc for svc in schema.services}

    def parse(self, text: str) -> ActParse:
        """Parse an act completion (with its ``[`` prefix)."""
        nodes, errors = parse_items(text)
        acts: list[Act] = []
        for node in nodes:
            try:
                act = self._act(node, errors)
            except _TOO_DEEP:
                act = None
                errors.append("an act nested too deeply to read")
            if act is not None and act not in acts:
                acts.append(act)
        return ActParse(acts=acts, items=len(nodes), errors=errors)

    def _act(self, node: ast.expr, errors: list[str]) -> Act | None:
        kind = node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None
        if kind not in ACT_FIELDS:
            errors.append(f"not an act: {ast.unparse(node)[:60]}")
            return None
        args: dict[str, object] = {}
        positional = [("entity", a) for a in node.args if isinstance(a, ast.Call)]  # Inform(Hotel(...)) means the entity
        for name, value in [*((kw.arg, kw.value) for kw in node.keywords), *positional]:
            if name not in ACT_FIELDS[kind] or name in args:
                errors.append(f"{kind}: argument {name!r} dropped")
                continue
            try:
                args[name] = self._field(name, value, errors)
            except (ValueError, TypeError, SyntaxError) as e:
                errors.append(f"{kind}.{name}: {e}")
        return Act(kind, **{k: v for k, v in args.items() if v is not None})

    def _field(self, name: str, node: ast.expr, errors: list[str]) -> object:
        if name == "entity":
            return self._entity(node, errors)
        value = _literal(node)
        if name == "values":
            items = value if isinstance(value, list) else [value]
            return tuple(dict.fromkeys(_as_text(v) for v in items if v is not None))
        if name == "service":
            text = _as_text(value).lower()
            if text not in self.schema and text != "booking":
                raise ValueError(f"unknown service {text!r}")
            return text
        return None if value is None else _as_text(value)

    def _entity(self, node: ast.expr, errors: list[str]) -> Entity | None:
        kind = node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None
        service = self._entities.get(kind)
        if kind != GENERIC_ENTITY and service is None:
            raise ValueError(f"unknown entity {kind!r}")
        fields: dict[str, str] = {}
        for kw in node.keywords:
            allowed = kw.arg in EXTRA_ENTITY_FIELDS or (
                service.slot_by_identifier(kw.arg) if service else _any_slot(self.schema, kw.arg)
            )
            if not allowed:
                errors.append(f"{kind}: unknown field {kw.arg!r} dropped")  # recorded for the off-schema rate
                continue
            if kw.arg in fields:
                continue
            value = _literal(kw.value)
            if value is not None and not isinstance(value, list):
                fields[kw.arg] = _as_text(value).strip().lower()
        # A service's entity without fields still names the act's domain (Confirm(entity=Train())); Entity() names none.
        return Entity(kind, tuple(fields.items())) if fields or service is not None else None


def _any_slot(schema: Schema, identifier: str | None) -> bool:
    return any(svc.slot_by_identifier(identifier or "") for svc in schema.services)
