"""The Celery app of the labelling fleet: settings from ``celeryconfig``, the broker checked before anything is sent,
and the result backend bound to the store's MongoDB when no other is configured."""

from __future__ import annotations

import importlib.util

from celery import Celery

import celeryconfig
from labelling import settings
from labelling.errors import FleetError
from labelling.redact import mask_uri

BROKER_HINT = f"e.g. export {settings.BROKER_URL.name}=amqp://guest:guest@127.0.0.1:5672//"

app = Celery("labelling", include=["tasks.partition"])
app.config_from_object(celeryconfig)
__all__ = ["FleetError", "app", "bind_result_backend", "broker_url", "check_broker", "require_broker"]


def broker_url() -> str | None:
    """``$LABELLING_BROKER_URL`` as it is now (the CLI reads it per command, so tests and shells can change it)."""
    return settings.BROKER_URL.get()


def require_broker(purpose: str) -> str:
    """The broker URL, applied to the app; FleetError naming ``purpose`` when none is configured."""
    url = broker_url()
    if url is None:
        raise FleetError(f"{purpose} needs a broker, and {settings.BROKER_URL.name} is not set", BROKER_HINT)
    app.conf.broker_url = url
    return url


def check_broker(purpose: str, timeout_s: float = 5.0) -> str:
    """Connect to the broker once, so a broker that is down, refuses the login, or needs a client library that is not
    installed fails here in one line, before anything is sent."""
    url = require_broker(purpose)
    scheme = url.partition("://")[0].lower()
    if scheme in _CLIENT_LIBRARIES and importlib.util.find_spec(_CLIENT_LIBRARIES[scheme]) is None:
        library = _CLIENT_LIBRARIES[scheme]
        raise FleetError(
            f"the broker at {mask_uri(url)} needs the {library} client library, which is not installed",
            f"pip install {library}, or use RabbitMQ: {BROKER_HINT}",
        )
    try:
        with app.connection_for_write(url, connect_timeout=timeout_s) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s)
    except Exception as e:  # kombu, amqp and redis each raise their own types for refused, auth and vhost errors
        reason = " ".join(str(e).split()) or type(e).__name__
        if any(word in reason.lower() for word in _AUTH_WORDS):
            raise FleetError(
                f"the broker at {mask_uri(url)} refused the login ({reason})",
                f"fix the user and password in {settings.BROKER_URL.name}",
            ) from e
        raise FleetError(
            f"the broker at {mask_uri(url)} is unreachable ({reason})",
            f"start RabbitMQ or fix {settings.BROKER_URL.name}; `labelling run --local` needs no broker",
        ) from e
    return url


_AUTH_WORDS = ("access_refused", "wrongpass", "noauth", "authentication failed", "invalid password")
_CLIENT_LIBRARIES = {"redis": "redis", "rediss": "redis", "sqs": "boto3"}  # kombu transports whose client is optional


def bind_result_backend() -> str:
    """Use the store's MongoDB (its database too) for results unless a backend is configured; returns it, masked.

    Connects the store, so an unreachable MongoDB fails here rather than in a worker.
    """
    import mongoengine

    from labelling.fleet import store

    connection = store.connect()
    configured = settings.RESULT_BACKEND.get()
    app.conf.result_backend = configured or connection.uri
    if not configured:
        database = mongoengine.get_db().name
        app.conf.mongodb_backend_settings = {**celeryconfig.mongodb_backend_settings, "database": database}
    return mask_uri(app.conf.result_backend)
