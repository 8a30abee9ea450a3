"""Running the real `labelling` entry point inside a test process."""

from __future__ import annotations

import sys

from cli.app import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the real entry point in this process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["labelling", *map(str, args)])
    try:
        code = main()
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err
