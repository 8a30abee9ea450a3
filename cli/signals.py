"""SIGTERM handled like Ctrl-C by the commands that keep their work on an interrupt (``label-split``): the work so far
is kept, the resume note is printed, and the exit code is still 128 + 15, as a process killed by SIGTERM would give."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so the same cleanup and resume note follow."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within this block SIGTERM raises :class:`Terminated`; the previous handler is restored after it."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
