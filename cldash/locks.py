"""An exclusive lock between processes on one machine, held on a lock file."""

from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path):
    """Hold an exclusive lock on `path` (created if missing, never removed: removing it while another
    process waits on it would let a third one lock a new file at the same time). Used so that two
    processes pre-train a backbone, start queued runs or upgrade a store only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no lock, atomic rename still holds
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
