"""``labelling server status`` and ``labelling server stop``: the embedded MongoDB-wire server of the state folder.

Commands start it when they need it and it stops by itself once no command has used it for LABELLING_SERVER_IDLE_S
seconds; these two commands show it and stop it by hand."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape


def _uri_note() -> str:
    from labelling import settings

    if settings.MONGODB_URI.get() is None:
        return ""
    return f" ({settings.MONGODB_URI.name} is set: commands use that server, not this one)"


def status() -> None:
    """Show the embedded server of the state folder: running or not, its URI and pids, and the commands using it."""
    from labelling import settings
    from labelling.fleet import mongo_server

    state = mongo_server.server_state()
    where = escape(str(state.folder.parent))
    if state.uri is None:
        Console().print(f"no embedded server runs for {where}; the next command that needs one starts it{_uri_note()}")
        return
    users = state.users
    if state.in_use:
        who = f" (pids {', '.join(map(str, users))})" if users else ""
        use = f"in use by {len(users) or 'some'} command(s){who}"
    else:
        use = f"idle: it stops {settings.SERVER_IDLE_S.get():g} s after its last command"
    Console().print(
        f"embedded server for {where}: {state.uri}, nx-27017 pid {state.pid}, keeper pid {state.keeper_pid}; {use}{_uri_note()}",
        soft_wrap=True,
    )


def stop(
    force: bool = typer.Option(False, "--force", help="Stop it even while commands use it (they then fail)."),
) -> None:
    """Stop the embedded server of the state folder now; refused while a command uses it, unless --force."""
    from labelling.fleet import mongo_server

    stopped = mongo_server.stop_server(force=force)
    where = escape(str(mongo_server.server_folder().parent))
    if stopped is None:
        Console().print(f"no embedded server runs for {where}")
    else:
        Console().print(f"stopped the embedded server for {where} ({stopped.uri or 'no port'})", soft_wrap=True)


COMMANDS = {"status": status, "stop": stop}
