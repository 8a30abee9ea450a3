"""Reading untrusted input within bounds (README, Reliability): JSON is measured as it streams in, before it is parsed,
so a small file that would parse into gigabytes (``[{},{},...]``, 20 million keys) or nest past any stack is refused in
one line; YAML is composed and measured with every alias expanded before any value is built; and a value quoted in an
error is cut to a few hundred characters, so no "one-line" error can grow to the size of the input.

The byte limits themselves (how much of a file is read at all) stay where each file is read; this module bounds what
those bytes may turn into.
"""

from __future__ import annotations

import functools
import os
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a backslash escape inside a JSON string: \" and \\ hide quotes
_OPENS, _CLOSES = frozenset(b"{["), frozenset(b"}]")
_BLANKS = b" \t\r\n"
_QUOTE = ord('"')
_QUOTE_CHARS = 300  # the most of a value an error message quotes

# A corpus, schema or job file that starts with one of these is UTF-16 or UTF-32, which json would read on its own
# (and then find "the wrong shape"); the package reads UTF-8 only, so it says so.
_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


@functools.cache
def _numpy():
    """numpy, imported on first use (it costs a tenth of a second every command would pay), and the nesting step of
    each byte outside strings."""
    import numpy as np

    step = np.zeros(256, dtype=np.int8)
    step[list(_OPENS)], step[list(_CLOSES)] = 1, -1
    return np, step


class TooBig(ValueError):
    """JSON or YAML past one of the bounds; ``bound`` says which (ELEMENTS, NESTING or NODES), so the caller's one-line
    error can name the setting that raises it."""

    def __init__(self, message: str, bound: str):
        super().__init__(message)
        self.bound = bound


ELEMENTS, NESTING, NODES = "elements", "nesting", "nodes"


@dataclass
class JsonMeter:
    """Counts the elements (values and object keys) and the nesting depth of JSON fed to it in chunks, without parsing
    it, and raises :class:`TooBig` as soon as either passes its limit, so a bomb is refused after a bounded read.

    Strings are skipped (their quotes are found after escapes are removed), so braces and commas in text do not count.
    Elements are counted exactly for valid JSON: each ``:`` adds a key and its value, each ``,`` one more value, each
    non-empty ``{`` or ``[`` its first one, and the top value one; the parser reports whatever is not valid JSON.
    """

    max_elements: int
    max_depth: int
    elements: int = 1
    depth: int = 0
    _in_string: bool = False
    _escaped: bool = False  # the last chunk ended with a backslash inside a string: the next byte is escaped
    _pending: bytes = b""  # an opening bracket that ended the last chunk

    def feed(self, chunk: bytes) -> None:
        """Count ``chunk``, the next bytes of the document; TooBig once a limit is passed."""
        if self._escaped:
            chunk, self._escaped = chunk[1:], False
        if b"\\" in chunk:
            chunk = _ESCAPE.sub(b"", chunk)
            if chunk.endswith(b"\\"):
                chunk, self._escaped = chunk[:-1], True
        outside = self._pending + self._outside(chunk)
        # An opening bracket at the end waits for the next chunk, which says whether its container is empty.
        self._pending = outside[-1:] if outside[-1:] in (b"{", b"[") else b""
        outside = outside[: len(outside) - len(self._pending)]
        if not outside:
            return
        opens = outside.count(b"{") + outside.count(b"[")
        empty = outside.count(b"{}") + outside.count(b"[]")
        self.elements += outside.count(b":") + outside.count(b",") + opens - empty
        if self.elements > self.max_elements:
            raise TooBig(f"holds more than {self.max_elements:,} JSON values and keys", ELEMENTS)
        self._nest(outside, opens - empty + (empty > 0))

    def _outside(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` outside strings, blanks removed; each string's closing quote stays, standing for it.

        A byte is inside a string when an odd number of quotes (escapes already gone) precede it, counting the opening
        quote itself; numpy finds that parity for a whole chunk at once."""
        if not chunk or (not self._in_string and b'"' not in chunk):
            return chunk.translate(None, _BLANKS)
        np, _ = _numpy()
        codes = np.frombuffer(chunk, dtype=np.uint8)
        inside = (np.cumsum(codes == _QUOTE, dtype=np.int32) + self._in_string) & 1
        self._in_string = bool(inside[-1])
        return codes[inside == 0].tobytes().translate(None, _BLANKS)

    def _nest(self, outside: bytes, rise: int) -> None:
        """Follow the nesting depth through ``outside``; only a chunk that could pass the limit is walked byte by byte
        (``rise`` bounds how far it can climb: its non-empty containers, and one for any empty ones)."""
        if self.depth + rise > self.max_depth:
            np, step = _numpy()
            steps = np.cumsum(step[np.frombuffer(outside, dtype=np.uint8)], dtype=np.int64)
            if self.depth + int(steps.max()) > self.max_depth:
                raise TooBig(f"nests deeper than {self.max_depth:,} levels", NESTING)
        self.depth += outside.count(b"{") + outside.count(b"[") - outside.count(b"}") - outside.count(b"]")


def measure_json(raw: bytes, max_elements: int, max_depth: int, chunk: int = 1 << 20) -> JsonMeter:
    """A meter fed all of ``raw`` (TooBig past a limit): for JSON already in memory, such as a job or schema file."""
    meter = JsonMeter(max_elements, max_depth)
    view = memoryview(raw)
    for start in range(0, len(raw), chunk):
        meter.feed(bytes(view[start : start + chunk]))
    return meter


def wide_encoding(head: bytes) -> str | None:
    """ "UTF-16" or "UTF-32" when ``head`` (a file's first bytes) starts with their byte-order mark, else None."""
    return next((name for bom, name in _WIDE_BOMS.items() if head.startswith(bom)), None)


def load_yaml(text: str, max_nodes: int, max_depth: int) -> object:
    """``yaml.safe_load(text)``, but the document is first composed and measured with every alias expanded: past
    ``max_nodes`` nodes or ``max_depth`` levels it is TooBig, before a single value (or a message quoting one) exists.

    A billion laughs is a few hundred bytes of anchors whose aliases expand to 9^9 strings; it costs nothing until some
    code walks it (a type error quoting it, a deep copy), so it is measured here, once per distinct node."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure_nodes(node, max_nodes, max_depth)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _measure_nodes(root: object, max_nodes: int, max_depth: int) -> None:
    """Count ``root``'s nodes as if every alias were written out, and its depth, without recursion (a YAML of 100,000
    nested lists is refused here, not by Python's stack); each distinct node is measured once."""
    import yaml

    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    stack: list[tuple[object, int, bool]] = [(root, 1, False)]
    while stack:
        node, level, done = stack.pop()
        if id(node) in sizes:
            continue
        if level > max_depth:
            raise TooBig(f"nests deeper than {max_depth:,} levels", NESTING)
        children = _children(node, yaml)
        if not done:
            stack.append((node, level, True))
            stack.extend((child, level + 1, False) for child in children if id(child) not in sizes)
            continue
        sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
        heights[id(node)] = 1 + max((heights[id(c)] for c in children), default=0)
        if sizes[id(node)] > max_nodes:
            raise TooBig(f"expands to more than {max_nodes:,} YAML nodes (its aliases written out)", NODES)
        if heights[id(node)] > max_depth:
            raise TooBig(f"nests deeper than {max_depth:,} levels", NESTING)


def _children(node: object, yaml) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _QUOTE_CHARS
_repr.maxlist = _repr.maxdict = _repr.maxtuple = _repr.maxset = 8
_repr.maxlevel = 3


def quoted(value: object) -> str:
    """``repr(value)`` for an error message, cut to a few hundred characters whatever its size or sharing: nested lists
    show their first items and ``...``, a long string its head; so quoting input never copies it."""
    text = _repr.repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


class Unreadable(OSError):
    """A file that is not read at all: not a regular file, or larger than its limit; ``str()`` is the reason alone."""

    def __init__(self, reason: str):
        super().__init__(0, reason)

    def __str__(self) -> str:
        return self.strerror


def read_regular(path: Path, limit: int) -> bytes:
    """All of ``path`` when it is a regular file of at most ``limit`` bytes; OSError (with a strerror a message can
    quote) for a device, a pipe, a folder or a larger file, which are never read."""
    import stat

    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable("not a regular file (a device, a pipe, a socket or a folder)")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Unreadable(f"over the limit of {limit:,} bytes")
    return data


def read_head(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``path`` (so a caller can tell it is over), whatever its size says: a file that
    grew after it was measured is never read whole."""
    with open(path, "rb") as f:
        return f.read(limit + 1)


def read_chunks(read: Callable[[int], bytes], limit: int, meter: JsonMeter | None, size: int = 1 << 20) -> bytearray:
    """What ``read`` yields until it is exhausted or ``limit`` bytes (one more, so the caller can tell) are read, in
    chunks each fed to ``meter`` as it arrives: a JSON bomb stops the read where it passes a bound. One growing buffer
    holds them, so the whole is never held twice."""
    data = bytearray()
    while len(data) <= limit:
        chunk = read(min(size, limit + 1 - len(data)))
        if not chunk:
            break
        if meter is not None:
            meter.feed(chunk)
        data += chunk
    return data
