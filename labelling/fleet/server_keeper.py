"""The keeper of an embedded nx-27017 server: ``python -m labelling.fleet.server_keeper FOLDER IDLE_S``.

:func:`labelling.fleet.mongo_server.ensure_server` starts one keeper per state folder (``FOLDER`` is ``<state>/mongo``). The
keeper starts nx-27017 as its child on a free loopback port, writes ``keeper.pid`` and then ``port`` (once the server
answers), and watches two things every half second:

- the lease: every command using the server holds a shared ``flock`` on ``FOLDER/lease`` while it is connected, and
  the kernel drops that lock when the command exits, however it exits (``kill -9`` included). When nobody has held it
  for ``IDLE_S`` seconds, the keeper stops the server and exits. It decides this holding ``start.lock``, the lock every
  command takes to find or start the server, so a command never connects to a server that is being stopped.
- its child: a server that dies is started again on the same port and data folder (clients' retries then reconnect),
  at most :data:`RESTARTS` times.

The server gets ``PR_SET_PDEATHSIG``, so it dies with the keeper (on Linux) instead of living on as an orphan; on
SIGTERM the keeper stops the server and removes its files. Everything the keeper says goes to ``nx-27017.log``.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RESTARTS = 3  # a server that keeps dying is given up on
POLL_S = 0.5
_PR_SET_PDEATHSIG = 1
_HELD: list = []  # the lock files, open until the process exits (closing one would drop its lock)


class _Stop(Exception):
    """SIGTERM, SIGINT or SIGHUP reached the keeper."""


def main(argv: list[str]) -> int:
    from labelling.fleet import mongo_server as ms

    folder, idle_s = Path(argv[0]), float(argv[1])
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _raise_stop)
    ms.write_atomically(folder / ms.KEEPER_PID, str(os.getpid()))
    child: subprocess.Popen | None = None
    try:
        child, port = _start_answering(folder)
        if child is None:
            _say("nx-27017 did not start; giving up")
            return 1
        ms.write_atomically(folder / ms.PORT_FILE, str(port))
        _say(f"nx-27017 (pid {child.pid}) serves {ms.uri_of(port)} for {folder}; it stops {idle_s:g} s after its last user")
        child = _watch(folder, child, port, idle_s)
        return 0
    except _Stop:
        _say("stopping nx-27017 (asked to)")
        return 0
    finally:
        _stop_child(child)
        _remove_own_files(folder)


def _watch(folder: Path, child: subprocess.Popen, port: int, idle_s: float) -> subprocess.Popen:
    """Keep the server up while it has users; returns (with the start lock held until exit) when it has been idle."""
    from labelling.fleet import mongo_server as ms

    lease = (folder / ms.LEASE_FILE).open("a")
    start_lock = (folder / ms.START_LOCK).open("a")
    _HELD.extend((lease, start_lock))
    restarts, idle_since = 0, None
    while True:
        if child.poll() is not None:
            restarts += 1
            _say(f"nx-27017 exited with code {child.returncode}; restart {restarts} of {RESTARTS} on port {port}")
            if restarts > RESTARTS:
                return child
            child = _launch(folder, port)
            if not _answers(child, port):
                return child
        fcntl.flock(start_lock, fcntl.LOCK_EX)
        try:
            fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            idle_since = None  # a command holds the lease
        else:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= idle_s:
                _say(f"no command has used the server for {idle_s:g} s; stopping it")
                # Both locks stay held until the process exits: the files go first (finally), then the locks.
                return child
            fcntl.flock(lease, fcntl.LOCK_UN)
        fcntl.flock(start_lock, fcntl.LOCK_UN)
        time.sleep(POLL_S)


def _start_answering(folder: Path) -> tuple[subprocess.Popen | None, int]:
    """The server on a free port, once it answers; a port taken between our probe and its bind is tried again."""
    from labelling.fleet import mongo_server as ms

    for _ in range(3):
        port = ms.free_port()
        child = _launch(folder, port)
        if _answers(child, port):
            return child, port
        _stop_child(child)
    return None, 0


def _answers(child: subprocess.Popen, port: int) -> bool:
    from labelling.fleet import mongo_server as ms

    ms.wait_until(lambda: child.poll() is not None or ms.ping(ms.uri_of(port), 0.5), ms.START_TIMEOUT_S)
    return child.poll() is None and ms.ping(ms.uri_of(port), 0.5)


def _launch(folder: Path, port: int) -> subprocess.Popen:
    from labelling.fleet import mongo_server as ms

    args = [ms.server_command(), "--host", "127.0.0.1", "-p", str(port), "--data-dir", str(folder / "data")]
    # The server logs to its console as well as to --log-file; the console alone also catches a crash at start-up.
    args += ["--log-file", os.devnull, "--pid-file", str(folder / ms.SERVER_PID)]
    (folder / "data").mkdir(exist_ok=True)
    with (folder / ms.LOG_FILE).open("ab") as out:
        return subprocess.Popen(
            args, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True, preexec_fn=_die_with_parent
        )


def _die_with_parent() -> None:
    """In the server's process before exec: SIGTERM it when the keeper dies (Linux; elsewhere the pid files catch it)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _stop_child(child: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _remove_own_files(folder: Path) -> None:
    """Remove the pid and port files, but only while they still name this keeper (a successor may have written its own)."""
    from labelling.fleet import mongo_server as ms

    if ms.read_int(folder / ms.KEEPER_PID) == os.getpid():
        for name in (ms.PORT_FILE, ms.SERVER_PID, ms.KEEPER_PID):
            (folder / name).unlink(missing_ok=True)


def _raise_stop(*_: object) -> None:
    raise _Stop


def _say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} labelling keeper (pid {os.getpid()}): {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
