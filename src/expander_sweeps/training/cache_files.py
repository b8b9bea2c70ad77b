"""Cache files that are checked before they are trusted.

Every cache file (dense models, audio features) is written atomically (a temporary file, then
a rename) with a sidecar `<name>.check` recording its size and, for small files, its SHA-256.
A file whose size or checksum differs from the record, or that cannot be loaded, is reported
once (a warning naming the file and what is wrong), deleted and rebuilt: a truncated cache
never fails every later trial. Files from before sidecars existed are trusted if they load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["write_checked", "read_checked", "CHECKSUM_LIMIT"]

log = logging.getLogger("expander_sweeps")

# Files up to this size get a SHA-256 too (a dense model: ~100 KB); the audio feature cache of
# Speech Commands is gigabytes, whose size and a successful load are checked instead.
CHECKSUM_LIMIT = 64 * 2**20


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".check")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def write_checked(path: Path, save: Callable[[Path], None]) -> None:
    """Write `path` with `save(temporary_path)`, then its sidecar; atomic for readers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    save(tmp)
    size = tmp.stat().st_size
    record: dict[str, Any] = {"size": size}
    if size <= CHECKSUM_LIMIT:
        record["sha256"] = _sha256(tmp)
    # The sidecar first: a crash between the two renames leaves a record without its file
    # (harmless: the file is absent), never a file that a stale record would condemn.
    check_tmp = _sidecar(tmp)
    check_tmp.write_text(json.dumps(record))
    os.replace(check_tmp, _sidecar(path))
    os.replace(tmp, path)


def _problem(path: Path) -> str | None:
    """What is wrong with a cache file according to its sidecar, or None."""
    sidecar = _sidecar(path)
    if not sidecar.exists():
        return None
    try:
        record = json.loads(sidecar.read_text())
        expected = int(record["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"its record {sidecar.name} is unreadable"
    size = path.stat().st_size
    if size != expected:
        return f"it holds {size} bytes but {expected} were written (truncated or overwritten)"
    if "sha256" in record and _sha256(path) != record["sha256"]:
        return "its SHA-256 differs from the one recorded when it was written"
    return None


def read_checked(path: Path, load: Callable[[Path], Any], what: str, repair: bool = True) -> Any | None:
    """`load(path)` if the file exists and is sound; None if it is absent or damaged. With
    `repair` (call it so only while holding the cache's lock, so that no other process is
    rewriting the file) a damaged file is deleted, with a warning, for the caller to rebuild."""
    if not path.exists():
        return None
    problem = _problem(path)
    if problem is None:
        try:
            return load(path)
        except Exception as err:  # a damaged file fails in many ways (zip, pickle, EOF, OS)
            problem = f"it cannot be loaded ({type(err).__name__}: {err})"
    if not repair:
        return None
    log.warning("the cached %s %s is damaged: %s; deleting it and rebuilding", what, path, problem)
    for stale in (path, _sidecar(path)):
        try:
            stale.unlink()
        except FileNotFoundError:
            pass
    return None
