"""Where a run store is and how to reach it: the path or URL a user gives, its password kept out of
messages, the SQLite file behind it, and the engine (one per URL) that connects to it.

SQLite by default (``runs.db`` in the working directory; ``--db`` or ``CLDASH_DB`` take a path
or any SQLAlchemy URL, PostgreSQL included). SQLite runs in WAL mode with a busy timeout, so
several run processes can write while the dashboard reads.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine

from cldash.core.errors import UserError


def default_db() -> str:
    return os.environ.get("CLDASH_DB") or "runs.db"


_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_PLAIN_PATH = re.compile(r"^(/|\\|\.{1,2}[/\\]|~|[a-zA-Z]:[/\\])")   # /x ./x ../x ~/x C:/x, and with backslashes


def to_url(db: str | os.PathLike | None) -> str:
    """A path (``runs.db``) or a SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://...``) as a URL.

    A value is a URL when it starts with a scheme and ``://``. Any other value with a colon in it
    looks like a mistyped URL (``postgresql:/x``, ``sqlite:x.db``, ``not a url::``) and is refused in
    one sentence rather than made into a SQLite file of that name, unless it is plainly a path: it
    starts with ``/``, ``./``, ``../``, ``~`` or a drive (``C:\\``), so ``./a:b.db`` is the file ``a:b.db``.
    """
    db = str(db) if db is not None else default_db()
    if _URL.match(db):
        return db
    if ":" in db and not _PLAIN_PATH.match(db):
        raise UserError(f"the run store {mask_url(db)!r} looks like a database URL but is not one (a URL starts "
                        "with its scheme and ://, as in sqlite:///runs.db or postgresql+psycopg://user@host/db); "
                        f"for a file of that name, write it as a path: ./{mask_url(db)}.")
    return f"sqlite:///{Path(db).expanduser().resolve()}"


_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)([^&]*)", re.IGNORECASE)


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the password in `url` is, also when `url` does not parse: from the colon after the user
    name to the last ``@`` (a password may hold any character, ``@`` and ``/`` included)."""
    at = url.rfind("@")
    if at <= 0 or url.startswith("sqlite"):   # a SQLite URL holds no password; an @ there is in a path
        return None
    start = url.find("://") + 3 if "://" in url[:at] else 0
    colon = url.find(":", start, at)
    return (colon + 1, at) if colon >= 0 else None


def mask_url(url: str) -> str:
    """`url` with its password masked: ``user:secret@host`` -> ``user:***@host``, ``?password=secret``
    -> ``?password=***``."""
    span = _password_span(url)
    if span:
        url = url[:span[0]] + "***" + url[span[1]:]
    return _QUERY_PASSWORD.sub(r"\1***", url)


def _secrets(url: str) -> list[str]:
    """The passwords `mask_url` hides in `url` (to mask them wherever else a message repeats them)."""
    span = _password_span(url)
    found = ([url[span[0]:span[1]]] if span else []) + [value for _, value in _QUERY_PASSWORD.findall(url)]
    return [f for f in found if len(f) >= 3]   # a shorter one would mask letters all over the message


def display_of(url: str) -> str:
    """The store as messages name it: a SQLite file's path, else the URL with its password masked."""
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else mask_url(url)


def mask_in(text: str, url: str) -> str:
    """`text` with the store's `url` shown as `display_of` and its password masked wherever it appears."""
    text = text.replace(url, display_of(url))
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


@functools.lru_cache(maxsize=64)
def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, ``sqlite:///file:PATH?mode=ro&uri=true`` included; None for an
    in-memory database or another kind of database."""
    if not url.startswith("sqlite"):
        return None
    parsed = make_url(url)
    path = parsed.database or ""
    if parsed.query.get("uri") in ("true", "1") and path.startswith("file:"):
        path = path[len("file:"):]
        if parsed.query.get("mode") == "memory":
            return None
    return Path(path) if path and path != ":memory:" else None


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")     # wait for a writer instead of failing
    try:
        cur.execute("PRAGMA journal_mode=WAL")   # readers never block the writers
    except sqlite3.OperationalError as exc:      # a read-only file can still be read as it is
        if "readonly" not in str(exc):
            raise
    cur.execute("PRAGMA synchronous=NORMAL")     # safe with WAL, much faster than FULL
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@functools.lru_cache(maxsize=16)
def _engine(url: str) -> Engine:
    """The engine of a store's URL, one per URL in a process (its connection pool is shared)."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None and not path.parent.is_dir():
            raise UserError(f"cannot open the run store {path}: the folder {path.parent} does not exist.")
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine
