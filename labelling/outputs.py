"""Output folders this tool writes (ingest and export): checked before the slow part, written beside the target and
renamed into place, and marked, so that ``--overwrite`` replaces only a folder this tool wrote and never anything else."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labelling.errors import CorpusError

MARKER = ".labelling-output.json"
_OTHER_OUT = "choose another --out"


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
    """What in ``folder`` this tool did not write (described for a message), or None when it wrote all of it."""
    try:
        listed = set(json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"it holds {_names(folder)} and no {MARKER} marker: `labelling` did not write it"
    extra = sorted(p.name for p in folder.iterdir() if p.name not in listed and p.name != MARKER)
    shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
    return f"it holds {shown}, which `labelling` did not write" if extra else None


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
    """A fresh folder beside ``out`` to write into; on success it is marked and renamed to ``out``, on failure removed."""
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
    shutil.rmtree(old, ignore_errors=True)
