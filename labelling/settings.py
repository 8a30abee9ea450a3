"""Every environment variable the package reads, declared once: its name, default, parser (which validates) and meaning.

Read a value with ``settings.CLAIM_LEASE_S.get()``: it is parsed on each call, so a test or a shell that changes the
environment is seen at once. A value that does not parse is a :class:`SettingError` naming the variable. The README's
table of environment variables lists exactly :data:`SETTINGS` (``tests/test_settings.py`` checks it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from labelling import limits
from labelling.errors import SettingError

T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: ``get()`` returns ``default`` when it is unset or blank, else ``parse`` of its value."""

    name: str
    default: T
    parse: Callable[[str], T]
    doc: str

    def get(self) -> T:
        """The current value, parsed; SettingError naming the variable when it does not parse."""
        raw = os.environ.get(self.name, "").strip()
        if not raw:
            return self.default
        try:
            return self.parse(raw)
        except ValueError as e:
            raise SettingError(f"{self.name}={raw!r} {e}", f"fix or unset {self.name}") from None


def _text(raw: str) -> str:
    return raw


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("is not a number") from None
    if not value >= 0:  # also refuses nan
        raise ValueError("must not be negative")
    return value


def _whole(raw: str) -> int:
    value = _number(raw)
    if not value.is_integer():
        raise ValueError("is not a whole number")
    return int(value)


def _positive(raw: str) -> float:
    value = _number(raw)
    if value == 0:
        raise ValueError("must be positive")
    return value


def _count(raw: str) -> int:
    value = _whole(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _path(raw: str) -> Path:
    return Path(raw)


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("is not one of 1, 0, true, false, yes, no, on, off")
    return value in ("1", "true", "yes", "on")


# --- the store --------------------------------------------------------------------------------------------------

MONGODB_URI: Setting[str | None] = Setting(
    "LABELLING_MONGODB_URI", None, _text, "the MongoDB holding corpus, groups, labels and manifest; unset: an embedded server"
)
STATE_DIR = Setting(
    "LABELLING_STATE_DIR", Path(".state"), _path, "local state: the embedded server's data, pid and log; the demo's export"
)
SERVER_IDLE_S = Setting(
    "LABELLING_SERVER_IDLE_S",
    10.0,
    _number,
    "the embedded server stops this long after the last command using its state folder has gone",
)
MONGODB_TIMEOUT_MS = Setting("LABELLING_MONGODB_TIMEOUT_MS", 5000, _whole, "how long to wait for MongoDB before a clear error")
MONGODB_RETRY_S = Setting(
    "LABELLING_MONGODB_RETRY_S", 120.0, _number, "how long a store operation retries a lost server (a restart, not an outage)"
)
CLAIM_LEASE_S = Setting(
    "LABELLING_CLAIM_LEASE_S", 180.0, _positive, "a running partition whose heartbeat is older than this may be taken over"
)

# --- the fleet (Celery) -----------------------------------------------------------------------------------------

BROKER_URL: Setting[str | None] = Setting("LABELLING_BROKER_URL", None, _text, "the Celery broker; unset: in-process mode")
RESULT_BACKEND: Setting[str | None] = Setting(
    "LABELLING_RESULT_BACKEND", None, _text, "Celery results and chord state; unset: the store's MongoDB"
)
QUEUE_PREFIX = Setting("LABELLING_QUEUE_PREFIX", "labelling", _text, "queues are PREFIX.partitions and PREFIX.control")
TASK_SOFT_TIME_LIMIT_S = Setting(
    "LABELLING_TASK_SOFT_TIME_LIMIT_S", 24 * 3600.0, _number, "soft time limit of one partition task"
)
TASK_TIME_LIMIT_S: Setting[float | None] = Setting(
    "LABELLING_TASK_TIME_LIMIT_S", None, _number, "hard time limit of one partition task; unset: the soft limit + 900 s"
)
CONSUMER_TIMEOUT_MS = Setting(
    "LABELLING_CONSUMER_TIMEOUT_MS", 48 * 3600 * 1000, _whole, "RabbitMQ consumer timeout asked for on our queues; 0: none"
)
TASK_MAX_RETRIES = Setting("LABELLING_TASK_MAX_RETRIES", 2, _whole, "how often a failing partition is retried")
TASK_RETRY_DELAY_S = Setting("LABELLING_TASK_RETRY_DELAY_S", 60.0, _number, "the n-th retry waits n times this long")
CHORD_POLL_S = Setting("LABELLING_CHORD_POLL_S", 5.0, _number, "how often the chord checks whether the seed partition is done")
RESULT_EXPIRES_S = Setting("LABELLING_RESULT_EXPIRES_S", 7 * 24 * 3600, _whole, "how long task results are kept")
FLOWER_USER: Setting[str | None] = Setting("LABELLING_FLOWER_USER", None, _text, "Flower's basic-auth user")
FLOWER_PASSWORD: Setting[str | None] = Setting("LABELLING_FLOWER_PASSWORD", None, _text, "Flower's basic-auth password")
FLOWER_BASIC_AUTH: Setting[str | None] = Setting(
    "FLOWER_BASIC_AUTH", None, _text, "Flower's own user:password variable, used when the two above are unset"
)

# --- models -----------------------------------------------------------------------------------------------------

TORCH_THREADS = Setting("LABELLING_TORCH_THREADS", 0, _whole, "torch CPU threads per labelling process; 0: torch's default")
GUESS_TOKENS: Setting[int | None] = Setting(
    "LABELLING_GUESS_TOKENS",
    None,
    _whole,
    "tokens guessed by prompt lookup per row and decode pass (samples unchanged); 0: off; unset: 1 on a CPU, 0 on a GPU",
)
FEW_ROW_LINEAR = Setting(
    "LABELLING_FEW_ROW_LINEAR",
    True,
    _flag,
    "on a CPU, the optimised engine computes linear layers of at most 16 rows as weight @ x.T (engine/linear.py); 0: off",
)
STATIC_DECODE = Setting(
    "LABELLING_STATIC_DECODE",
    False,
    _flag,
    "the optimised engine decodes on a static KV cache (engine/static_decode.py), as CUDA graphs on a GPU; samples unchanged",
)
CUDA_GRAPHS = Setting(
    "LABELLING_CUDA_GRAPHS",
    True,
    _flag,
    "with LABELLING_STATIC_DECODE on a GPU, each decode step is a captured CUDA graph; 0: eager",
)
CACHE_DIR = Setting("LABELLING_CACHE_DIR", Path("~/.cache/labelling"), _path, "where embedded models are converted once")

# --- input bounds (labelling/limits.py; README, Reliability) ------------------------------------------------------

MAX_CORPUS_BYTES = Setting(
    "LABELLING_MAX_CORPUS_BYTES", limits.MAX_CORPUS_BYTES, _count, "the most bytes of one corpus JSON file (or zip member)"
)
MAX_JSON_ELEMENTS = Setting(
    "LABELLING_MAX_JSON_ELEMENTS",
    limits.MAX_JSON_ELEMENTS,
    _count,
    "the most values and keys in one corpus JSON file, counted before it is parsed (about 80 bytes of memory each)",
)
MAX_NESTING = Setting("LABELLING_MAX_NESTING", limits.MAX_NESTING, _count, "the deepest nesting of any JSON or YAML file read")
MAX_DIALOGUE_TURNS = Setting(
    "LABELLING_MAX_DIALOGUE_TURNS", limits.MAX_DIALOGUE_TURNS, _count, "the most user turns in one dialogue of a corpus"
)
MAX_YAML_NODES = Setting(
    "LABELLING_MAX_YAML_NODES", limits.MAX_YAML_NODES, _count, "the most nodes of a YAML job config, its aliases written out"
)

SETTINGS: tuple[Setting, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, Setting))
