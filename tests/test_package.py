"""The package's front door: ``import labelling`` is light, and its public names resolve to the modules it documents."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_front_door_names_resolve_lazily_without_heavy_imports():
    code = (
        "import sys, labelling\n"
        "assert 'torch' not in sys.modules and 'mongoengine' not in sys.modules\n"
        "assert sorted(labelling.__all__) == sorted(labelling._EXPORTS)\n"
        "assert labelling.load_config().dst.model.model_name_or_path == 'qwen2.5-coder-0.5b'\n"
        # build_labeller lives with the models and imports torch: resolving it is left to the tests that load models
        "assert all(getattr(labelling, n) for n in labelling.__all__ if n != 'build_labeller')\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
