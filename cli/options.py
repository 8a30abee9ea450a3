"""Options several commands share, declared once so their names, defaults and help cannot drift apart."""

from __future__ import annotations

from typing import Any

import typer

from labelling import config as job_config
from labelling.limits import MAX_DIALOGUES


def profile_option(default: str | None = job_config.DEFAULT_PROFILE, note: str = "") -> Any:
    """The ``--profile`` option: its help lists the built-in profiles from the profile table (``config.PROFILES``), so
    a profile added there is offered by every command at once; ``note`` adds what the profile means for this command.
    ``default`` None leaves the choice to a config file or the stored group, and shows the profile used otherwise."""
    listed = ", ".join(job_config.PROFILES)
    help_text = f"Built-in settings: {listed}.{f' {note}' if note else ''}"
    return typer.Option(default, "--profile", help=help_text, show_default=default or job_config.DEFAULT_PROFILE)


def examples_option(skipped: str = "dialogues it labels are skipped from them") -> Any:
    """``--examples SRC``: a labelled corpus put into the example pool first (job-config key ``examples``); ``skipped``
    says which of its dialogues this command leaves out."""
    help_text = (
        "Labelled dialogues put into the example pool before the seed partition: a corpus `labelling ingest` reads "
        f"(MultiWOZ 2.1 / 2.2, a turn dataset with gold) or an earlier `labelling export` (job-config key `examples`); {skipped}."
    )
    return typer.Option(None, "--examples", help=help_text, show_default="none")


def examples_dialogues_option() -> Any:
    """``--examples-dialogues N``: only the first N dialogues of ``--examples``."""
    return typer.Option(
        None,
        "--examples-dialogues",
        min=1,
        max=MAX_DIALOGUES,
        help="Use only the first N dialogues of --examples.",
        show_default="all",
    )
