"""Errors a user can act on: each names what went wrong, where, and what to do about it."""

from __future__ import annotations

_HEAD, _TAIL = 700, 300  # what an over-long message keeps of its start and its end


def _clipped(text: str) -> str:
    """``text`` with its middle cut when it is longer than about 1,000 characters: a value quoted from the input can
    never make an error line as long as the input (each quote is cut short where it is made; this is the backstop)."""
    if len(text) <= _HEAD + _TAIL + 50:
        return text
    return f"{text[:_HEAD]} ... [{len(text) - _HEAD - _TAIL:,} characters cut] ... {text[-_TAIL:]}"


class LabellingError(Exception):
    """Base class for every error this package raises on purpose (shown without a traceback by the CLI)."""

    def __init__(self, message: str, hint: str | None = None):
        message, hint = _clipped(message), _clipped(hint) if hint else hint
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class CorpusError(LabellingError):
    """A corpus file or folder is missing, corrupt, or of the wrong shape."""


class SchemaError(LabellingError):
    """The service schema is malformed, or a name does not belong to it."""


class ConfigError(LabellingError):
    """A job configuration has unknown keys, wrong types or out-of-range values."""


class ModelError(LabellingError):
    """A language model or embedder could not be found or loaded."""


class StoreError(LabellingError):
    """The MongoDB store is unreachable or holds something unexpected."""


class ClaimLost(StoreError):
    """Another attempt took this partition over (its heartbeat had gone stale); this one must stop without writing."""


class PartitionBusy(StoreError):
    """The partition is being labelled by a live attempt; try again later (its claim goes stale after the lease)."""


class FleetError(LabellingError):
    """The fleet cannot do what was asked: no broker, a broker that does not answer, a group another run launched."""


class SettingError(LabellingError, ValueError):
    """An environment variable holds a value that does not parse (see :mod:`labelling.settings`)."""
