"""Real services for the fleet tests: a RabbitMQ vhost of a run's own, commands started as services with a log file,
and waiting on a condition with the services' logs in the failure message. Shared by the integration and chaos suites.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

AMQP = os.environ.get("LABELLING_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def rabbitmqctl(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess | None:
    """Run ``rabbitmqctl ARGS``; None when it is not installed (a broker elsewhere)."""
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        return None
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout_s)


def _ok(*args: str) -> bool:
    done = rabbitmqctl(*args)
    return done is not None and done.returncode == 0


@contextmanager
def own_broker(tag: str) -> Iterator[tuple[str, dict]]:
    """A broker URL no other run shares, and the environment that goes with it: a fresh vhost (deleted afterwards),
    else the default vhost with queue names of our own."""
    vhost = f"labelling-test-{tag}"
    if _ok("add_vhost", vhost) and _ok("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"):
        try:
            yield f"{AMQP}/{vhost}", {}
        finally:
            _ok("delete_vhost", vhost)
    else:
        yield f"{AMQP}//", {"LABELLING_QUEUE_PREFIX": f"labelling-test-{tag}"}


class Service:
    """A command started in its own session (so stopping it stops its pool processes too), logging to a file."""

    def __init__(self, args: Sequence[str], env: dict, log: Path):
        self.args, self.env, self.log = list(args), env, log
        self.offset = log.stat().st_size if log.exists() else 0  # where this start's output begins in a shared log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def alive(self) -> bool:
        """Whether the command is still running."""
        return self.process.poll() is None

    def output(self) -> str:
        """What this start of the command has logged so far."""
        with self.log.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of its log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole session at once: a crash nothing can clean up after."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        """SIGTERM the session, SIGKILL after 30 s."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> Service:
        """The same command started again, appending to the same log."""
        return Service(self.args, self.env, self.log)


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def until(condition: Callable[[], T], timeout_s: float, what: str, services: Sequence[Service], poll_s: float = 1.0) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail with the services' logs on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll_s)
    logs = "\n\n".join(f"--- {s.log.name}\n{s.tail()}" for s in services)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")
