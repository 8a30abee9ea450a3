"""The embedded MongoDB-wire server: nx-27017 on a free loopback port, used when ``LABELLING_MONGODB_URI`` is unset.

Everything lives under ``<state>/mongo``, where ``<state>`` is ``$LABELLING_STATE_DIR`` or, by default, ``.state``
relative to the current directory: ``data/`` (one SQLite file per database), ``nx-27017.log`` (the server's and its
keeper's console output), ``keeper.pid`` and ``nx-27017.pid``, ``port`` (written once the server answers),
``start.lock`` (serialises finding, starting and stopping the server) and ``lease``.

One server per state folder, shared by every command that uses the folder, and never stopped under one of them. The
first command to need it starts a keeper process (:mod:`labelling.fleet.server_keeper`), which runs nx-27017 and stops it
``$LABELLING_SERVER_IDLE_S`` seconds after the last command using it has gone. A command uses it by holding a shared
``flock`` on ``lease`` (:meth:`EmbeddedServer.release`, or its exit, kill -9 included, lets go), so the keeper counts
users without any bookkeeping a crash could leave wrong. The keeper's death takes the server with it; pid and port files
left by dead processes, or naming a process that is not ours, are detected and replaced. ``labelling server status``
and ``labelling server stop`` show and stop it by hand.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from labelling import settings
from labelling.errors import StoreError

START_TIMEOUT_S = 30.0  # a loaded 2-core machine needs a few seconds for two Python processes to start
STOP_TIMEOUT_S = 10.0
SERVER_COMMAND = "nx-27017"
INSTALL_HINT = "pip install nx-27017==0.8.1, or point LABELLING_MONGODB_URI at a MongoDB server"
KEEPER_PID, SERVER_PID, PORT_FILE = "keeper.pid", f"{SERVER_COMMAND}.pid", "port"
LEASE_FILE, START_LOCK, LOG_FILE = "lease", "start.lock", f"{SERVER_COMMAND}.log"
KEEPER_MODULE = "labelling.fleet.server_keeper"


def state_dir() -> Path:
    """The local state folder: ``$LABELLING_STATE_DIR``, else ``./.state`` relative to the current directory."""
    return settings.STATE_DIR.get().expanduser().resolve()


def server_folder(state: str | Path | None = None) -> Path:
    """Where the embedded server of a state folder (default :func:`state_dir`) keeps its files."""
    return Path(state).expanduser().resolve() / "mongo" if state is not None else state_dir() / "mongo"


def ping(uri: str, timeout_s: float = 1.0) -> bool:
    """Whether a MongoDB-wire server at ``uri`` answers ``ping`` within ``timeout_s``."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    ms = max(1, int(timeout_s * 1000))
    client = MongoClient(uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


@dataclass
class EmbeddedServer:
    """A handle on the embedded server of one state folder; while it is held (not released), the server stays up.

    ``started`` says whether this call started the server (for messages); stopping it is the keeper's job, or
    :meth:`stop`'s for ``labelling server stop``.
    """

    uri: str
    pid: int | None  # nx-27017's pid
    folder: Path
    started: bool
    keeper_pid: int | None = None
    _lease: IO | None = field(default=None, repr=False)

    def release(self) -> None:
        """Let go of the server: the keeper stops it once no command has held it for ``$LABELLING_SERVER_IDLE_S``."""
        if self._lease is not None:
            self._lease.close()  # closing the file drops its flock
            self._lease = None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Release this handle and stop the server now, whoever uses it; True when one was running."""
        self.release()
        return stop_server(self.folder.parent, force=True, timeout_s=timeout_s) is not None

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def ensure_server(state: str | Path | None = None, timeout_s: float = START_TIMEOUT_S) -> EmbeddedServer:
    """A held handle on the embedded server under ``state`` (default :func:`state_dir`): the running one if it answers,
    else a new one. Two commands calling this at the same moment end with one server (``start.lock``)."""
    folder = server_folder(state)
    _make_folder(folder)
    with _locked(folder / START_LOCK):
        found = _running(folder, timeout_s)
        if found is None:
            _clear_stale(folder)
            found = _start(folder, timeout_s)
        # The keeper takes its exclusive look at the lease only while holding start.lock, which we hold: no wait here.
        lease = (folder / LEASE_FILE).open("a")
        fcntl.flock(lease, fcntl.LOCK_SH)
        found._lease = lease
        return found


def _make_folder(folder: Path) -> None:
    """Create the server's folder; a state folder that is a file, lies under /proc or cannot be written is one line
    naming the setting, not an unexpected failure."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK | os.X_OK)
    except OSError as e:
        problem = e.strerror or str(e)
    else:
        problem = None if writable else "permission denied"
    if problem is not None:
        name = settings.STATE_DIR.name
        raise StoreError(
            f"the state folder {folder.parent} cannot hold the embedded server's files ({problem})",
            f"point {name} at a folder you can write, or unset it (default ./.state)",
        )


@dataclass(frozen=True)
class ServerState:
    """What ``labelling server status`` shows: the server of a state folder, if one runs, and who uses it."""

    folder: Path
    uri: str | None
    pid: int | None
    keeper_pid: int | None
    users: list[int] | None  # pids holding the lease (None where /proc/locks cannot tell)
    in_use: bool


def server_state(state: str | Path | None = None) -> ServerState:
    """The embedded server of ``state`` as it is now; starts nothing and holds nothing."""
    folder = server_folder(state)
    if not folder.is_dir():
        return ServerState(folder, None, None, None, [], False)
    with _locked(folder / START_LOCK):
        keeper = read_int(folder / KEEPER_PID)
        port = read_int(folder / PORT_FILE)
        if keeper is None or not _is_keeper(keeper) or port is None:
            return ServerState(folder, None, None, None, [], False)
        return ServerState(folder, uri_of(port), read_int(folder / SERVER_PID), keeper, lease_holders(folder), _in_use(folder))


def stop_server(state: str | Path | None = None, force: bool = False, timeout_s: float = STOP_TIMEOUT_S) -> ServerState | None:
    """Stop the embedded server of ``state``; returns what was running (None: nothing was). Refused (StoreError naming
    the commands) while a command uses it, unless ``force``."""
    folder = server_folder(state)
    if not folder.is_dir():
        return None
    with _locked(folder / START_LOCK):
        keeper, port = read_int(folder / KEEPER_PID), read_int(folder / PORT_FILE)
        server = read_int(folder / SERVER_PID)
        alive = keeper is not None and _is_keeper(keeper)
        orphan = server is not None and _is_server(server, folder)
        if not alive and not orphan:
            _clear_stale(folder)
            return None
        users = lease_holders(folder)
        state_now = ServerState(folder, uri_of(port) if port else None, server, keeper if alive else None, users, _in_use(folder))
        if state_now.in_use and not force:
            who = f" (pids {', '.join(map(str, users))})" if users else ""
            raise StoreError(
                f"the embedded server under {folder} is in use by {len(users) or 'some'} command(s){who}",
                "let them finish (it stops by itself once idle), or pass --force to stop it under them",
            )
        if alive:
            _terminate(keeper, timeout_s)
        if server is not None and _is_server(server, folder):  # an orphan, or one its keeper did not take down
            _terminate(server, timeout_s)
        _clear_stale(folder)
        return state_now


def lease_holders(folder: Path) -> list[int] | None:
    """The pids holding the lease of ``folder`` (from /proc/locks), or None where that cannot be read."""
    try:
        inode = (folder / LEASE_FILE).stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except FileNotFoundError:
        return [] if Path("/proc/locks").exists() else None
    except OSError:
        return None
    pids = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = int(fields[4])
            if pid not in pids and pid != os.getpid():
                pids.append(pid)
    return pids


def _in_use(folder: Path) -> bool:
    """Whether a command holds the lease; call with start.lock held (the keeper looks only while holding it)."""
    with (folder / LEASE_FILE).open("a") as lease:
        try:
            fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lease, fcntl.LOCK_UN)
        return False


# --- internals -----------------------------------------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``, so two processes never both decide to start (or stop) a server."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` beside itself and rename it into place, so a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_int(path: Path) -> int | None:
    """The integer in a pid or port file, or None when it is missing or garbled."""
    try:
        with path.open("rb") as f:
            return int(f.read(64).strip())  # a pid or a port; a file that is more is garbled, and is not read whole
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _cmdline(pid: int) -> bytes | None:
    """The process's command line, or None where there is no procfs (macOS: trust the pid, the ping decides)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b"" if Path("/proc").is_dir() else None


def _is_server(pid: int, folder: Path | None = None) -> bool:
    """Whether ``pid`` is a live nx-27017 process (of ``folder``'s data, when given), not an unrelated process that
    reused a stale pid."""
    if not pid_alive(pid):
        return False
    cmdline = _cmdline(pid)
    if cmdline is None:
        return True
    ours = folder is None or str(folder / "data").encode() in cmdline
    return (b"nx-27017" in cmdline or b"nx_27017" in cmdline) and ours


def _is_keeper(pid: int) -> bool:
    """Whether ``pid`` is a live keeper process (not an unrelated process that reused a stale pid)."""
    if not pid_alive(pid):
        return False
    cmdline = _cmdline(pid)
    return cmdline is None or KEEPER_MODULE.encode() in cmdline


def uri_of(port: int) -> str:
    """The URI of a server on this host's loopback port."""
    return f"mongodb://127.0.0.1:{port}"


def _running(folder: Path, timeout_s: float) -> EmbeddedServer | None:
    """The server kept in ``folder`` if its keeper is alive and it answers; None when there is none (stale files, or a
    keeper whose starter died before it answered: that keeper is stopped)."""
    keeper = read_int(folder / KEEPER_PID)
    if keeper is None or not _is_keeper(keeper):
        return None
    port = read_int(folder / PORT_FILE)
    if port is None or not wait_until(lambda: ping(uri_of(port), 0.5), timeout_s):
        if port is None:  # started by a command that died before the server answered: start over
            _terminate(keeper, STOP_TIMEOUT_S)
            return None
        raise StoreError(f"nx-27017 (port {port}, keeper pid {keeper}) does not answer", f"see {folder / LOG_FILE}")
    return EmbeddedServer(uri_of(port), read_int(folder / SERVER_PID), folder, started=False, keeper_pid=keeper)


def _clear_stale(folder: Path) -> None:
    """Remove pid and port files whose processes are gone; an orphaned nx-27017 still serving this folder's data (its
    keeper killed where the kernel could not take the server down with it) is stopped first."""
    server = read_int(folder / SERVER_PID)
    if server is not None and _is_server(server, folder):
        _terminate(server, STOP_TIMEOUT_S)
    for name in (PORT_FILE, SERVER_PID, KEEPER_PID):
        (folder / name).unlink(missing_ok=True)


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns once the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not pid_alive(pid) or _zombie(pid), timeout_s):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid) or _zombie(pid), timeout_s)
    except ProcessLookupError:
        pass


def _zombie(pid: int) -> bool:
    """An exited child of ours not yet reaped counts as gone (reap it if it is ours)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _start(folder: Path, timeout_s: float) -> EmbeddedServer:
    """Start a keeper (which starts the server) and wait until the server answers; call with start.lock held."""
    server_command()  # not installed: say so here, in one line, rather than in the keeper's log
    idle = settings.SERVER_IDLE_S.get()
    args = [sys.executable, "-m", KEEPER_MODULE, str(folder), f"{idle:g}"]
    with (folder / LOG_FILE).open("ab") as out:
        # A new session: Ctrl-C in the terminal that started it must not reach a server other commands may be using.
        keeper = subprocess.Popen(
            args, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True
        )

    def ready() -> bool:
        port = read_int(folder / PORT_FILE)
        return keeper.poll() is not None or (port is not None and ping(uri_of(port), 0.5))

    wait_until(ready, timeout_s)
    port = read_int(folder / PORT_FILE)
    if keeper.poll() is None and port is not None and ping(uri_of(port), 0.5):
        return EmbeddedServer(uri_of(port), read_int(folder / SERVER_PID), folder, started=True, keeper_pid=keeper.pid)
    _terminate(keeper.pid, STOP_TIMEOUT_S)
    keeper.wait()
    tail = _tail(folder / LOG_FILE)
    raise StoreError(f"the embedded MongoDB server (nx-27017) did not start under {folder}", tail or "see its log")


def server_command() -> str:
    """The nx-27017 executable: beside this Python's, else on PATH; StoreError naming the install when missing."""
    beside = Path(sys.executable).with_name(SERVER_COMMAND)
    found = str(beside) if beside.exists() else shutil.which(SERVER_COMMAND)
    if not found:
        raise StoreError("the embedded MongoDB server (nx-27017) is not installed", INSTALL_HINT)
    return found


def free_port() -> int:
    """A loopback port free at the moment of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_free_port = free_port  # the tests' name for it


def wait_until(condition, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def _tail(path: Path, lines: int = 3) -> str:
    """The last ``lines`` lines of a log, from its last 64 KiB only (a log grows without bound)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - (64 << 10)))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])
