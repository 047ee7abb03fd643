"""Schema migrations of the run store, with Alembic.

Every change to the schema in cldash.store.schema is a new revision in ``versions/`` (``0001`` is the
store as cldash 0.1.0 made it before migrations); `HEAD` names the newest, and a test checks it
against the scripts. A new revision is a file written by hand after the last one (``revision``,
``down_revision``, ``upgrade()``, ``downgrade()``), plus the model change and a new `HEAD`.

Opening a store (`cldash.store.Store`) calls `ensure`. At the head revision it costs one query
and writes nothing, and Alembic is not even imported. An empty database is created at the head.
An older store is upgraded in place (`upgrade`), a SQLite file being copied first to
``<file>.bak-<revision>``. A store at a revision this cldash does not know was written by a
newer cldash and is refused. A store made before migrations has no ``alembic_version`` table;
its ``meta`` table says ``schema_version = 1``, and it is revision 0001.

An upgrade runs in one transaction (on SQLite too: it begins with BEGIN IMMEDIATE), so a failed
one leaves the store as it was. Two processes opening an old store at once upgrade it once: the
upgrade holds a lock (a lock file next to a SQLite file, ``<file>-migrate.lock``; an advisory
lock on PostgreSQL) and reads the revision again once it has it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import sys
from pathlib import Path

from sqlalchemy import Text, column, delete, insert, inspect, select, table, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from cldash import __version__
from cldash.core.cache import file_lock
from cldash.core.errors import UserError
from cldash.store.urls import sqlite_path

HEAD = "0009"
# oldest first; any other revision comes from a newer cldash
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009")
VERSION_KEY = "cldash_version"   # meta: the cldash that last created or upgraded the store
_PG_LOCK = 0x636C64617368        # "cldash" in ASCII: the advisory-lock key held while upgrading
_META = table("meta", column("key", Text), column("value", Text))


def ensure(store, migrate: bool = True) -> str | None:
    """Check the store's revision as it is opened: refuse one from a newer cldash, upgrade an older
    one, and return the revision it is at. With `migrate` false, only return its revision."""
    with store.engine.connect() as conn:
        revision = _revision(conn, store.display, probe=True)
        if revision == HEAD or not migrate:
            return revision
        if revision is not None and revision not in REVISIONS:
            raise UserError(_too_new(conn, store.display, revision))
    message = upgrade(store)
    if message and revision is not None:   # creating a new store is not news
        print(message, file=sys.stderr)
    return HEAD


def current(store) -> dict:
    """Where the store stands: its revision, the head, the revisions pending, the cldash in meta,
    and the backup an upgrade would make."""
    with store.engine.connect() as conn:
        revision = _revision(conn, store.display, probe=True)
        written_by = _meta_value(conn, VERSION_KEY)
    known = revision is None or revision in REVISIONS
    pending = list(REVISIONS[REVISIONS.index(revision) + 1:] if revision else REVISIONS) if known else []
    backup = _backup_name(store, revision) if pending and revision and _sqlite_file(store) else None
    return {"store": store.display, "revision": revision, "head": HEAD, "known": known, "pending": pending,
            "cldash": written_by, "backup": backup}


def upgrade(store) -> str | None:
    """Apply the pending revisions in one transaction (a SQLite file is copied first); returns one
    line saying what was done, or None when the store was at the head already."""
    backup = None
    try:
        with _exclusive(store) as conn:
            before = _revision(conn, store.display, probe=False)   # again: another process may have done it
            if before == HEAD:
                return None
            if before is not None and before not in REVISIONS:
                raise UserError(_too_new(conn, store.display, before))
            if before is not None and _sqlite_file(store):
                backup = _backup(store, before)
            _alembic_upgrade(conn)
            conn.execute(delete(_META).where(_META.c.key.in_([VERSION_KEY, "schema_version"])))
            conn.execute(insert(_META).values(key=VERSION_KEY, value=__version__))
            conn.commit()
    except Exception as exc:
        if backup is not None:   # the transaction was rolled back: the store is as it was, and the copy is spare
            backup.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"cannot upgrade the run store {store.display}: {exc.strerror or exc} "
                            f"({exc.filename}).") from None
        if isinstance(exc, DBAPIError):
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise UserError(f"cannot upgrade the run store {store.display}: {reason}.") from None
        raise
    if before is None:
        return f"created the run store {store.display} at revision {HEAD} (cldash {__version__})."
    kept = f"; the file as it was is kept as {backup}" if backup else ""
    return f"upgraded the run store {store.display} from revision {before} to {HEAD} (cldash {__version__}){kept}."


def _revision(conn: Connection, display: str, probe: bool) -> str | None:
    """The store's revision; "0001" for a store made before migrations; None for an empty database.

    `probe`: first try the one query that answers for a store at any revision (the fast path);
    inside a transaction that must not fail (PostgreSQL's), look at the tables first.
    """
    if probe:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            conn.rollback()
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    if not tables:
        return None
    if {"runs", "meta"} <= tables and _meta_value(conn, "schema_version") == "1":
        return "0001"
    raise UserError(f"cannot open the run store {display}: it holds tables ({', '.join(sorted(tables))}) "
                    f"but is not a cldash run store; give another --db.")


def _meta_value(conn: Connection, key: str) -> str | None:
    if "meta" not in inspect(conn).get_table_names():
        return None
    return conn.execute(select(_META.c.value).where(_META.c.key == key)).scalar()


def _too_new(conn: Connection, display: str, revision: str) -> str:
    theirs = _meta_value(conn, VERSION_KEY)
    by = f"cldash {theirs}" if theirs else "a newer cldash"
    return (f"the run store {display} is at revision {revision}, written by {by}, which is newer than this "
            f"cldash {__version__} (revisions up to {HEAD}); upgrade cldash (pip install -U cldash) to open it, "
            f"or give another --db.")


def _sqlite_file(store) -> Path | None:
    return sqlite_path(store.url)


@contextlib.contextmanager
def _exclusive(store):
    """A connection that only one process at a time holds for upgrading this store."""
    path = _sqlite_file(store)
    with file_lock(path.with_name(path.name + "-migrate.lock")) if path else contextlib.nullcontext():
        with store.engine.connect() as conn:
            if conn.dialect.name == "postgresql":   # released when the upgrade's transaction ends
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
            elif conn.dialect.name == "sqlite":     # one transaction: a failed upgrade changes nothing
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn


def _backup_name(store, revision: str) -> Path:
    path = _sqlite_file(store)
    for n in itertools.count(1):   # never overwrite an earlier backup
        candidate = path.with_name(f"{path.name}.bak-{revision}" + (f"-{n}" if n > 1 else ""))
        if not candidate.exists():
            return candidate


def _backup(store, revision: str) -> Path:
    """Copy the SQLite store as it is now to its backup file (one self-contained file, WAL included).

    A second connection reads it: the upgrade's own holds the write lock, under which nothing has
    changed yet, so the copy is exactly the store before the upgrade.
    """
    target = _backup_name(store, revision)
    partial = target.with_name(target.name + f".partial{os.getpid()}")
    source = sqlite3.connect(_sqlite_file(store).resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
    copy = sqlite3.connect(partial)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")
        copy.close()
        os.replace(partial, target)
    finally:
        copy.close()
        source.close()
        partial.unlink(missing_ok=True)
    return target


def _alembic_upgrade(conn: Connection, revision: str = "head") -> None:
    from alembic import command  # deferred: a store at the head is opened without importing Alembic
    from alembic.config import Config  # deferred: as above

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = conn
    command.upgrade(config, revision)
