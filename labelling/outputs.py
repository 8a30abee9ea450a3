"""Output folders this tool writes (ingest and export): checked before the slow part, written beside the target and
renamed into place, and marked, so that ``--overwrite`` replaces only a folder this tool wrote and never anything else."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labelling.bounded import Unreadable, read_regular
from labelling.errors import CorpusError

log = logging.getLogger(__name__)
MARKER = ".labelling-output.json"
_MARKER_BYTES = 1 << 20  # a marker lists a few dozen names; a larger one is not ours
_OTHER_OUT = "choose another --out"
# What `ingest --out` and `export` write: a DatasetDict (dataset_dict.json and one folder per split, named like
# train_0_50 or valid_64, holding what datasets' save_to_disk writes) and, for an export, its README.md card.
_TOP_FILES = frozenset({"dataset_dict.json", "README.md"})
_SPLIT_FOLDER = re.compile(r"\w+")
_SPLIT_FILES = re.compile(r"data-\d{5}-of-\d{5}\.arrow|dataset_info\.json|state\.json")


def check_output(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse an output path that is a file, the current folder or one above it, a folder that cannot be written, or a
    non-empty folder unless ``overwrite`` and it holds only what this tool wrote there; cheap, so callers check first."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CorpusError(f"{out}: exists and is not a folder", _OTHER_OUT)
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise CorpusError(
            f"{out}: is the current folder or holds it, and would be replaced", "choose a new folder, e.g. --out ./export"
        )
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise CorpusError(f"{out}: folder exists and is not empty", f"pass --overwrite to replace it, or {_OTHER_OUT}")
        foreign = foreign_entries(out)
        if foreign:
            raise CorpusError(
                f"{out}: --overwrite refused: {foreign}",
                f"{_OTHER_OUT}; --overwrite replaces only a folder written by `labelling ingest` or `labelling export`",
            )
    _check_writable(out)


def foreign_entries(folder: Path) -> str | None:
    """What in ``folder`` this tool did not write (described for a message), or None when it wrote all of it.

    The marker is not trusted blindly: it must list plain names of what this tool writes (no path, nothing hidden such
    as ``.git``), and each split folder it lists is checked like the top level (only what save_to_disk writes)."""
    marker = folder / MARKER
    if not marker.is_file() or marker.is_symlink():
        return f"it holds {_names(folder)} and no {MARKER} marker: `labelling` did not write it"
    listed, problem = _read_marker(marker)
    if problem is not None:
        return f"its {MARKER} marker {problem}, so `labelling` did not write it"
    extra = sorted(p.name for p in folder.iterdir() if p.name not in listed and p.name != MARKER)
    if extra:
        return f"it holds {_shown(extra)}, which `labelling` did not write"
    for name in sorted(listed):
        entry = folder / name
        if not entry.exists() and not entry.is_symlink():
            continue  # listed but gone: nothing to delete
        if name in _TOP_FILES:
            if entry.is_symlink() or not entry.is_file():
                return f"it holds {name}, which is not the file `labelling` wrote there"
            continue
        if entry.is_symlink() or not entry.is_dir():
            return f"it holds {name}, which is not the split folder `labelling` wrote there"
        inner = sorted(p.name for p in entry.iterdir() if not _SPLIT_FILES.fullmatch(p.name) or not p.is_file() or p.is_symlink())
        if inner:
            return f"it holds {_shown([f'{name}/{n}' for n in inner])}, which `labelling` did not write"
    return None


def _read_marker(marker: Path) -> tuple[set[str], str | None]:
    """The names the marker lists, or the reason it cannot be trusted."""
    try:
        data = json.loads(read_regular(marker, _MARKER_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # a 1 MiB marker may still nest past Python's stack
        return set(), f"cannot be read ({e if isinstance(e, Unreadable) else type(e).__name__})"
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("written_by") != "labelling":
        return set(), 'is not one `labelling` wrote (no "written_by": "labelling")'
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return set(), 'lists its files wrongly ("files" must be a list of names)'
    for name in files:
        if name.startswith(".") or "/" in name or "\\" in name or not (name in _TOP_FILES or _SPLIT_FOLDER.fullmatch(name)):
            return set(), f"lists {name!r}, which `labelling` never writes"
    return set(files), None


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def _names(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def _check_writable(out: Path) -> None:
    """The nearest folder that exists on the way to ``out`` must be writable: a read-only parent fails here, in one line."""
    folder = out.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CorpusError(f"{out}: cannot be written ({folder} is not writable)", _OTHER_OUT)


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` to write into; on success it is marked and renamed to ``out``, on failure removed.

    When ``out`` is a symlink to a folder, that folder is replaced and the link kept: nothing is left beside either."""
    if out.is_symlink() and out.resolve().is_dir():
        out = out.resolve()
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _mark(tmp)
        _move_into_place(tmp, out)
    except OSError as e:
        raise CorpusError(f"{out}: cannot be written ({e.strerror or e})", _OTHER_OUT) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there when writing or renaming failed


def _mark(folder: Path) -> None:
    names = sorted(p.name for p in folder.iterdir())
    (folder / MARKER).write_text(json.dumps({"written_by": "labelling", "files": names}), encoding="utf-8")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``; an existing ``out`` (already allowed by check_output) is moved aside first."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.is_symlink():
        old.unlink()
    elif old.exists():
        _remove_unless_foreign(old, out)


def _remove_unless_foreign(old: Path, out: Path) -> None:
    """Delete the folder ``out`` was moved aside to, after checking it again: what was written into ``out`` between
    check_output and now (a user's notes) is not this tool's to delete, so the folder is kept and a line says where."""
    foreign = foreign_entries(old)
    if foreign is None:
        shutil.rmtree(old, ignore_errors=True)
        return
    log.warning("the previous %s was kept as %s: %s (written there during the write)", out, old, foreign)
