"""Celery settings for the labelling fleet; every value comes from the environment, with the defaults documented here.

Environment variables (all optional):

``LABELLING_BROKER_URL``
    The broker, e.g. ``amqp://guest:guest@127.0.0.1:5672//``. Unset means no fleet: ``labelling run`` labels in
    process (the embedded mode) and ``labelling worker`` refuses to start.
``LABELLING_RESULT_BACKEND``
    Where task results and chord state live. Default: ``LABELLING_MONGODB_URI`` (the store's own database), and when
    that is unset too, the embedded MongoDB-wire server's URI, filled in by ``tasks.app.bind_result_backend`` when the
    CLI starts (the ``rpc://`` backend cannot run chords; MongoDB and Redis backends can).
``LABELLING_QUEUE_PREFIX``
    Queue names are ``PREFIX.partitions`` (label_partition: long, one per GPU at a time) and ``PREFIX.control``
    (dispatch_dependents and Celery's chord bookkeeping: short). Default ``labelling``.
``LABELLING_TASK_SOFT_TIME_LIMIT_S`` / ``LABELLING_TASK_TIME_LIMIT_S``
    Limits for one partition task. Default 86400 s (24 h) soft, and the soft limit plus 15 min hard. At the soft
    limit the partition is marked failed and can be resumed by the next run. The prefork pool enforces both; the
    solo pool enforces neither.
``LABELLING_CONSUMER_TIMEOUT_MS``
    RabbitMQ's delivery acknowledgement timeout for our queues. Default 172800000 (48 h); ``0`` leaves it out.
``LABELLING_TASK_MAX_RETRIES`` / ``LABELLING_TASK_RETRY_DELAY_S``
    A partition whose labelling raises (not one another run holds) is retried this many times, the n-th retry after
    n times the delay; then it stays failed, with its error, until ``labelling run --retry-failed``. Default 2 / 60.
``LABELLING_CHORD_POLL_S``
    How often the chord checks whether the seed partition is done. Default 5.
``LABELLING_RESULT_EXPIRES_S``
    How long task results are kept. Default 604800 (7 days).

RabbitMQ's consumer timeout. Tasks are acknowledged late, after they finish, so a worker holds an unacknowledged
message for as long as its partition runs: hours. By default RabbitMQ closes the channel of a consumer that holds a
message for more than 30 minutes and delivers the message again. Three ways to avoid that:

1. Per queue (RabbitMQ 3.11.15 and later): our queues are declared with the ``x-consumer-timeout`` argument set from
   ``LABELLING_CONSUMER_TIMEOUT_MS``. Older servers ignore the argument. A queue's arguments cannot change once it
   exists: to change the value, delete the queues (``rabbitmqctl delete_queue labelling.partitions``) or use a
   policy instead, ``rabbitmqctl set_policy --apply-to queues labelling-timeout '^labelling\\.' '{"consumer-timeout":
   172800000}'``.
2. For the whole server, at run time (any version, lost on restart):
   ``rabbitmqctl eval 'application:set_env(rabbit, consumer_timeout, 172800000).'``
3. For the whole server, permanently: ``consumer_timeout = 172800000`` in ``rabbitmq.conf``.

When a redelivery happens anyway, no work is duplicated: label_partition is idempotent and claims its partition with
a lease in MongoDB. The duplicate finds the partition held by a live run (heartbeat within ``LABELLING_CLAIM_LEASE_S``)
and retries later without writing; by then the first run has finished and the duplicate returns "already done". If
the first run died instead, its heartbeat goes stale and the duplicate takes the partition over and resumes it.
With a Redis broker the same role is played by the visibility timeout, set below from the time limit.
"""

from __future__ import annotations

import os

from kombu import Exchange, Queue

BROKER_ENV = "LABELLING_BROKER_URL"
MONGODB_URI_ENV = "LABELLING_MONGODB_URI"  # the store's variable (labelling.mongo_server.URI_ENV)


def _number(name: str, default: float) -> float:
    """A non-negative number from the environment, or ``default`` when the variable is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} must not be negative")
    return value


QUEUE_PREFIX = os.environ.get("LABELLING_QUEUE_PREFIX") or "labelling"
PARTITION_QUEUE = f"{QUEUE_PREFIX}.partitions"
CONTROL_QUEUE = f"{QUEUE_PREFIX}.control"
SOFT_TIME_LIMIT_S = _number("LABELLING_TASK_SOFT_TIME_LIMIT_S", 24 * 3600)
TIME_LIMIT_S = _number("LABELLING_TASK_TIME_LIMIT_S", SOFT_TIME_LIMIT_S + 900)
CONSUMER_TIMEOUT_MS = int(_number("LABELLING_CONSUMER_TIMEOUT_MS", 48 * 3600 * 1000))
CHORD_POLL_S = _number("LABELLING_CHORD_POLL_S", 5)
TASK_MAX_RETRIES = int(_number("LABELLING_TASK_MAX_RETRIES", 2))
TASK_RETRY_DELAY_S = _number("LABELLING_TASK_RETRY_DELAY_S", 60)

# --- transport ---------------------------------------------------------------------------------------------------

broker_url = os.environ.get(BROKER_ENV) or None
broker_connection_retry_on_startup = True
# Redis and SQS brokers redeliver a message unacknowledged for this long: it must outlast the longest partition.
broker_transport_options = {"visibility_timeout": int(TIME_LIMIT_S + 3600)}

result_backend = os.environ.get("LABELLING_RESULT_BACKEND") or os.environ.get(MONGODB_URI_ENV) or None
mongodb_backend_settings = {"taskmeta_collection": "celery_taskmeta", "groupmeta_collection": "celery_groupmeta"}
result_expires = int(_number("LABELLING_RESULT_EXPIRES_S", 7 * 24 * 3600))
result_extended = True
result_backend_always_retry = True

task_serializer = result_serializer = event_serializer = "json"
accept_content = result_accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# --- queues and routing ------------------------------------------------------------------------------------------

_exchange = Exchange(QUEUE_PREFIX, type="direct")
_arguments = {"x-consumer-timeout": CONSUMER_TIMEOUT_MS} if CONSUMER_TIMEOUT_MS else {}
task_queues = (
    Queue(PARTITION_QUEUE, _exchange, routing_key=PARTITION_QUEUE, queue_arguments=_arguments),
    Queue(CONTROL_QUEUE, _exchange, routing_key=CONTROL_QUEUE, queue_arguments=_arguments),
)
task_default_queue = CONTROL_QUEUE
task_default_exchange = QUEUE_PREFIX
task_default_routing_key = CONTROL_QUEUE
task_routes = {
    "labelling.label_partition": {"queue": PARTITION_QUEUE, "routing_key": PARTITION_QUEUE},
    # The chord's poller: short tasks that must not wait behind hours-long partitions.
    "celery.chord_unlock": {"queue": CONTROL_QUEUE, "routing_key": CONTROL_QUEUE},
}

# --- delivery: at least once, one task per worker process at a time -----------------------------------------------

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# A broker blip would otherwise cancel hours of labelling; the redelivered copy is harmless (see the docstring).
worker_cancel_long_running_tasks_on_connection_loss = False
# RabbitMQ closes the channel of a consumer that outlives its consumer timeout (PRECONDITION_FAILED, a channel error).
# Celery's default treats that as unrecoverable and shuts the worker down; retrying reconnects and keeps the partition.
broker_channel_error_retry = True
task_soft_time_limit = SOFT_TIME_LIMIT_S
task_time_limit = TIME_LIMIT_S
task_track_started = True

# --- monitoring: Flower needs task events -------------------------------------------------------------------------

worker_send_task_events = True
task_send_sent_event = True
