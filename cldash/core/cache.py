"""Where cldash keeps files outside the run store ($CLDASH_CACHE): locally pre-trained backbones,
run logs, adapters of non-SQLite stores, locks; and the lock that keeps two processes from
building the same thing at once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """Where locally pre-trained backbones are kept: $CLDASH_CACHE, else ~/.cache/cldash."""
    return Path(os.environ.get("CLDASH_CACHE") or Path.home() / ".cache" / "cldash")


def cache_key(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock so that two runs starting at once pre-train a backbone only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl  # here, not at the top: POSIX only (elsewhere there is no lock)
        except ImportError:  # pragma: no cover - non-POSIX: no lock, atomic rename still holds
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
