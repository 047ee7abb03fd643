"""Why a run store refused a write, in a few words: a full disk, a file size limit, a read-only file or
server. These are reasons outside cldash, which a user can act on; any other failed write is a bug to
report with its traceback, and `write_failure` says None for it."""

from __future__ import annotations

import errno

from sqlalchemy.exc import DBAPIError

from cldash.core.errors import StoreWriteError

_OS_REFUSALS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EFBIG: "the file size limit was reached", errno.EROFS: "the file system is read-only"}
_DB_REFUSALS = (("database or disk is full", "the disk is full"), ("no space left on device", "the disk is full"),
                ("readonly database", "the store is read-only"), ("read-only transaction", "the store is read-only"),
                ("disk i/o error", "the disk refused a write"), ("disk quota exceeded", "the disk quota is exceeded"))


def write_failure(exc: BaseException | None) -> str | None:
    """What refused a write, in a few words with the error it came from ("the disk is full (OSError 28
    writing /x/runs.db-wal)"), when `exc` or an exception behind it is a full disk, a file size limit or a
    read-only store; None for any other exception."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StoreWriteError):
            return exc.reason
        if isinstance(exc, OSError) and exc.errno in _OS_REFUSALS:
            where = f" writing {exc.filename}" if exc.filename else ""
            return f"{_OS_REFUSALS[exc.errno]} (OSError {exc.errno}{where})"
        if isinstance(exc, DBAPIError):
            exc = exc.orig
            continue
        text = (str(exc).strip().splitlines() or [""])[0]
        module = type(exc).__module__.split(".")[0]
        if module not in ("builtins", "sqlalchemy", "cldash"):   # an exception of a database driver
            for pattern, what in _DB_REFUSALS:
                if pattern in text.lower():
                    return f"{what} ({module}: {text})"
        exc = exc.__cause__ or exc.__context__
    return None
