"""Errors a user can act on: each names what went wrong, where, and what to do about it."""

from __future__ import annotations


class LabellingError(Exception):
    """Base class for every error this package raises on purpose (shown without a traceback by the CLI)."""

    def __init__(self, message: str, hint: str | None = None):
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


class FleetError(LabellingError):
    """The fleet cannot do what was asked: no broker, a broker that does not answer, a group another run launched."""


class SettingError(LabellingError, ValueError):
    """An environment variable holds a value that does not parse (see :mod:`labelling.settings`)."""
