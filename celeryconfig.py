"""Celery settings for the labelling fleet. The environment variables behind them are declared, with their defaults and
meanings, in :mod:`labelling.settings` (and listed in the README): broker and result backend, queue prefix, time limits,
consumer timeout, retries, chord polling and result expiry. Unset broker means no fleet: ``labelling run`` labels in
process and ``labelling worker`` refuses to start. The result backend defaults to the store's MongoDB, filled in by
``tasks.app.bind_result_backend`` when the CLI starts (the ``rpc://`` backend cannot run chords).

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

from kombu import Exchange, Queue

from labelling import settings

QUEUE_PREFIX = settings.QUEUE_PREFIX.get()
PARTITION_QUEUE = f"{QUEUE_PREFIX}.partitions"
CONTROL_QUEUE = f"{QUEUE_PREFIX}.control"
SOFT_TIME_LIMIT_S = settings.TASK_SOFT_TIME_LIMIT_S.get()
_HARD = settings.TASK_TIME_LIMIT_S.get()
TIME_LIMIT_S = SOFT_TIME_LIMIT_S + 900 if _HARD is None else _HARD
CONSUMER_TIMEOUT_MS = settings.CONSUMER_TIMEOUT_MS.get()
CHORD_POLL_S = settings.CHORD_POLL_S.get()
TASK_MAX_RETRIES = settings.TASK_MAX_RETRIES.get()
TASK_RETRY_DELAY_S = settings.TASK_RETRY_DELAY_S.get()

# --- transport ---------------------------------------------------------------------------------------------------

broker_url = settings.BROKER_URL.get()
broker_connection_retry_on_startup = True
# Redis and SQS brokers redeliver a message unacknowledged for this long: it must outlast the longest partition.
broker_transport_options = {"visibility_timeout": int(TIME_LIMIT_S + 3600)}

result_backend = settings.RESULT_BACKEND.get() or settings.MONGODB_URI.get()
mongodb_backend_settings = {"taskmeta_collection": "celery_taskmeta", "groupmeta_collection": "celery_groupmeta"}
result_expires = settings.RESULT_EXPIRES_S.get()
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
