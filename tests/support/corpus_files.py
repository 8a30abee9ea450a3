"""Corpus files the tests read: the bundled dev zip, the MultiWOZ 2.2 fixture, and the row fields of the contract."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_ZIP = ROOT / "labelling" / "data" / "multiwoz21_dev.json.zip"
MWZ22 = ROOT / "tests" / "fixtures" / "multiwoz22"
FIXTURE_IDS = ["PMUL0689.json", "MUL1160.json", "PMUL1579.json"]  # the dialogues the 2.2 fixture was made from
ROW_FIELDS = {
    "dialogue_id",
    "turn_id",
    "domains",
    "system_utterances",
    "user_utterances",
    "system_response",
    "slot_values",
    "last_slot_values",
    "turn_slot_values",
    "system_response_acts",
    "last_system_response_acts",
    "has_gold",
    "has_gold_acts",
}

# docs/method.md §1.3: the informable slots of the five evaluated services, in schema order.
INFORMABLE = {
    "hotel": ("price range", "type", "parking", "book day", "book people", "book stay", "stars", "internet", "name", "area"),
    "train": ("arrive by", "departure", "day", "book people", "leave at", "destination"),
    "attraction": ("area", "name", "type"),
    "restaurant": ("price range", "area", "food", "name", "book day", "book people", "book time"),
    "taxi": ("leave at", "destination", "departure", "arrive by"),
}
