"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A leaf module (standard library only), so reports, verdict files, caches and the model store share
one writer and one test of an abandoned temporary without importing each other.

A write goes to a temporary sibling `.NAME.XXXXXXXX.tmp` that its writer holds an exclusive `flock`
on; a writer killed mid-write leaves it behind, and the next write to the same path removes every
such sibling whose lock it can take (the kernel drops a dead process's flocks) and that is older
than STALE_AFTER_S (a writer locks its temporary right after creating it).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid
from pathlib import Path

STALE_AFTER_S = 60.0  # an unlocked temporary younger than this may belong to a writer about to lock it


def remove_if_abandoned(path: Path) -> bool:
    """Remove the temporary file or folder `path` (never a symlink) if no live writer holds its lock
    and it is older than STALE_AFTER_S; returns whether it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0))
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it
            return False
        if time.time() - os.fstat(fd).st_mtime < STALE_AFTER_S:
            return False
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return not os.path.lexists(path)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the lock


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the `.NAME.XXXXXXXX.tmp` files beside `path` that killed writers left; returns them."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    try:
        candidates = [p for p in path.parent.iterdir()
                      if pattern.fullmatch(p.name) and not p.is_symlink() and p.is_file()]
    except OSError:
        return []
    return [p for p in candidates if remove_if_abandoned(p)]


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a locked temporary sibling, fsync, rename over `path`: readers see old or new,
    never half. Temporaries of earlier writers that died are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, path)  # before close: the lock is held until the name is gone
    finally:
        tmp.unlink(missing_ok=True)
