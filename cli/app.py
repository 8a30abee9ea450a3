"""The Typer app: global options, command registration, and the error boundary that turns every expected failure into
one line on stderr and a true exit code (2 usage or input error, 1 failure, 130 interrupted)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from typer.exceptions import Abort, TyperException

from cli.signals import EXIT_TERMINATED, Terminated
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
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs instead of one-line errors."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        quiet_third_parties()


class Interrupted(Exception):
    """Ctrl-C inside a command, carrying what the interrupted command kept and how to resume it."""

    def __init__(self, note: str, code: int = 130):
        super().__init__(note)
        self.note = note
        self.code = code  # 130 for Ctrl-C, 143 for SIGTERM (cli/signals.py)


def _resume_note(command: str, params: dict) -> str:
    """What an interrupted command leaves behind and the command that carries on from there."""
    if command == "label-split":
        partial = Path(params["out"]).with_name(Path(params["out"]).name + ".partial")
        kept = max(0, sum(1 for _ in partial.open(encoding="utf-8")) - 1) if partial.exists() else 0
        return f"{kept} labelled turns kept in {partial}; the same command resumes from them"
    if command in ("run", "demo"):
        from tasks.app import broker_url

        group = params.get("group")
        if command == "run" and not params.get("local") and broker_url() is not None:
            return f"the run goes on on the fleet; follow it with `labelling status --group {group} --watch`"
        again = f"labelling run --group {group}" if command == "run" else "labelling demo"
        return f"the labels written so far are kept in the store; `{again}` resumes the group"
    if command == "ingest":
        stored = f"no corpus {params['corpus']!r} was stored (one stored before is intact); " if params.get("corpus") else ""
        return f"{stored}--out is unchanged; run the same command again"
    if command == "export":
        return f"{params['out']} is unchanged (exports are written beside it, then renamed); run the same command again"
    if command == "corpus rm":
        return "the corpus is no longer listed; the same command removes the rest of its turns"
    return "nothing was changed"


def _guarded(command: str, function: Callable) -> Callable:
    """``function`` with Ctrl-C turned into Interrupted, so the boundary can say what was kept (typer would exit 0)."""

    @functools.wraps(function)
    def command_function(**params):
        try:
            return function(**params)
        except KeyboardInterrupt as e:
            code = EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
            raise Interrupted(_resume_note(command, params), code) from e

    return command_function


def _register() -> None:
    # Imported here so that `labelling --help` stays fast and each command module stays independent.
    from cli import (
        bench,
        corpus_commands,
        demo,
        group_commands,
        ingest,
        label,
        quality,
        run,
        server_commands,
        status,
        store_commands,
        worker,
    )

    commands = {
        "ingest": ingest.ingest,
        "label-split": label.label_split,
        "run": run.run,
        "status": status.status,
        "worker": worker.worker,
        "flower": worker.flower,
        "export": store_commands.export,
        "evaluate": store_commands.evaluate,
        "bench": bench.bench,
        "quality": quality.quality,
        "demo": demo.demo,
    }
    for name, function in commands.items():
        app.command(name)(_guarded(name, function))
    # The old name, kept working: "partition" also names the fleet's Celery task, which labels a stored partition.
    app.command("label-partition", hidden=True)(_guarded("label-split", label.label_split))
    for noun, module in (("corpus", corpus_commands), ("group", group_commands), ("server", server_commands)):
        sub = typer.Typer(help=module.__doc__, no_args_is_help=True)
        for name, function in module.COMMANDS.items():
            sub.command(name)(_guarded(f"{noun} {name}", function))
        app.add_typer(sub, name=noun)


def _usage_line(error: TyperException) -> str:
    """A usage error as one line: the message, then where the command's help is."""
    ctx = getattr(error, "ctx", None)
    path = ctx.command_path if ctx is not None else "labelling"
    if type(error).__name__ == "NoArgsIsHelpError":
        names = ", ".join(ctx.command.list_commands(ctx)) if ctx is not None and hasattr(ctx.command, "list_commands") else ""
        return f"error: `{path}` needs a command ({names}); see `{path} --help`"
    return f"error: {' '.join(error.format_message().split())} (see `{path} --help`)"


def _debug() -> bool:
    # Usage errors happen before the --debug callback runs, so the flag is also read from the command line itself.
    return _state["debug"] or "--debug" in sys.argv[1:]


def main() -> int:
    """Console entry point: run the app and return its exit code, turning every expected failure into one line."""
    _register()
    try:
        code = app(standalone_mode=False)
    except Interrupted as e:
        print(f"{'terminated (SIGTERM)' if e.code == EXIT_TERMINATED else 'interrupted'}: {e.note}", file=sys.stderr)
        return e.code
    except LabellingError as e:
        if _state["debug"]:
            raise
        print(f"error: {masked(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except TyperException as e:  # typer's bundled click: usage errors, bad option values, unknown commands
        print(
            _usage_line(e) if getattr(e, "exit_code", 1) == EXIT_USAGE else f"error: {masked(e.format_message())}",
            file=sys.stderr,
        )
        return e.exit_code
    except Abort:
        print("aborted", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # outside any command (while starting up): nothing was done
        print("interrupted: nothing was changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_FAILED)
    except Exception as e:
        if _debug():
            raise
        reason = " ".join(f"{type(e).__name__}: {masked(str(e))}".split())[:300]
        print(f"error: unexpected failure ({reason}); rerun with --debug for the traceback", file=sys.stderr)
        return EXIT_FAILED
    if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C outside our wrapper (while parsing) into exit code 130
        print("interrupted: nothing was changed", file=sys.stderr)
    return code if isinstance(code, int) else 0
