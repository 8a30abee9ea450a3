"""Third-party chatter off our screen: the Hugging Face libraries' progress bars and advisory warnings, switched off
through each library's own settings, so a command shows our progress and tables only (``--debug`` leaves them on).

The settings go into the environment (a value the user set wins), so worker pool processes and child commands inherit
them; libraries that are already imported are switched through their functions as well, since they read it at import.
"""

from __future__ import annotations

import logging
import os
import sys

QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub's bars, which transformers' weight-loading bars follow
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets: "Saving the dataset", map and filter bars
    "HF_HUB_VERBOSITY": "error",  # huggingface_hub: a retry warning per attempt when the hub cannot be reached
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
}
# Loggers of libraries that log through the standard logging module; errors still show.
QUIET_LOGGERS = ("huggingface_hub", "transformers", "datasets", "sentence_transformers", "httpx", "urllib3", "filelock")


def quiet_third_parties() -> None:
    """Switch the libraries' progress bars and warnings off for this process and the processes it starts."""
    effective = {name: os.environ.setdefault(name, value) for name, value in QUIET_ENV.items()}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    _switch_imported(effective)


def _switch_imported(effective: dict[str, str]) -> None:
    """The same switches for libraries imported before the environment was set (they read it at import)."""
    hub_bars_off = effective["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    if "huggingface_hub" in sys.modules and hub_bars_off:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules and hub_bars_off:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if "datasets" in sys.modules and effective["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1":
        import datasets

        datasets.disable_progress_bars()
