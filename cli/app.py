"""The Typer app: global options, command registration, and the error boundary that turns LabellingError into one line."""

from __future__ import annotations

import logging
import sys

import typer

from labelling.errors import LabellingError
from labelling.quiet import quiet_third_parties
from labelling.redact import masked

app = typer.Typer(
    name="labelling",
    help=(
        "Self-label task-oriented dialogues with a language model: dialogue states as API calls and system "
        "dialogue acts, chosen among sampled candidates by a noisy-channel score."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs instead of one-line errors."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        quiet_third_parties()


def _register() -> None:
    # Imported here so that `labelling --help` stays fast and each command module stays independent.
    from cli import bench, demo, ingest, label, run, status, store_commands, worker

    app.command("ingest")(ingest.ingest)
    app.command("label-partition")(label.label_partition)
    app.command("run")(run.run)
    app.command("status")(status.status)
    app.command("worker")(worker.worker)
    app.command("flower")(worker.flower)
    app.command("export")(store_commands.export)
    app.command("evaluate")(store_commands.evaluate)
    app.command("bench")(bench.bench)
    app.command("demo")(demo.demo)


def main() -> None:
    """Console entry point: run the app, printing LabellingError as ``error: ...`` with exit code 2."""
    _register()
    try:
        app(standalone_mode=False)
    except LabellingError as e:
        if _state["debug"]:
            raise
        print(f"error: {masked(str(e))}", file=sys.stderr)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise
