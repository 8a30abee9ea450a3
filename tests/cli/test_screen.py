"""One coherent screen: the libraries' progress bars and warnings switched off through their own settings (a value the
user set wins), and the one-off GGUF conversion known in advance so the CLI can show it as a step of its own.

The live views' last frame is checked in a real terminal in test_terminal.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from labelling.engine import model_files
from labelling.quiet import QUIET_ENV, QUIET_LOGGERS, quiet_third_parties

SAVE_A_DATASET = """
import sys
if sys.argv[1] == "quiet":
    from labelling.quiet import quiet_third_parties
    quiet_third_parties()
import datasets
datasets.Dataset.from_dict({"a": list(range(10))}).save_to_disk(sys.argv[2])
"""


def test_quiet_sets_the_libraries_switches_but_keeps_what_the_user_set(monkeypatch):
    for name in QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_VERBOSITY", "info")
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        quiet_third_parties()
        assert os.environ["HF_HUB_VERBOSITY"] == "info"
        assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
        assert logging.getLogger("sentence_transformers").getEffectiveLevel() == logging.ERROR
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_saving_a_dataset_draws_no_bar_once_quiet(tmp_path):
    def stderr(mode: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}
        command = [sys.executable, "-c", SAVE_A_DATASET, mode, str(tmp_path / mode)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "Saving the dataset" in stderr("loud")  # what the export showed three times before
    assert stderr("quiet") == ""


def test_a_pending_conversion_is_known_until_the_folder_exists(monkeypatch, tmp_path):
    monkeypatch.setenv("LABELLING_CACHE_DIR", str(tmp_path))
    gguf = model_files.embedded_gguf()
    assert model_files.pending_conversion("smollm2") == gguf
    assert model_files.pending_conversion(str(gguf)) == gguf
    model_files._target_for(gguf).mkdir(parents=True)  # what a finished conversion leaves
    assert model_files.pending_conversion("smollm2") is None
    assert model_files.pending_conversion(str(tmp_path)) is None  # a model folder needs no conversion
    assert model_files.pending_conversion("HuggingFaceTB/SmolLM2-135M") is None
