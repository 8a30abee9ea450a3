"""``labelling worker`` and ``labelling flower``: a Celery worker that labels partitions, and Flower to watch the fleet."""

from __future__ import annotations

import os

import typer
from rich.markup import escape

from cli.console import console
from labelling.errors import LabellingError
from labelling.limits import MAX_THREADS
from labelling.settings import FLOWER_BASIC_AUTH, FLOWER_PASSWORD, FLOWER_USER, TORCH_THREADS

FLOWER_USER_ENV, FLOWER_PASSWORD_ENV, FLOWER_AUTH_ENV = (s.name for s in (FLOWER_USER, FLOWER_PASSWORD, FLOWER_BASIC_AUTH))


def worker(
    gpu: int | None = typer.Option(
        None,
        "--gpu",
        min=0,
        help="Pin the worker to this GPU: an index into CUDA_VISIBLE_DEVICES when that is set; left out: CPU, GPUs hidden.",
    ),
    concurrency: int = typer.Option(
        1, "--concurrency", "-c", min=1, max=MAX_THREADS, help="Partitions labelled at once (one model copy each)."
    ),
    queues: list[str] = typer.Option(
        [], "--queues", "-Q", help="Queues to consume (comma-separated or repeated).", show_default="all"
    ),
    celery_pool: str = typer.Option(
        "prefork", "--pool", "-P", help="Celery's process pool: prefork (models load after the fork), solo or threads."
    ),
    name: str | None = typer.Option(None, "--name", "-n", help="Node name.", show_default="gpuN@HOST, or cpu@HOST without --gpu"),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        max=MAX_THREADS,
        help="CPU threads per pool process (torch); set it when several workers share a machine.",
    ),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l", help="Celery log level."),
    models: list[str] = typer.Option(
        [], "--model", help="Also check at start that this model loads here (repeatable); groups with work left are checked."
    ),
) -> None:
    """Start a Celery worker that labels partitions, with task events on for Flower; one worker per GPU.

    Needs LABELLING_BROKER_URL. It first checks that the models of the groups with work left (and --model) can be
    loaded here: a gated model without a token fails now, in one line. With the prefork pool the worker process never
    touches the GPU: each pool process loads the models on its first task, after the fork, and keeps them.
    """
    import celeryconfig
    from labelling.fleet import store, worker_setup
    from labelling.redact import mask_uri
    from tasks.app import app, bind_result_backend, check_broker

    url = check_broker("labelling worker")
    where = worker_setup.pin_devices(gpu)
    for warning in worker_setup.pool_warnings(gpu, celery_pool, concurrency):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if threads is not None:
        os.environ[TORCH_THREADS.name] = str(threads)  # applied in each pool process, after the fork
    backend = bind_result_backend()
    worker_setup.check_models([(m, False) for m in models] + worker_setup.live_group_models())
    store.disconnect()  # pool processes open their own connection after the fork
    node = name or (f"gpu{gpu}@%h" if gpu is not None else "cpu@%h")
    wanted = [q.strip() for item in queues for q in item.split(",") if q.strip()]
    wanted = wanted or [celeryconfig.PARTITION_QUEUE, celeryconfig.CONTROL_QUEUE]
    console.print(f"worker {escape(node)} on {escape(mask_uri(url))}, queues {', '.join(wanted)}, results {escape(backend)}")
    console.print(f"models run on {escape(where)}")
    argv = ["worker", f"--hostname={node}", "--task-events", f"--concurrency={concurrency}", f"--pool={celery_pool}"]
    app.worker_main(argv + [f"--queues={','.join(wanted)}", f"--loglevel={loglevel}"])


def flower_auth() -> str | None:
    """Basic-auth credentials from the environment, as Flower takes them (``user:password``), or None when unset;
    LabellingError when a user or a password is empty, from either source (Flower would accept an empty login)."""
    user, password = FLOWER_USER.get(), FLOWER_PASSWORD.get()
    if user or password:
        if not (user and password):
            raise LabellingError(f"set both {FLOWER_USER_ENV} and {FLOWER_PASSWORD_ENV}, or neither")
        if ":" in user or "," in user + password:
            raise LabellingError(f"{FLOWER_USER_ENV} holds ':' or ',', or {FLOWER_PASSWORD_ENV} ','", "Flower splits on them")
        return f"{user}:{password}"
    auth = FLOWER_BASIC_AUTH.get()
    for pair in auth.split(",") if auth is not None else ():
        name, colon, secret = pair.partition(":")
        if not (colon and name.strip() and secret.strip()):
            raise LabellingError(
                f"{FLOWER_AUTH_ENV} gives an empty user or password (it must be user:password, or several joined by ',')",
                "an empty login would open Flower to anyone; set a user and a password",
            )
    return auth


def flower(
    port: int = typer.Option(5555, "--port", min=1, max=65535, help="HTTP port."),
    address: str = typer.Option("127.0.0.1", "--address", help="Address to listen on (loopback by default)."),
    insecure: bool = typer.Option(False, "--insecure", help="Start without authentication when no credentials are set."),
) -> None:
    """Start Flower against the broker, with basic auth from LABELLING_FLOWER_USER / LABELLING_FLOWER_PASSWORD
    (or FLOWER_BASIC_AUTH=user:password); it refuses to start without credentials unless --insecure is given."""
    from labelling.redact import mask_uri
    from tasks.app import app, check_broker, require_broker

    url = require_broker("labelling flower")
    auth = flower_auth()
    if auth is None and not insecure:
        raise LabellingError(
            "Flower would start without authentication",
            f"set {FLOWER_USER_ENV} and {FLOWER_PASSWORD_ENV} (or {FLOWER_AUTH_ENV}=user:password), or pass --insecure",
        )
    check_broker("labelling flower")  # a wrong password or a broker that is down: one line here, not endless retries
    if auth is not None:
        os.environ[FLOWER_AUTH_ENV] = auth  # read by Flower from the environment: the password stays off the command line
    console.print(f"Flower at http://{address}:{port} on {escape(mask_uri(url))}{'' if auth else ' (no authentication)'}")
    app.start(["flower", f"--address={address}", f"--port={port}"])
