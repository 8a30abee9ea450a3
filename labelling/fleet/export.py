"""Export a group's completed partitions as a Hugging Face ``DatasetDict``, named and split as the reference did.

Splits: ``train`` (every labelled turn), ``valid_64`` (64 dialogues drawn with ``random.Random(42)`` from the dialogue
ids in order of first appearance) and ``train_minus_64`` (the rest). A group of fewer than 128 dialogues gives
``valid_64`` half of them (rounded down), so training keeps at least half; the split names stay fixed for the
configs that read them. A group of one dialogue has nothing to hold out: ``valid_64`` is then left out (an empty split
would make ``datasets.load_from_disk`` fail) and the card and the export summary say so.

Rows are in corpus order (a dialogue's turns together) and carry the reference's turn fields with the *predicted*
labels in the label fields (docs/method.md §10.1), plus ``labelled_split`` and ``label_flags`` for provenance. No gold
value reaches a row.

The name is ``manifest_self_labelled_{group}_{num_dialogues}_{hash}``; the hash follows docs/method.md §10.3 over the
manifest entries sorted by run id, each serialised as the reference's ``ManifestEntry`` dict (see ``hashed_entry``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from labelling import embedded
from labelling.corpus import dataset_features
from labelling.errors import LabellingError
from labelling.examples import EXPORT_PROVENANCE_COLUMN, GIVEN, SELF_LABELLED
from labelling.fleet import store
from labelling.method.metrics import METRIC_TITLES, MetricsAccumulator
from labelling.outputs import check_output, staged
from labelling.records import PoolRefresh
from labelling.redact import mask_uri
from labelling.schema import Schema

if TYPE_CHECKING:
    from datasets import DatasetDict, Features

VALID_DIALOGUES = 64
VALID_SEED = 42
TRAIN, TRAIN_MINUS, VALID = "train", f"train_minus_{VALID_DIALOGUES}", f"valid_{VALID_DIALOGUES}"
GOLD_MARKERS = ("has_gold", "has_gold_acts")  # Turn.to_row's flags: on predicted rows they would only mislead
_OFFLINE_VALUES = ("1", "true", "yes", "on")
NO_VALID = "a group of one dialogue has none to hold out"
PROVENANCE_COLUMN, CONFIDENCE_COLUMN, ACTS_CONFIDENCE_COLUMN = EXPORT_PROVENANCE_COLUMN, "label_confidence", "acts_confidence"
EXAMPLES_SPLIT = "(examples)"  # the labelled_split of a group's seed examples: no partition can have this name


@dataclass
class ExportResult:
    """What an export produced: name and hash, counts, the manifest entries it covers and the dataset card."""

    name: str
    hash: str
    group: str
    num_dialogues: int
    num_turns: int
    split_sizes: dict[str, int]
    entries: list[dict]
    card: str
    missing: list[str] = field(default_factory=list)
    path: Path | None = None
    examples: dict | None = None  # the group's seed examples: source, dialogues, turns (None: it has none)
    abstention: Abstention | None = None  # what --min-confidence kept (None: every label)


@dataclass(frozen=True)
class Abstention:
    """What ``--min-confidence`` kept: each dialogue up to its first self-label below ``threshold``."""

    threshold: float
    kept: int  # self-labelled turns kept
    labelled: int  # self-labelled turns before the cut
    cut_dialogues: int  # dialogues cut short (an empty one included)
    empty_dialogues: int  # dialogues with no turn left

    @property
    def line(self) -> str:
        """The card's and the summary's sentence."""
        share = f" ({self.kept / self.labelled:.1%})" if self.labelled else ""
        return (
            f"min confidence {self.threshold:g}: kept {self.kept} of {self.labelled} self-labelled turns{share}, each "
            f"dialogue up to its first label below {self.threshold:g} (a state is cumulative, so later turns inherit an "
            f"early doubt); {self.cut_dialogues} dialogues cut short, {self.empty_dialogues} of them left out whole"
        )


# --- naming --------------------------------------------------------------------------------------------------


def hashed_entry(entry: Mapping) -> dict:
    """The stable dict hashed for one manifest entry: the reference's ManifestEntry fields, our corpus as its dataset."""
    return {
        "group_id": entry["group_id"],
        "run_id": entry["run_id"],
        "num_logs": int(entry["num_logs"]),
        "labelled_dataset_path_or_name": entry["corpus"],
        "labelled_dataset_split_name": entry["split"],
    }


def short_hash(entries: Sequence[Mapping]) -> str:
    """docs/method.md §10.3: SHA-256 of ``json.dumps(entries, sort_keys=True)``, urlsafe base64, 12 characters, ``-`` -> ``x``."""
    digest = hashlib.sha256(json.dumps(list(entries), sort_keys=True).encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:12].replace("-", "x")


def dataset_name(group: str, num_dialogues: int, entries: Sequence[Mapping]) -> str:
    """``manifest_self_labelled_{group}_{num_dialogues}_{hash}``, ``entries`` being hashed entries in manifest order."""
    return f"manifest_self_labelled_{group}_{num_dialogues}_{short_hash(entries)}"


def train_valid_split(
    dialogue_ids: Sequence[str], count: int = VALID_DIALOGUES, seed: int = VALID_SEED
) -> tuple[list[str], list[str]]:
    """(training, validation) dialogue ids: first-appearance order shuffled by ``Random(seed)``, the first ``count`` held out.

    At most half the dialogues are held out, so a small group still trains on something.
    """
    ids = list(dict.fromkeys(dialogue_ids))
    random.Random(seed).shuffle(ids)
    held = min(count, len(ids) // 2)
    return ids[held:], ids[:held]


# --- building ------------------------------------------------------------------------------------------------


def export_features(schema: Schema) -> Features:
    """The exported columns: the reference's turn fields plus ``labelled_split``, ``label_flags``, ``label_provenance``
    (``given`` or ``self-labelled``), ``label_confidence`` (the state's) and ``acts_confidence`` (null for given
    labels and for labels made before confidences were stored)."""
    from datasets import Features, List, Value

    columns = {name: kind for name, kind in dataset_features(schema).items() if name not in GOLD_MARKERS}
    extra = {"labelled_split": Value("string"), "label_flags": List(Value("string"))}
    extra |= {PROVENANCE_COLUMN: Value("string"), CONFIDENCE_COLUMN: Value("float64"), ACTS_CONFIDENCE_COLUMN: Value("float64")}
    return Features({**columns, **extra})


def build_dataset(
    group: str, allow_partial: bool = False, min_confidence: float | None = None
) -> tuple[DatasetDict, ExportResult]:
    """The group's completed partitions (and its seed examples, marked ``given``) as a DatasetDict, and a description
    of it (card included). ``min_confidence`` keeps each dialogue up to its first self-label below it.

    Refuses a group with incomplete partitions unless ``allow_partial``, naming the splits that are missing.
    """
    import datasets

    parts = store.partitions(group)
    missing = [p.split for p in parts if p.status != store.DONE]
    done = [p for p in parts if p.status == store.DONE]
    _check_complete(group, missing, done, allow_partial)
    config = store.group_config(group)
    schema = config.load_schema()
    given = store.group_examples(group)
    rows = _example_rows(given, schema) + [row for p in done for row in _partition_rows(group, p, schema)]
    check_no_duplicates(rows)
    abstention = None
    if min_confidence is not None:
        rows, abstention = keep_confident(rows, min_confidence)
        if not rows:
            raise LabellingError(f"--min-confidence {min_confidence:g} keeps no turn of group {group!r}", "lower the threshold")
    train = datasets.Dataset.from_list(rows, features=export_features(schema))
    order = train["dialogue_id"]
    keep, held = train_valid_split(order)
    data = datasets.DatasetDict({TRAIN: train, TRAIN_MINUS: _subset(train, order, keep)})
    if held:  # datasets cannot load back an empty split: with nothing to hold out, there is no validation split
        data[VALID] = _subset(train, order, held)
    entries = [hashed_entry(e) for e in store.manifest_entries(group) if e["split"] in {p.split for p in done}]
    num_dialogues = len(dict.fromkeys(order))
    result = ExportResult(
        name=dataset_name(group, num_dialogues, entries),
        hash=short_hash(entries),
        group=group,
        num_dialogues=num_dialogues,
        num_turns=len(rows),
        split_sizes={name: len(split) for name, split in data.items()},
        entries=entries,
        card="",
        missing=missing,
        abstention=abstention,
    )
    if given.turns:
        result.examples = {"source": given.source, "dialogues": given.dialogues, "turns": len(given.turns)}
        result.examples["given"] = given.provenance.count(GIVEN)
    result.card = dataset_card(result, store.group_run(group), parts)
    return data, result


def _check_complete(group: str, missing: list[str], done: list, allow_partial: bool) -> None:
    if missing and not allow_partial:
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise LabellingError(
            f"group {group!r} has {len(missing)} incomplete partitions: {shown}",
            "wait for them to finish, or pass --allow-partial to export only the completed ones",
        )
    if not done:
        raise LabellingError(f"group {group!r} has no completed partition to export")


def _partition_rows(group: str, part: store.Partition, schema: Schema) -> list[dict]:
    """One row per labelled turn of a completed partition; a done partition missing labels is an inconsistency, not skipped."""
    pairs = store.labelled_turns(group, part.split)
    if len(pairs) != part.turns_total:
        raise LabellingError(f"partition {group}/{part.split} is done but holds {len(pairs)} of {part.turns_total} labels")
    rows = []
    for example, stored in pairs:
        row = {k: v for k, v in example.to_row(schema).items() if k not in GOLD_MARKERS}
        row |= {"labelled_split": part.split, "label_flags": list(stored.label.flags), PROVENANCE_COLUMN: SELF_LABELLED}
        rows.append({**row, CONFIDENCE_COLUMN: stored.label.confidence, ACTS_CONFIDENCE_COLUMN: stored.label.act.confidence})
    return rows


def _example_rows(given: store.StoredExamples, schema: Schema) -> list[dict]:
    """The group's seed examples as rows, with the provenance they were given with (no confidence: not predicted)."""
    rows = []
    for turn, provenance in zip(given.turns, given.provenance, strict=True):
        row = {k: v for k, v in turn.to_row(schema).items() if k not in GOLD_MARKERS}
        rows.append({**row, "labelled_split": EXAMPLES_SPLIT, "label_flags": [], PROVENANCE_COLUMN: provenance})
        rows[-1] |= {CONFIDENCE_COLUMN: None, ACTS_CONFIDENCE_COLUMN: None}
    return rows


def keep_confident(rows: Sequence[Mapping], threshold: float) -> tuple[list[Mapping], Abstention]:
    """Each dialogue's rows up to (not including) its first self-label whose confidence is below ``threshold``; seed
    examples and labels without a confidence are never the cut. Rows keep their order."""
    by_dialogue: dict[str, list[Mapping]] = {}
    for row in rows:
        by_dialogue.setdefault(row["dialogue_id"], []).append(row)
    kept: set[int] = set()
    cut = empty = 0
    for turns in by_dialogue.values():
        ordered = sorted(turns, key=lambda r: r["turn_id"])
        doubt = next((i for i, r in enumerate(ordered) if _below(r, threshold)), len(ordered))
        kept.update(id(r) for r in ordered[:doubt])
        cut += doubt < len(ordered)
        empty += doubt == 0
    labelled = [r for r in rows if r[PROVENANCE_COLUMN] == SELF_LABELLED]
    count = sum(id(r) in kept for r in labelled)
    return [r for r in rows if id(r) in kept], Abstention(threshold, count, len(labelled), cut, empty)


def _below(row: Mapping, threshold: float) -> bool:
    sure = row[CONFIDENCE_COLUMN]
    return row[PROVENANCE_COLUMN] == SELF_LABELLED and sure is not None and sure < threshold


def check_no_duplicates(rows: Sequence[Mapping]) -> None:
    """Raise LabellingError unless each (dialogue, turn) appears once and each dialogue comes from one partition.

    Labels are keyed so in the store; this guards the merge itself.
    """
    turns = Counter((r["dialogue_id"], r["turn_id"]) for r in rows)
    twice = [key for key, n in turns.items() if n > 1]
    sources: dict[str, set[str]] = {}
    for r in rows:
        sources.setdefault(r["dialogue_id"], set()).add(r["labelled_split"])
    split_across = [d for d, splits in sources.items() if len(splits) > 1]
    if twice or split_across:
        raise LabellingError(
            f"duplicated rows in the merge: turns {twice[:5]}, dialogues in several partitions {split_across[:5]}"
        )


def _subset(data, order: Sequence[str], dialogue_ids: Sequence[str]):
    wanted = set(dialogue_ids)
    return data.select([i for i, d in enumerate(order) if d in wanted])


# --- the card ------------------------------------------------------------------------------------------------

_ABOUT = (
    "Utterances only, self-labelled by a language model: each user turn carries a predicted dialogue state (cumulative, "
    "with its delta) and the predicted dialogue acts of the system response, each chosen among sampled candidates as the "
    "job config below sets out. Gold annotations were never shown to the model and are not in this dataset."
)


def dataset_card(result: ExportResult, group: store.GroupRun, parts: Sequence[store.Partition]) -> str:
    """The README.md: group, counts, partitions with their metrics, the job config (URIs masked) and the manifest entries."""
    lines = ["---", f"pretty_name: {result.name}", "tags:", "- task-oriented-dialogue", "- dialogue-state-tracking", "---", ""]
    lines += [f"# {result.name}", "", _ABOUT, ""]
    lines += [
        f"- group: `{result.group}`, corpus: `{group.corpus}`",
        f"- dialogues: {result.num_dialogues}, turns: {result.num_turns}",
    ]
    lines += [f"- split `{name}`: {size} turns" for name, size in result.split_sizes.items()]
    if VALID not in result.split_sizes:
        lines.append(f"- split `{VALID}`: left out: {NO_VALID}")
    if result.missing:
        lines.append(
            f"- partial export: {len(result.missing)} partitions not complete were left out: {', '.join(result.missing)}"
        )
    lines += card_provenance(result)
    notices = model_notices(group.config)
    if notices:
        lines += ["", "## Models", "", "The labels were made with:", ""] + [f"- {notice}" for notice in notices]
    lines += ["", "## Partitions", "", _partition_table(parts), "", "## Job config", "", "```json"]
    lines += [json.dumps(_masked(group.config), indent=2, sort_keys=True), "```", "", "## Manifest entries", ""]
    lines += [
        f"Hash `{result.hash}`: SHA-256 of `json.dumps(entries, sort_keys=True)`, urlsafe base64, 12 characters, `-` -> `x`.",
        "",
    ]
    lines += ["```json", json.dumps(result.entries, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def card_provenance(result: ExportResult) -> list[str]:
    """The card's lines on where labels came from (column ``label_provenance``), their confidence and any cut."""
    lines = []
    if result.examples:
        ex = result.examples
        lines.append(
            f"- seed examples: {ex['dialogues']} dialogues, {ex['turns']} turns from `{ex['source']}` "
            f"({ex['given']} `given`, {ex['turns'] - ex['given']} `self-labelled`), rows with `labelled_split` "
            f"`{EXAMPLES_SPLIT}`: labels the model did not make, in the example pool before the seed partition, "
            "never labelled again and never scored"
        )
    lines.append(
        f"- every self-labelled row has `{PROVENANCE_COLUMN}` `{SELF_LABELLED}` and a `{CONFIDENCE_COLUMN}` in [0, 1] "
        f"(its state's; the acts' is `{ACTS_CONFIDENCE_COLUMN}`; see the labelling README for what each means per decoding "
        "mode)"
    )
    if result.abstention:
        lines.append(f"- {result.abstention.line}")
    return lines


def model_notices(config: Mapping) -> list[str]:
    """The attribution of each embedded model (labelling/embedded.py) a stored job config labels with, once each."""
    modules = [config.get(module, {}) for module in ("dst", "act_tag")]
    by_lm = [m for m in modules if m.get("generation_cfg", {}).get("generation_mode") != "rules"]  # rules load no model
    names = [m.get("model", {}).get("model_name_or_path", "") for m in by_lm]
    models = {m.alias: m for m in map(embedded.find, names) if m is not None}
    return [model.notice for model in models.values()]


def _partition_table(parts: Sequence[store.Partition]) -> str:
    titles = " | ".join(METRIC_TITLES[key] for key in SCORE_CELLS)
    header = f"| split | status | attempt | turns | {titles} | pool at start | finished (UTC) |"
    rows = [header, "|" + "---|" * 9]
    for p in parts:
        jga, turn_acc, act_f1 = score_cells(MetricsAccumulator.from_dict(p.metrics or {}).summary())
        start = PoolRefresh.from_dict(p.pool[0]) if p.pool else None
        pool = f"{len(start.splits)} partitions, {start.examples} examples" if start else "-"
        finished = datetime.fromtimestamp(p.finished_at, timezone.utc).strftime("%Y-%m-%d %H:%M") if p.finished_at else "-"
        cells = (p.split, p.status, p.attempt_id or "-", p.turns_total, jga, turn_acc, act_f1, pool, finished)
        rows.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(rows)


SCORE_CELLS = ("jga", "turn_acc", "acts_f1")  # the figures score_cells gives, in its order


def score_cells(summary: Mapping) -> tuple[str, str, str]:
    """Exact JGA, exact turn accuracy and triple act F1 of a metrics summary as text (:data:`SCORE_CELLS`), ``-`` where
    no turn had gold."""
    dst = (f"{summary['jga']:.3f}", f"{summary['turn_acc']:.3f}") if summary["n_dst"] else ("-", "-")
    return (*dst, f"{summary['acts_f1']:.3f}" if summary["n_acts"] else "-")


def _masked(value: object) -> object:
    """A copy of a config with every URI's password hidden."""
    if isinstance(value, Mapping):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return mask_uri(value) if isinstance(value, str) and "://" in value else value


# --- writing and publishing ----------------------------------------------------------------------------------


def export_group(
    group: str, out: str | Path, allow_partial: bool = False, overwrite: bool = False, min_confidence: float | None = None
) -> ExportResult:
    """Build the group's dataset and save it with its README.md at ``out`` (written beside it, then renamed into place)."""
    out = Path(out)
    check_output(out, overwrite)  # before the slow part
    data, result = build_dataset(group, allow_partial, min_confidence)
    with staged(out) as tmp:
        data.save_to_disk(str(tmp))
        (tmp / "README.md").write_text(result.card, encoding="utf-8")
    result.path = out
    return result


def push_to_hub(path: str | Path, repo: str, private: bool = True) -> str:
    """Upload an exported folder (all splits, then its README.md as the card) to ``repo``; the token comes from ``HF_TOKEN``."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise LabellingError(
            f"cannot push to {repo}: HF_TOKEN is not set", "export HF_TOKEN=<a write token>; the dataset on disk is complete"
        )
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _OFFLINE_VALUES:
        raise LabellingError(
            f"cannot push to {repo}: Hugging Face Hub offline mode is on", "unset HF_HUB_OFFLINE on a machine with network"
        )
    import datasets
    from huggingface_hub import HfApi

    folder = Path(path)
    try:
        datasets.load_from_disk(str(folder)).push_to_hub(repo, private=private, token=token)
        HfApi(token=token).upload_file(
            path_or_fileobj=str(folder / "README.md"), path_in_repo="README.md", repo_id=repo, repo_type="dataset"
        )
    except Exception as e:  # network, auth and hub errors come from several libraries; all mean the same to the user
        raise LabellingError(
            f"could not push {folder} to the Hugging Face Hub as {repo} ({type(e).__name__}: {e})",
            "check the network, the token's write access and the repo name; the dataset on disk is complete",
        ) from e
    return f"https://huggingface.co/datasets/{repo}"
