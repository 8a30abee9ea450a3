"""Options several commands share, declared once so their names, defaults and help cannot drift apart."""

from __future__ import annotations

from typing import Any

import typer

from labelling import config as job_config


def profile_option(default: str | None = job_config.DEFAULT_PROFILE, note: str = "") -> Any:
    """The ``--profile`` option: its help lists the built-in profiles from the profile table (``config.PROFILES``), so
    a profile added there is offered by every command at once; ``note`` adds what the profile means for this command.
    ``default`` None leaves the choice to a config file or the stored group, and shows the profile used otherwise."""
    listed = ", ".join(job_config.PROFILES)
    help_text = f"Built-in settings: {listed}.{f' {note}' if note else ''}"
    return typer.Option(default, "--profile", help=help_text, show_default=default or job_config.DEFAULT_PROFILE)
