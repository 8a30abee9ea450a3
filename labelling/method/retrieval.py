"""Retrieval of in-context examples: a sentence embedder and an exact-cosine index that grows one labelled turn at a time.

Follows docs/method.md §6 (text formats, k, "distinct" selection, warm-up) but fixes two reference bugs: seed items are embedded
in the configured text format like every later item (§15.2), and an index holding fewer than k items returns what it has
instead of crashing (§15.3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from labelling.embedded import looks_like_path
from labelling.engine.model_files import MINILM_INSTALL, embedder_path
from labelling.errors import ConfigError, ModelError
from labelling.states import strip_blanks
from labelling.turns import Turn

TurnKey = tuple[str, int]
KeyFn = Callable[[Turn], str]

DEFAULT_EMBEDDER = "minilm"
_MINILM_HUB_ID = "sentence-transformers/all-minilm-l6-v2"


# --- embedder -------------------------------------------------------------------------------------------------------


class TextEncoder(Protocol):
    """What the index needs from an embedder: texts in, one L2-normalised float32 row per text out."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


def _resolve_embedder(name_or_path: str) -> str:
    """The MiniLM aliases name the offline package's folder; anything else is passed to sentence-transformers unchanged."""
    # The hub id is an alias too: offline, asking the hub for it would fail although the same weights are installed.
    if name_or_path.strip().lower() == _MINILM_HUB_ID:
        name_or_path = DEFAULT_EMBEDDER
    return embedder_path(name_or_path)


class Embedder:
    """A sentence-transformers model that returns L2-normalised float32 vectors, so inner product is cosine similarity."""

    def __init__(self, model, name: str, batch_size: int = 32):
        self.model = model
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def load(cls, name_or_path: str = DEFAULT_EMBEDDER, device: str = "cpu", batch_size: int = 32) -> Embedder:
        """Load a model by alias (``minilm``), hub name or local folder; raises ModelError naming what to install or pass."""
        target = _resolve_embedder(name_or_path)
        if looks_like_path(target):
            target = str(Path(target).expanduser())
            if not Path(target).exists():
                raise ModelError(f"embedder folder {target!r} does not exist", "pass a sentence-transformers folder or 'minilm'")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError("the embedder needs sentence-transformers", "pip install sentence-transformers") from exc
        try:
            model = SentenceTransformer(target, device=device)
        except Exception as exc:  # the library raises OSError, ValueError, HTTP errors...: all mean "cannot load this model"
            raise ModelError(
                f"could not load embedder {name_or_path!r}: {exc}",
                f"pass a sentence-transformers model folder, a downloaded hub name, or 'minilm' ({MINILM_INSTALL})",
            ) from exc
        return cls(model, name_or_path, batch_size)

    @property
    def dim(self) -> int:
        """Length of one embedding vector."""
        # sentence-transformers renamed this method; accept both spellings so older installs keep working.
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` in batches; returns a (len(texts), dim) float32 array with unit-length rows."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


# --- text formats (docs/method.md §6.2) ------------------------------------------------------------------------


def _context(turn: Turn) -> str:
    services = strip_blanks(turn.last_slot_values)
    return " ".join(
        f"for {service}, the " + ", ".join(f"{slot} is {value}" for slot, value in slots.items()) + " ."
        for service, slots in services.items()
    )


def context_system_user(turn: Turn) -> str:
    """DST text: the prior (predicted) state as prose, the system utterance being answered, and the user's reply."""
    return f"Context: {_context(turn)}\nSystem: {turn.last_system_utterance}\nUser: {turn.user_utterance}"


def user_response(turn: Turn) -> str:
    """Act-tagging text: the user's utterance and the system response whose acts are labelled."""
    return f"User: {turn.user_utterance}\nSystem: {turn.system_response}"


def response(turn: Turn) -> str:
    """The system response alone (defined by the reference but unused by its jobs)."""
    return turn.system_response


TEXT_FORMATS: dict[str, Callable[[Turn], str]] = {
    "context_system_user": context_system_user,
    "user_response": user_response,
    "response": response,
}


def text_function(name: str) -> Callable[[Turn], str]:
    """The text function registered as ``name``; ConfigError listing the known names otherwise."""
    try:
        return TEXT_FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown retrieval text format {name!r}", f"known formats: {', '.join(TEXT_FORMATS)}") from None


# --- keys for "distinct" selection (docs/method.md §6.3) -------------------------------------------------------


def dst_key(item: Turn) -> str:
    """Which slots the item's delta touched (deletions included): examples with different keys teach different updates."""
    delta = strip_blanks(item.turn_slot_values)
    return ",".join(sorted(f"{service}.{slot}" for service, slots in delta.items() for slot in slots))


def act_key(item: Turn) -> str:
    """Which act/entity/field combinations the item's acts use; argument-less acts add nothing, as in the reference."""
    parts: set[str] = set()
    for act in item.system_response_acts or []:
        for name, value in act.arguments():
            if name == "entity":
                parts.update(f"{act.kind}.{value.kind}.{field}" for field, text in value.fields if text)
            elif value:
                parts.add(f"{act.kind}.{name}")
    return "-".join(sorted(parts))


# --- index ----------------------------------------------------------------------------------------------------------


def _top(similarities: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest finite similarities, best first, ties to the lower index."""
    if count < similarities.size:
        # argpartition picks arbitrarily among ties at the cut, so keep every item tied with the cut and sort them all.
        cut = similarities[np.argpartition(-similarities, count - 1)[count - 1]]
        candidates = np.flatnonzero(similarities >= cut)
    else:
        candidates = np.arange(similarities.size)
    candidates = candidates[np.isfinite(similarities[candidates])]
    order = np.lexsort((candidates, -similarities[candidates]))
    return candidates[order][:count]


class _Growable:
    """An append-only array whose capacity doubles, so adding one row at a time is amortised O(1), not a full re-stack."""

    def __init__(self, dtype: type):
        self.dtype = dtype
        self.size = 0
        self._data: np.ndarray | None = None

    def append(self, rows: np.ndarray) -> None:
        """Append ``rows`` (shape (n,) for a 1-D array, (n, width) for a matrix; the first append fixes the width)."""
        rows = np.asarray(rows, dtype=self.dtype)
        if self._data is None:
            self._data = np.zeros((64, *rows.shape[1:]), dtype=self.dtype)
        if self.size + len(rows) > len(self._data):
            grown = np.zeros((max(self.size + len(rows), 2 * len(self._data)), *self._data.shape[1:]), dtype=self.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : self.size + len(rows)] = rows
        self.size += len(rows)

    def view(self) -> np.ndarray:
        """The filled part (a view: it goes stale after the next append)."""
        return self._data[: self.size] if self._data is not None else np.zeros((0,), dtype=self.dtype)


class ExampleIndex:
    """Labelled turns and their embeddings; returns the k most similar items for a query turn, optionally "distinct" ones.

    Vectors are stored once per distinct text and items point at their text's row. Identical texts (frequent in MultiWOZ:
    "thank you, goodbye") therefore get bit-identical similarities, so their tie goes to the earlier item whatever the batch
    composition; an encoder's output, and BLAS rounding per matrix row, would otherwise differ by ~1e-7.
    """

    def __init__(
        self,
        embedder: TextEncoder,
        text_format: str,
        key_fn: KeyFn | None,
        k: int,
        minimum_distinct: int = 1,
        overfetch: int = 10,
        warmup: int = 0,
    ):
        if k < 0 or warmup < 0 or overfetch < 0:
            raise ConfigError(f"retrieval needs k, warmup and overfetch >= 0 (got k={k}, warmup={warmup}, overfetch={overfetch})")
        if minimum_distinct > 1 and key_fn is None:
            raise ConfigError(f"minimum_distinct={minimum_distinct} needs a key function", "use dst_key or act_key")
        self.embedder = embedder
        self.text_format = text_format
        self._to_text = text_function(text_format)
        self.key_fn = key_fn
        self.k = k
        self.minimum_distinct = minimum_distinct
        self.overfetch = overfetch
        self.warmup = warmup
        self._items: list[Turn] = []
        self._keys: list[str] = []
        self._positions: dict[TurnKey, list[int]] = {}
        self._row_of_text: dict[str, int] = {}
        self._text_vectors = _Growable(np.float32)
        self._item_rows = _Growable(np.int64)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[Turn]:
        """The indexed items in insertion order (a copy)."""
        return list(self._items)

    @property
    def vectors(self) -> np.ndarray:
        """One embedding per item in insertion order (a copy): store it to seed a later index with :meth:`add_embedded`."""
        return self._text_vectors.view()[self._item_rows.view()]

    def texts(self, turns: Sequence[Turn]) -> list[str]:
        """The configured text of each turn: the one format used for items and queries alike."""
        return [self._to_text(t) for t in turns]

    def embed_items(self, items: Sequence[Turn]) -> np.ndarray:
        """Embed ``items`` in this index's text format without adding them; one encode call, texts already indexed are reused."""
        return self._embed(self.texts(items))

    def _embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._row_of_text]
        fresh = dict(zip(missing, _normalise(self.embedder.encode(missing)), strict=True)) if missing else {}
        stored = self._text_vectors.view()
        rows = [fresh[t] if t in fresh else stored[self._row_of_text[t]] for t in texts]
        return np.stack(rows) if rows else np.zeros((0, stored.shape[1] if stored.ndim == 2 else 0), dtype=np.float32)

    def add(self, items: Sequence[Turn]) -> None:
        """Embed ``items`` in one batch and append them; seeds and online predictions go through the same format."""
        if items:
            self.add_embedded(items, self.embed_items(items))

    def add_embedded(self, items: Sequence[Turn], vectors: np.ndarray) -> None:
        """Append items with vectors computed earlier by :meth:`embed_items` (same embedder and text format).

        An item whose text is already indexed shares that text's stored vector; its given vector is not used.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(items) == 0 == len(vectors):
            return
        width = self._text_vectors.view().shape[1] if len(self) else None
        if vectors.ndim != 2 or len(vectors) != len(items) or width not in (None, vectors.shape[1]):
            raise ValueError(f"expected {len(items)} vectors of width {width or 'any'}, got shape {vectors.shape}")
        texts = self.texts(items)
        new: dict[str, np.ndarray] = {}
        for text, vector in zip(texts, vectors, strict=True):
            if text not in self._row_of_text:
                new.setdefault(text, vector)  # the first occurrence in the batch defines the text's vector
        if new:
            first = self._text_vectors.size
            self._row_of_text.update((t, first + offset) for offset, t in enumerate(new))
            self._text_vectors.append(_normalise(np.stack(list(new.values()))))
        self._item_rows.append(np.array([self._row_of_text[t] for t in texts], dtype=np.int64))
        for item in items:
            self._positions.setdefault(item.key, []).append(len(self._items))
            self._items.append(item)
            self._keys.append(self.key_fn(item) if self.key_fn else "")

    @property
    def embedder_name(self) -> str:
        """The embedder's configured name: stored vectors are reused only by an index whose embedder has the same one."""
        return str(getattr(self.embedder, "name", type(self.embedder).__name__))

    def stored_vectors(self, keys: Sequence[TurnKey]) -> list[dict | None]:
        """For each key, its latest item's vector as a record to store beside the label (None if the key is not indexed).

        The record names the embedder and a digest of the embedded text, so :meth:`add_stored` can tell whether it
        still applies (another embedder, text format or text means the item is embedded again).
        """
        vectors, rows = self._text_vectors.view(), self._item_rows.view()
        out: list[dict | None] = []
        for key in keys:
            positions = self._positions.get(key)
            if not positions:
                out.append(None)
                continue
            text = self._to_text(self._items[positions[-1]])
            vector = vectors[rows[positions[-1]]]
            out.append({"embedder": self.embedder_name, "text": _digest(text), "vector": vector.astype("<f4").tobytes()})
        return out

    def add_stored(self, items: Sequence[Turn], records: Sequence[dict | None]) -> int:
        """Append ``items``, taking each vector from its stored record when that still applies, embedding the rest in one
        batch; returns how many items were embedded. Retrieval then is what :meth:`add` would give."""
        if len(records) != len(items):
            raise ValueError(f"{len(records)} stored vectors for {len(items)} items")
        texts = self.texts(items)
        vectors: list[np.ndarray | None] = [self._stored(text, record) for text, record in zip(texts, records, strict=True)]
        missing = [i for i, vector in enumerate(vectors) if vector is None]
        if missing:
            for i, vector in zip(missing, self._embed([texts[i] for i in missing]), strict=True):
                vectors[i] = vector
        if items:
            self.add_embedded(items, np.stack(vectors))
        return len(missing)

    def _stored(self, text: str, record: dict | None) -> np.ndarray | None:
        if not record or record.get("embedder") != self.embedder_name or record.get("text") != _digest(text):
            return None
        vector = np.frombuffer(record["vector"], dtype="<f4")
        width = self._text_vectors.view().shape[1] if len(self) else vector.size
        return vector if vector.size == width else None

    def search(self, query: Turn, exclude: Collection[TurnKey] | None = None) -> list[Turn]:
        """The examples for one query turn; see :meth:`search_batch`."""
        return self.search_batch([query], None if exclude is None else [exclude])[0]

    def search_batch(self, queries: Sequence[Turn], exclude: Sequence[Collection[TurnKey]] | None = None) -> list[list[Turn]]:
        """Examples for each query, embedding all queries in one call; ``[]`` per query during the warm-up.

        ``exclude[i]`` holds (dialogue_id, turn_id) keys that query i must not retrieve. The reference excluded nothing
        (its items had no ids); excluding a dialogue's own turns stops near-copies of the query's context from
        crowding out other examples, and stops a turn retrieving its own earlier label when a resumed job is seeded with it.
        Different texts whose similarities differ by less than the encoder's batch noise (~1e-7) may order differently
        in a batched and a single search.
        """
        if exclude is not None and len(exclude) != len(queries):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(queries)} queries")
        if not queries or len(self) == 0 or len(self) < self.warmup or self.k == 0:
            return [[] for _ in queries]
        per_text = self._embed(self.texts(queries)) @ self._text_vectors.view().T
        per_item = per_text[:, self._item_rows.view()]
        return [self._select(row, exclude[i] if exclude else ()) for i, row in enumerate(per_item)]

    def _select(self, similarities: np.ndarray, exclude: Collection[TurnKey]) -> list[Turn]:
        """Rank one query's similarities, then apply the distinct rule of docs/method.md §6.3."""
        for key in exclude:
            similarities[self._positions.get(key, [])] = -np.inf
        distinct = self.minimum_distinct > 1
        ranked = [int(i) for i in _top(similarities, max(self.overfetch, self.k) if distinct else self.k)]
        if distinct:
            ranked = self._distinct_first(ranked)
        return [self._items[i] for i in ranked[: self.k]]

    def _distinct_first(self, ranked: list[int]) -> list[int]:
        """Walk ``ranked`` keeping unseen keys until ``minimum_distinct`` are kept; the rest follow in similarity order."""
        picks: list[int] = []
        seen: set[str] = set()
        for index in ranked:
            if len(picks) == self.minimum_distinct:
                break
            if self._keys[index] not in seen:
                seen.add(self._keys[index])
                picks.append(index)
        chosen = set(picks)
        return picks + [i for i in ranked if i not in chosen]


def _digest(text: str) -> str:
    """A short fingerprint of an embedded text: a stored vector applies only to the text it was computed from."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so inner product is cosine; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


MODULE_DEFAULTS: dict[str, tuple[str, KeyFn, int]] = {
    "dst": ("context_system_user", dst_key, 8),
    "act": ("user_response", act_key, 6),
}


def build_index(
    embedder: TextEncoder,
    module: str,
    k: int | None = None,
    minimum_distinct: int = 4,
    warmup: int = 32,
    text_format: str | None = None,
    overfetch: int = 10,
) -> ExampleIndex:
    """An index with the reference's settings for ``module`` ("dst" or "act"); explicit arguments override them."""
    if module not in MODULE_DEFAULTS:
        raise ConfigError(f"unknown retrieval module {module!r}", f"known modules: {', '.join(MODULE_DEFAULTS)}")
    default_format, key_fn, default_k = MODULE_DEFAULTS[module]
    return ExampleIndex(
        embedder,
        text_format or default_format,
        key_fn,
        default_k if k is None else k,
        minimum_distinct=minimum_distinct,
        overfetch=overfetch,
        warmup=warmup,
    )
