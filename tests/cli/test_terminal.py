"""What a user sees in a real terminal: `labelling run --local` in a tmux pane (160x50), through the installed command.

The last frame of the live bars and the status table under them must show each partition's true final state (the
store's), and nothing but our own lines: no third-party progress bars or warnings.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from labelling.fleet import store
from labelling.fleet.mongo_server import ensure_server
from tests.support.fleet_helpers import LABELLING, ingest_first, save_tiny_model, shortest, write_job

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]
BAR = re.compile(r"^(?P<split>\S+)\s+━+\s+(?P<done>\d+)/(?P<total>\d+)\s+(?P<state>\w+)\b")
ROW = re.compile(r"^│\s*(?P<split>train_\S+)(?: \(seed\))?\s*│\s*(?P<state>\w+)\s*│\s*(?P<done>\d+)/(?P<total>\d+)\s*│")
THIRD_PARTY = re.compile(r"it/s\]|s/it\]|\d+%\|| Warning|WARNING|Loading weights|Saving the dataset|Retrying in")
EXIT_MARK = "[labelling exited with "


class Pane:
    """A tmux server of our own with one 160x50 pane running a shell script; stopped (with its processes) at the end."""

    def __init__(self, script: Path):
        self.socket = f"labelling-test-{uuid.uuid4().hex[:8]}"
        self._tmux("new-session", "-d", "-x", "160", "-y", "50", f"sh {shlex.quote(str(script))}")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> list[str]:
        """Everything the pane shows and has scrolled off, as the terminal rendered it."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-").splitlines()

    def wait_for(self, text: str, timeout_s: float) -> list[str]:
        """The screen once ``text`` is on it; fails with the screen after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = self.screen()
            if any(text in line for line in lines):
                return lines
            time.sleep(1.0)
        pytest.fail(f"{text!r} not on the screen after {timeout_s:.0f} s:\n" + "\n".join(self.screen()))

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def local_run(tmp_path, fast_job, dev_dialogues, schema):
    """A group of three one-dialogue partitions on a tiny model, in a server of this test's own; stopped at the end."""
    with ensure_server(tmp_path / "db") as server:
        store.connect(server.uri)
        ingest_first("term-src", shortest(dev_dialogues, 3), schema, 3, 1)
        job = write_job(fast_job, save_tiny_model(tmp_path / "tiny-llama"), tmp_path / "job.json")
        env = {"LABELLING_MONGODB_URI": server.uri, "LABELLING_STATE_DIR": str(tmp_path / "state")}
        env |= {"LABELLING_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        command = [str(LABELLING), "run", "--corpus", "term-src", "--group", "g-term", "--config", str(job), "--local"]
        script = tmp_path / "run.sh"
        # COLUMNS from the test's own shell would override the pane's size, which a user's terminal reports itself.
        lines = ["unset LABELLING_BROKER_URL COLUMNS LINES", *(f"export {k}={shlex.quote(v)}" for k, v in env.items())]
        lines += [f"cd {shlex.quote(str(tmp_path))}", shlex.join(command), f'echo "{EXIT_MARK}$?]"', "sleep 600"]
        script.write_text("\n".join(lines) + "\n")
        try:
            yield script, server.uri
        finally:
            store.disconnect()


def test_the_last_frame_shows_the_stores_final_states(local_run):
    script, uri = local_run
    pane = Pane(script)
    try:
        screen = pane.wait_for(EXIT_MARK, timeout_s=900)
    finally:
        pane.close()
    text = "\n".join(screen)
    assert f"{EXIT_MARK}0]" in text, text

    store.connect(uri)  # this test's server: another module's fixture may have exported LABELLING_MONGODB_URI
    truth = {p.split: (p.status, p.turns_done, p.turns_total) for p in store.partitions("g-term")}
    assert len(truth) == 3 and {state for state, _, _ in truth.values()} == {store.DONE}
    bars = [m.groupdict() for line in screen if (m := BAR.match(line))]
    rows = [m.groupdict() for line in screen if (m := ROW.match(line))]
    for shown in (bars, rows):  # the live view's last frame, then the status table printed under it
        assert {s["split"]: (s["state"], int(s["done"]), int(s["total"])) for s in shown} == truth, text
        assert len(shown) == len(truth), text  # each partition drawn once: the frames were redrawn in place
    assert not [line for line in screen if THIRD_PARTY.search(line)], text
