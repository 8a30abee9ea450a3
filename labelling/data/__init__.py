"""The data this package ships: the MultiWOZ 2.2 service schema and the MultiWOZ 2.1 dev set (see README.md here)."""

from pathlib import Path

BUNDLED_SCHEMA = Path(__file__).parent / "multiwoz22_schema.json"
BUNDLED_CORPUS = Path(__file__).parent / "multiwoz21_dev.json.zip"  # what `labelling demo` and the benchmarks label
