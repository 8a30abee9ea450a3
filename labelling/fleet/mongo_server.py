"""The embedded MongoDB-wire server: nx-27017 on a free loopback port, used when ``LABELLING_MONGODB_URI`` is unset.

Everything lives under ``<state>/mongo``, where ``<state>`` is ``$LABELLING_STATE_DIR`` or, by default, ``.state``
relative to the current directory: ``data/`` (one SQLite file per database), ``nx-27017.log`` (the server's console
output: its log, and the traceback of a failed start), ``nx-27017.pid`` (written by the server), ``port`` (written once
it answers) and ``start.lock`` (serialises concurrent starts).

A running server is reused by every process that finds it (pid alive, port known, ping answered). Only the handle
that started a server stops it; a pid file left by a killed server is detected and replaced.
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

from labelling import settings
from labelling.errors import StoreError

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
SERVER_COMMAND = "nx-27017"
INSTALL_HINT = "pip install nx-27017==0.8.1, or point LABELLING_MONGODB_URI at a MongoDB server"
_START_ATTEMPTS = 3  # a free port can be taken by someone else between our probe and the server's bind


def state_dir() -> Path:
    """The local state folder: ``$LABELLING_STATE_DIR``, else ``./.state`` relative to the current directory."""
    return settings.STATE_DIR.get().expanduser().resolve()


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
    """A handle on the embedded server; ``started`` says whether this handle launched it (and so may stop it)."""

    uri: str
    pid: int
    folder: Path
    started: bool
    _process: subprocess.Popen | None = field(default=None, repr=False)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the server if this handle started it (SIGTERM, then SIGKILL after ``timeout_s``); True when it stopped it."""
        if not self.started:
            return False
        if pid_alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            if not self._wait_exit(timeout_s):
                os.kill(self.pid, signal.SIGKILL)
                self._wait_exit(timeout_s)
        for name in ("port", f"{SERVER_COMMAND}.pid"):
            (self.folder / name).unlink(missing_ok=True)
        self.started = False
        return True

    def _wait_exit(self, timeout_s: float) -> bool:
        if self._process is not None:  # our child: wait() also reaps it, so it does not linger as a zombie
            try:
                self._process.wait(timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        return _wait_until(lambda: not pid_alive(self.pid), timeout_s)

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_server(state: str | Path | None = None, timeout_s: float = START_TIMEOUT_S) -> EmbeddedServer:
    """The embedded server under ``state`` (default :func:`state_dir`): the running one if it answers, else a new one."""
    folder = Path(state).resolve() / "mongo" if state is not None else state_dir() / "mongo"
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / "start.lock"):
        found = _running(folder, timeout_s)
        if found is not None:
            return found
        (folder / f"{SERVER_COMMAND}.pid").unlink(missing_ok=True)  # stale: its process is gone or is someone else
        (folder / "port").unlink(missing_ok=True)
        return _start(folder, timeout_s)


# --- internals -----------------------------------------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``, so two processes never both decide to start a server."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
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


def _is_server(pid: int) -> bool:
    """Whether ``pid`` is a live nx-27017 process (not an unrelated process that reused a stale pid)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc").is_dir()  # no procfs (macOS): trust the pid, the ping decides
    except OSError:
        return False
    return b"nx-27017" in cmdline or b"nx_27017" in cmdline


def _uri(port: int) -> str:
    return f"mongodb://127.0.0.1:{port}"


def _running(folder: Path, timeout_s: float) -> EmbeddedServer | None:
    """The server recorded in ``folder`` if it is alive and answers; None when there is none (or only a stale pid file)."""
    pid = _read_int(folder / f"{SERVER_COMMAND}.pid")
    if pid is None or not _is_server(pid):
        return None
    port = _read_int(folder / "port")
    if port is None:
        raise StoreError(
            f"nx-27017 (pid {pid}) runs under {folder} but its port file is missing",
            f"stop it with `kill {pid}` and try again, or set {settings.MONGODB_URI.name}",
        )
    if not _wait_until(lambda: ping(_uri(port), 0.5), timeout_s):
        raise StoreError(f"nx-27017 (pid {pid}, port {port}) does not answer", f"see {folder / f'{SERVER_COMMAND}.log'}")
    return EmbeddedServer(_uri(port), pid, folder, started=False)


def _start(folder: Path, timeout_s: float) -> EmbeddedServer:
    command = _server_command()
    for _ in range(_START_ATTEMPTS):
        port = _free_port()
        process = _launch(command, folder, port)
        if _answers(process, port, timeout_s):
            (folder / "port").write_text(str(port))
            return EmbeddedServer(_uri(port), process.pid, folder, started=True, _process=process)
        if process.poll() is None:  # alive but silent for the whole timeout: give up on it
            process.kill()
            process.wait()
            break
    tail = _tail(folder / f"{SERVER_COMMAND}.log")
    raise StoreError(f"the embedded MongoDB server (nx-27017) did not start under {folder}", tail or "see its log")


def _answers(process: subprocess.Popen, port: int, timeout_s: float) -> bool:
    """Wait until the new server answers (True) or exits, e.g. because the port was taken meanwhile (False)."""
    _wait_until(lambda: process.poll() is not None or ping(_uri(port), 0.5), timeout_s)
    return process.poll() is None and ping(_uri(port), 0.5)


def _launch(command: str, folder: Path, port: int) -> subprocess.Popen:
    args = [command, "--host", "127.0.0.1", "-p", str(port), "--data-dir", str(folder / "data")]
    # The server logs to its console as well as to --log-file; the console alone also catches a crash at start-up.
    args += ["--log-file", os.devnull, "--pid-file", str(folder / f"{SERVER_COMMAND}.pid")]
    (folder / "data").mkdir(exist_ok=True)
    with (folder / f"{SERVER_COMMAND}.log").open("ab") as out:
        # A new session: Ctrl-C in the terminal that started it must not kill a server other processes may be using.
        return subprocess.Popen(
            args, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True
        )


def _server_command() -> str:
    beside = Path(sys.executable).with_name(SERVER_COMMAND)
    found = str(beside) if beside.exists() else shutil.which(SERVER_COMMAND)
    if not found:
        raise StoreError("the embedded MongoDB server (nx-27017) is not installed", INSTALL_HINT)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until(condition, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
