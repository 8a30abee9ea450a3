"""The data this package ships: the MultiWOZ 2.2 service schema, the MultiWOZ 2.1 dev set, and the rule labeller's
MultiWOZ ontology and cue words (see README.md here)."""

from pathlib import Path

BUNDLED_SCHEMA = Path(__file__).parent / "multiwoz22_schema.json"
BUNDLED_CORPUS = Path(__file__).parent / "multiwoz21_dev.json.zip"  # what `labelling demo` and the benchmarks label
BUNDLED_ONTOLOGY = Path(__file__).parent / "multiwoz_ontology.json"  # slot values from the schema and the MultiWOZ database
BUNDLED_CUES = Path(__file__).parent / "multiwoz_cues.json"  # the rule labeller's cue words for the MultiWOZ schema
