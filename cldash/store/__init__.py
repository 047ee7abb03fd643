"""The run store: SQLAlchemy 2 schema, engine factory, a buffered writer and the readers.

SQLite by default (``runs.db`` in the working directory; ``--db`` or ``CLDASH_DB`` take a path
or any SQLAlchemy URL, PostgreSQL included). SQLite runs in WAL mode with a busy timeout, and
a run writes in short batched transactions (`RunWriter.flush`), so several run processes can
write while the dashboard reads.

Tables: ``runs`` (config, status, progress, pid, host, heartbeat, error, versions, device,
final metrics), ``tasks`` (positions 1..T for the stream, <= 0 for general tasks), ``modules``
(adapted layers), ``evaluations`` (step, trained-through task i, evaluated task j, metric,
value; ``final`` marks the rows of the accuracy matrix R, the others are "anytime" scores),
``scalars`` (loss, lr, method scalars, per module where it applies), ``spectra`` (per
module and kind, singular values as a float32 blob plus the shape measures), ``orders``
(gradient-conflict matrices and adversarial task orders, cldash.analysis.orders) and ``meta``.

The schema is versioned with Alembic (cldash.store.migrations): a change to these models is also a
new revision there, and opening an older store upgrades it (a SQLite file is backed up first).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import socket
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
from sqlalchemy import (Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, create_engine,
                        delete, event, func, insert, make_url, select, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DatabaseError, DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cldash.store import migrations
from cldash.core.errors import StoreWriteError, UserError

if TYPE_CHECKING:   # pandas is imported by the readers that make frames: a run's process only writes, and
    import pandas as pd   # importing pandas was a tenth of the time before its first step

ACTIVE = ("queued", "running")
ENDED = ("finished", "failed", "interrupted", "cancelled")


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    launch_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    group_key: Mapped[str | None] = mapped_column(String(80), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    method: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(500))      # hf: streams and backbones name paths
    backbone: Mapped[str] = mapped_column(String(500))
    policy: Mapped[str | None] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    task: Mapped[int] = mapped_column(Integer, default=0)
    num_tasks: Mapped[int] = mapped_column(Integer, default=0)
    primary_metric: Mapped[str] = mapped_column(String(64), default="accuracy")
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(64))
    versions: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    weights: Mapped[str | None] = mapped_column(Text)    # JSON: the backbone weights used (revision 0002)
    launcher: Mapped[str | None] = mapped_column(String(16))   # "cli" (foreground), "local" or "ray" (revision 0003)
    cancel_requested_at: Mapped[float | None] = mapped_column(Float)   # polled by the run at its flushes (0004)
    launcher_info: Mapped[str | None] = mapped_column(Text)   # JSON: the launcher's address, job, resources (0004)
    parent_id: Mapped[int | None] = mapped_column(Integer)         # a fork's parent run (0005)
    fork_task: Mapped[int | None] = mapped_column(Integer)         # ... and the task after which it branched
    resume_task: Mapped[int | None] = mapped_column(Integer)       # waiting to continue after this task
    checkpoint_task: Mapped[int | None] = mapped_column(Integer)   # the last task end checkpointed
    resumes: Mapped[int | None] = mapped_column(Integer)           # times resumed


class TaskRow(Base):
    __tablename__ = "tasks"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    n_train: Mapped[int] = mapped_column(Integer, default=0)
    n_test: Mapped[int] = mapped_column(Integer, default=0)


class ModuleRow(Base):
    __tablename__ = "modules"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    layer: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(100))
    out_features: Mapped[int] = mapped_column(Integer)
    in_features: Mapped[int] = mapped_column(Integer)


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    trained_through: Mapped[int] = mapped_column(Integer)
    task: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    final: Mapped[bool] = mapped_column(Boolean)
    __table_args__ = (Index("ix_evaluations_run_step", "run_id", "step"),)


class Scalar(Base):
    __tablename__ = "scalars"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    module: Mapped[str] = mapped_column(String(300), default="")
    value: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_scalars_run_name_step", "run_id", "name", "step"),)


class Spectrum(Base):
    __tablename__ = "spectra"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    task: Mapped[int] = mapped_column(Integer)
    module: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(32))
    values: Mapped[bytes] = mapped_column(LargeBinary)
    n: Mapped[int] = mapped_column(Integer)
    numerical_rank: Mapped[int] = mapped_column(Integer)
    erank: Mapped[float | None] = mapped_column(Float)
    stable_rank: Mapped[float | None] = mapped_column(Float)
    top1_energy: Mapped[float | None] = mapped_column(Float)
    condition: Mapped[float | None] = mapped_column(Float)
    frobenius: Mapped[float] = mapped_column(Float)
    entropy: Mapped[float | None] = mapped_column(Float)
    w0_energy: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (Index("ix_spectra_run_module_kind_step", "run_id", "module", "kind", "step"),
                      Index("ix_spectra_run_step", "run_id", "step"))


class OrderRow(Base):
    """A measured gradient-conflict matrix and the adversarial task order built from it (cldash.analysis.orders)."""
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream: Mapped[str] = mapped_column(String(500))
    backbone: Mapped[str] = mapped_column(String(500))
    config: Mapped[str] = mapped_column(Text)        # stream/backbone options, targets, batches, seed
    tasks: Mapped[str] = mapped_column(Text)         # JSON: task names in the configured order
    matrix: Mapped[str] = mapped_column(Text)        # JSON: T x T mean cosines
    order: Mapped[str] = mapped_column(Text)         # JSON: the adversarial permutation (0-based positions)
    cost: Mapped[float] = mapped_column(Float)
    natural_cost: Mapped[float] = mapped_column(Float)
    ordered_options: Mapped[str] = mapped_column(Text)   # JSON: stream options running that order
    created_at: Mapped[float] = mapped_column(Float)


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


SPECTRUM_MEASURES = ("erank", "stable_rank", "top1_energy", "condition", "frobenius", "entropy", "w0_energy")


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


# Writes a store can refuse for reasons outside cldash: a full disk, a file size limit, a read-only file
# or server. `write_failure` names them in a few words; anything else is a bug to report with its traceback.
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


@functools.lru_cache(maxsize=16)
def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None and not path.parent.is_dir():
            raise UserError(f"cannot open the run store {path}: the folder {path.parent} does not exist.")
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def _now() -> float:
    return time.time()


def _j(value: Any) -> str:
    return json.dumps(value, default=str)


def _nan_to_none(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


_READY: set = set()   # stores this process has already found at the head revision


def _schema_token(url: str):
    """A SQLite file deleted and re-created is checked again (its inode changes)."""
    path = sqlite_path(url)
    if path is not None:
        try:
            return url, os.stat(path).st_ino
        except OSError:
            return url, None
    return url


class Store:
    """One run store (database). Cheap to create: engines are cached per URL, and a store found at
    the head revision once is not checked again in this process.

    Opening applies pending schema upgrades (cldash.store.migrations); ``migrate=False`` opens without
    them, for `cldash db current` (reading a store at an older revision may then fail).
    """

    def __init__(self, db: str | os.PathLike | None = None, *, migrate: bool = True):
        self.url = to_url(db)
        self.refused: str | None = None   # why the last write was refused (a read-only store, a full disk)
        try:
            self.engine = _engine(self.url)
            if _schema_token(self.url) not in _READY and migrations.ensure(self, migrate) == migrations.HEAD:
                _READY.add(_schema_token(self.url))
        except UserError:
            raise
        except (ArgumentError, ValueError) as exc:   # ValueError: make_url's, for a port that is not a number
            raise UserError(f"cannot open the run store {self.display}: not a valid database URL "
                            f"({self.mask(str(exc))}).") from None
        except ModuleNotFoundError as exc:
            raise UserError(f"cannot open the run store {self.display}: its database driver is not installed "
                            f"({exc.name}).") from None
        except (OperationalError, DatabaseError) as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise UserError(f"cannot open the run store {self.display}: {self.mask(reason)}.") from None

    @property
    def display(self) -> str:
        """The store as messages name it: a SQLite file's path, else the URL with its password masked."""
        return self.url[len("sqlite:///"):] if self.url.startswith("sqlite:///") else mask_url(self.url)

    def mask(self, text: str) -> str:
        """`text` with this store's URL shown as `display` and its password masked wherever it appears."""
        text = text.replace(self.url, self.display)
        for secret in _secrets(self.url):
            text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def _writing(self):
        """Turn a write the store refuses (read-only, a full disk) into one sentence (StoreWriteError)."""
        try:
            yield
        except (DBAPIError, OSError) as exc:
            reason = write_failure(exc)
            if reason is None:
                raise
            self.refused = f"cannot write to the run store {self.display}: {self.mask(reason)}"
            raise StoreWriteError(self.refused + ".", self.mask(reason)) from None

    # -- runs ---------------------------------------------------------------------------------
    def create_run(self, config: dict, *, status: str = "queued", launch_key: str | None = None,
                   group_key: str | None = None, name: str = "", launcher: str = "local",
                   pid: int | None = None, host: str | None = None, launcher_info: dict | None = None) -> int:
        """Insert a run row. With a `launch_key` already used, returns the existing run (idempotent).

        `launcher` "cli" is a foreground `cldash run`: its row is created owned by its process (`pid`,
        `host` in the same INSERT), so there is no moment when the scheduler could take it for a
        queued background run, and reconcile can end it if the process dies before claiming it.
        """
        with self._writing(), self.engine.begin() as conn:
            if launch_key:
                found = conn.execute(select(Run.id).where(Run.launch_key == launch_key)).first()
                if found:
                    return found[0]
            result = conn.execute(insert(Run).values(
                launch_key=launch_key, group_key=group_key, name=name or config.get("name") or "",
                method=config["method"], stream=config["stream"], backbone=config["backbone"],
                policy=config.get("policy"), seed=config["seed"], config=_j(config), status=status,
                launcher=launcher, pid=pid, host=host, created_at=_now(),
                launcher_info=_j(launcher_info) if launcher_info else None))
            return result.inserted_primary_key[0]

    def update_run(self, run_id: int, **fields) -> None:
        for key in ("versions", "summary", "weights", "launcher_info"):
            if key in fields and not isinstance(fields[key], (str, type(None))):
                fields[key] = _j(fields[key])
        with self._writing(), self.engine.begin() as conn:
            conn.execute(update(Run).where(Run.id == run_id).values(**fields))

    def claim(self, run_id: int, *, pid: int, host: str | None = None) -> bool:
        """Atomically move a queued run to running under this process; False if someone else has it."""
        with self._writing(), self.engine.begin() as conn:
            res = conn.execute(update(Run).where(Run.id == run_id, Run.status == "queued").values(
                status="running", pid=pid, host=host or socket.gethostname(), started_at=_now(),
                heartbeat_at=_now()))
            return res.rowcount == 1

    def get_run(self, run_id: int) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(Run).where(Run.id == run_id)).mappings().first()
        if row is None:
            raise UserError(f"there is no run {run_id} in {self.display}; `cldash list` shows the runs.")
        return _run_dict(row)

    def runs(self, status: Iterable[str] | None = None, method: str | None = None,
             stream: str | None = None, ids: Iterable[int] | None = None) -> list[dict]:
        q = select(Run).order_by(Run.id)
        if ids is not None:
            q = q.where(Run.id.in_([int(i) for i in ids]))
        if status:
            q = q.where(Run.status.in_(list(status)))
        if method:
            q = q.where(Run.method == method)
        if stream:
            q = q.where(Run.stream == stream)
        with self.engine.connect() as conn:
            return [_run_dict(r) for r in conn.execute(q).mappings()]

    def run_ids_for_launch_keys(self, keys: Iterable[str]) -> dict[str, int]:
        """The runs already stored under these launch keys: {key: run id} (a sweep's plan)."""
        keys, out = list(keys), {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 500):   # bounded IN lists
                out.update({k: rid for k, rid in conn.execute(
                    select(Run.launch_key, Run.id).where(Run.launch_key.in_(keys[i:i + 500])))})
        return out

    def delete_run(self, run_id: int) -> None:
        """Remove a run and every row that belongs to it, in one transaction (and its saved adapters and
        checkpoints)."""
        import shutil

        with self._writing(), self.engine.begin() as conn:
            for table in (Spectrum, Scalar, Evaluation, ModuleRow, TaskRow):
                conn.execute(delete(table).where(table.run_id == run_id))
            conn.execute(delete(Run).where(Run.id == run_id))
        self.adapter_path(run_id).unlink(missing_ok=True)
        shutil.rmtree(self.checkpoint_dir(run_id), ignore_errors=True)

    def checkpoint_dir(self, run_id: int) -> Path:
        """Where a run's task-boundary checkpoints are kept: next to its saved adapters
        (``runs.db`` -> ``runs.checkpoints/run-<id>/``)."""
        db = sqlite_path(self.url)
        if db is not None:
            return db.with_name(db.stem + ".checkpoints") / f"run-{run_id}"
        from cldash.core.cache import cache_dir

        return cache_dir() / "checkpoints" / hashlib.sha256(self.url.encode()).hexdigest()[:16] / f"run-{run_id}"

    def truncate_after(self, run_id: int, after_step: int, **run_fields) -> None:
        """Delete the run's evaluations, scalars and spectra after `after_step` and update its row, in one
        transaction (a resume replaces what the interrupted task wrote)."""
        with self._writing(), self.engine.begin() as conn:
            for table in (Spectrum, Scalar, Evaluation):
                conn.execute(delete(table).where(table.run_id == run_id, table.step > after_step))
            conn.execute(update(Run).where(Run.id == run_id).values(**run_fields))

    def copy_rows(self, source: int, target: int, through_step: int) -> None:
        """Copy a run's evaluations, scalars and spectra up to `through_step`, and its task and module rows,
        to another run, in one transaction (a fork shares its parent's rows up to the fork point)."""
        with self._writing(), self.engine.begin() as conn:
            for table in (TaskRow, ModuleRow, Evaluation, Scalar, Spectrum):
                cols = [c for c in table.__table__.columns if c.name not in ("id", "run_id")]
                q = select(*cols).where(table.run_id == source)
                if hasattr(table, "step"):
                    q = q.where(table.step <= through_step)
                rows = [{"run_id": target, **dict(zip([c.name for c in cols], r))} for r in conn.execute(q)]
                if rows:
                    conn.execute(insert(table), rows)

    def adapter_path(self, run_id: int) -> Path:
        """Where a finished run's final adapter state is kept (a small torch file, not in the database):
        next to an SQLite file (``runs.db`` -> ``runs.adapters/run-<id>.pt``), else in the cache."""
        db = sqlite_path(self.url)
        if db is not None:
            return db.with_name(db.stem + ".adapters") / f"run-{run_id}.pt"
        from cldash.core.cache import cache_dir

        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return cache_dir() / "adapters" / key / f"run-{run_id}.pt"

    # -- static run structure -------------------------------------------------------------------
    def write_structure(self, run_id: int, tasks: list[dict], modules: list[dict]) -> None:
        with self._writing(), self.engine.begin() as conn:
            conn.execute(delete(TaskRow).where(TaskRow.run_id == run_id))
            conn.execute(delete(ModuleRow).where(ModuleRow.run_id == run_id))
            if tasks:
                conn.execute(insert(TaskRow), [{"run_id": run_id, **t} for t in tasks])
            if modules:
                conn.execute(insert(ModuleRow), [{"run_id": run_id, **m} for m in modules])

    def tasks(self, run_id: int) -> pd.DataFrame:
        return self._frame(select(TaskRow).where(TaskRow.run_id == run_id).order_by(TaskRow.position))

    def modules(self, run_id: int) -> pd.DataFrame:
        return self._frame(select(ModuleRow).where(ModuleRow.run_id == run_id))

    # -- series ---------------------------------------------------------------------------------
    def evaluations(self, run_id: int, since_step: int | None = None, final: bool | None = None) -> pd.DataFrame:
        q = select(Evaluation).where(Evaluation.run_id == run_id)
        if since_step is not None:
            q = q.where(Evaluation.step > since_step)
        if final is not None:
            q = q.where(Evaluation.final == final)
        return self._frame(q.order_by(Evaluation.step, Evaluation.task))

    def scalars(self, run_id: int, names: Iterable[str] | None = None, since_step: int | None = None,
                module: str | None = None) -> pd.DataFrame:
        q = select(Scalar.step, Scalar.name, Scalar.module, Scalar.value).where(Scalar.run_id == run_id)
        if names is not None:
            q = q.where(Scalar.name.in_(list(names)))
        if module is not None:
            q = q.where(Scalar.module == module)
        if since_step is not None:
            q = q.where(Scalar.step > since_step)
        return self._frame(q.order_by(Scalar.step))

    def spectra(self, run_id: int, module: str | None = None, kind: str | None = None,
                since_step: int | None = None, with_values: bool = True, step: int | None = None,
                steps: Iterable[int] | None = None) -> pd.DataFrame:
        cols = [c for c in Spectrum.__table__.columns if c.name not in ("id", "run_id")]
        if not with_values:
            cols = [c for c in cols if c.name != "values"]
        q = select(*cols).where(Spectrum.run_id == run_id)
        if module is not None:
            q = q.where(Spectrum.module == module)
        if kind is not None:
            q = q.where(Spectrum.kind == kind)
        if since_step is not None:
            q = q.where(Spectrum.step > since_step)
        if step is not None:
            q = q.where(Spectrum.step == step)
        if steps is not None:
            q = q.where(Spectrum.step.in_([int(x) for x in steps]))
        df = self._frame(q.order_by(Spectrum.step, Spectrum.module))
        if with_values and len(df):
            df["values"] = [np.frombuffer(b, dtype=np.float32) for b in df["values"]]
        return df

    def accuracy_matrix(self, run_id: int, metric: str | None = None) -> dict:
        """R from the final evaluations: {"R": (rows x T) array, "general": {name: column},
        "rows": trained-through indices present, "tasks": names, "metric": metric}.

        Rows are 0..i for the tasks finished so far; a row is complete only once its task ended.
        """
        return self.accuracy_matrices([run_id], metric)[run_id]

    def accuracy_matrices(self, run_ids: Iterable[int], metric: str | None = None) -> dict[int, dict]:
        """`accuracy_matrix` for many runs in three queries (the compare page draws 50 at once)."""
        ids = [int(i) for i in run_ids]
        runs = {r["id"]: r for r in self.runs(ids=ids)}
        missing = [i for i in ids if i not in runs]
        if missing:
            raise UserError(f"there is no run {missing[0]} in {self.display}; `cldash list` shows the runs.")
        tasks = self._frame(select(TaskRow).where(TaskRow.run_id.in_(ids)))
        ev = self._frame(select(Evaluation.run_id, Evaluation.trained_through, Evaluation.task, Evaluation.metric,
                                Evaluation.value).where(Evaluation.run_id.in_(ids), Evaluation.final.is_(True)))
        out = {}
        for i in ids:
            m = metric or runs[i]["primary_metric"]
            t = tasks[tasks.run_id == i] if len(tasks) else tasks
            e = ev[(ev.run_id == i) & (ev.metric == m)] if len(ev) else ev
            out[i] = build_matrix(t, e, m)
        return out

    def final_evaluations(self, run_ids: Iterable[int]) -> pd.DataFrame:
        ids = [int(i) for i in run_ids]
        return self._frame(select(Evaluation).where(Evaluation.run_id.in_(ids), Evaluation.final.is_(True)))

    def spectrum_index(self, run_id: int) -> pd.DataFrame:
        """Which (module, kind) series a run has, with their number of logged steps."""
        q = (select(Spectrum.module, Spectrum.kind, func.count().label("steps"), func.max(Spectrum.step).label("last"))
             .where(Spectrum.run_id == run_id).group_by(Spectrum.module, Spectrum.kind))
        return self._frame(q)

    def spectra_at(self, run_ids: Iterable[int], kind: str, step: int | None = None,
                   module: str | None = None) -> pd.DataFrame:
        """Each run's spectra of one kind at `step` (or at its last logged step), all or one module."""
        ids = [int(i) for i in run_ids]
        frames = []
        for rid in ids:
            q = select(func.max(Spectrum.step)).where(Spectrum.run_id == rid, Spectrum.kind == kind)
            if step is not None:
                q = q.where(Spectrum.step <= step)
            with self.engine.connect() as conn:
                at = conn.execute(q).scalar()
            if at is None:
                continue
            df = self.spectra(rid, module=module, kind=kind, step=at)
            df.insert(0, "run_id", rid)
            frames.append(df)
        import pandas as pd

        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def scalar_names(self, run_id: int) -> pd.DataFrame:
        """The scalar series a run has: name, whether per module, and the number of points."""
        q = (select(Scalar.name, (func.max(Scalar.module) != "").label("per_module"), func.count().label("points"))
             .where(Scalar.run_id == run_id).group_by(Scalar.name))
        return self._frame(q)

    # -- adversarial orders ------------------------------------------------------------------------
    def save_order(self, result: dict) -> int:
        """Store one `cldash.analysis.orders.measure` result; returns its id."""
        config = {k: result[k] for k in ("stream_options", "backbone_options", "targets", "modules", "batches",
                                         "batch_size", "seed") if k in result}
        with self._writing(), self.engine.begin() as conn:
            res = conn.execute(insert(OrderRow).values(
                stream=result["stream"], backbone=result["backbone"], config=_j(config), tasks=_j(result["tasks"]),
                matrix=_j(result["matrix"]), order=_j(result["order"]), cost=result["cost"],
                natural_cost=result["natural_cost"], ordered_options=_j(result["ordered_options"]),
                created_at=_now()))
            return res.inserted_primary_key[0]

    def orders(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(OrderRow).order_by(OrderRow.id)).mappings().all()
        return [_order_dict(r) for r in rows]

    def get_order(self, order_id: int) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(OrderRow).where(OrderRow.id == order_id)).mappings().first()
        if row is None:
            raise UserError(f"there is no order {order_id} in {self.display}; `cldash order --list` shows them.")
        return _order_dict(row)

    # -- settings shared by the dashboard and the run processes ----------------------------------
    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(Meta.value).where(Meta.key == f"setting:{key}")).first()
        return row[0] if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self._writing(), self.engine.begin() as conn:
            conn.execute(delete(Meta).where(Meta.key == f"setting:{key}"))
            conn.execute(insert(Meta).values(key=f"setting:{key}", value=str(value)))

    def run_choices(self) -> list[tuple[int, int, str]]:
        """Every run's (id, seed, config as its JSON text), in id order: what a list of run labels needs, in one
        light query (the sidebar's, on every page) instead of every run row with its JSON parsed."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(Run.id, Run.seed, Run.config).order_by(Run.id)).all()]

    def status_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Run.status, func.count()).group_by(Run.status)).all()
        return {status: n for status, n in rows}

    def _frame(self, query) -> pd.DataFrame:
        import pandas as pd

        with self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def writer(self, run_id: int, flush_seconds: float | None = None) -> "RunWriter":
        return RunWriter(self, run_id, FLUSH_SECONDS if flush_seconds is None else flush_seconds)

    # -- the dashboard at sweep scale (issue 13): groups, and matrices of runs already read ---------------
    def run_groups(self) -> list[tuple[str, int]]:
        """Every run group (runs.group_key: "sweep:NAME", "claims", a launch's key) with its number of runs,
        the group of the newest run first; one query, no run row read."""
        newest = func.max(Run.id)
        q = (select(Run.group_key, func.count(), newest).where(Run.group_key.is_not(None))
             .group_by(Run.group_key).order_by(newest.desc()))
        with self.engine.connect() as conn:
            return [(key, n) for key, n, _ in conn.execute(q).all()]

    def run_listing(self) -> list[dict]:
        """Every run as the Runs page lists it: the run row without its config and versions, the summary
        and weights parsed, and the config's preset as "regime" ("common" without one). Parsing each
        config's JSON for that one key was most of the cost of listing 1,000 runs; a config is parsed
        once per process (a run's config text does not change)."""
        cols = [c for c in Run.__table__.columns if c.name not in ("config", "versions")]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols, Run.config).order_by(Run.id)).all()
        names = [c.name for c in cols]
        out = []
        for row in rows:
            d = dict(zip(names, row[:-1]))
            for key in ("summary", "weights"):
                d[key] = json.loads(d[key]) if d[key] else None
            d["launcher_info"] = json.loads(d["launcher_info"]) if d["launcher_info"] else {}
            d["regime"] = Store._preset(row[-1])
            out.append(d)
        return out

    @staticmethod
    @functools.lru_cache(maxsize=8192)
    def _preset(config: str) -> str:
        return (json.loads(config) if config else {}).get("preset") or "common"

    def latest_run_ids(self, limit: int) -> list[int]:
        """The ids of the `limit` newest runs, in id order (without reading every run to keep a few)."""
        with self.engine.connect() as conn:
            return sorted(conn.execute(select(Run.id).order_by(Run.id.desc()).limit(limit)).scalars())

    def group_run_ids(self, group_key: str) -> list[int]:
        """The ids of a group's runs, in id order."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(Run.id).where(Run.group_key == group_key).order_by(Run.id)).scalars())

    def accuracy_matrices_of(self, runs: list[dict], metric: str | None = None) -> dict[int, dict]:
        """`accuracy_matrices` of runs the caller has already read (their rows are not read again), built
        from plain rows: for a sweep's hundreds of runs, pandas' per-run filtering in `build_matrix` cost
        more than the queries (about 1.5 ms a run against 0.05 ms this way). Same result as `build_matrix`."""
        ids = [int(r["id"]) for r in runs]
        with self.engine.connect() as conn:
            task_rows = conn.execute(select(TaskRow.run_id, TaskRow.position, TaskRow.name, TaskRow.kind)
                                     .where(TaskRow.run_id.in_(ids))).all()
            eval_rows = conn.execute(select(Evaluation.run_id, Evaluation.trained_through, Evaluation.task,
                                            Evaluation.metric, Evaluation.value)
                                     .where(Evaluation.run_id.in_(ids), Evaluation.final.is_(True))).all()
        tasks_of: dict[int, list] = {}
        for row in task_rows:
            tasks_of.setdefault(row[0], []).append(row[1:])
        evals_of: dict[int, list] = {}
        for row in eval_rows:
            evals_of.setdefault(row[0], []).append(row[1:])
        out = {}
        for r in runs:
            m = metric or r["primary_metric"]
            tasks = tasks_of.get(r["id"], [])
            stream = sorted((p, name) for p, name, kind in tasks if kind == "stream")
            general = sorted(((p, name) for p, name, kind in tasks if kind == "general"), reverse=True)
            evals = [(tt, task, value) for tt, task, metric_, value in evals_of.get(r["id"], []) if metric_ == m]
            rows = sorted({int(tt) for tt, _, _ in evals})
            index = {row: i for i, row in enumerate(rows)}
            col = {p: j for j, (p, _) in enumerate(stream)}
            gname = dict(general)
            R = np.full((len(rows), len(stream)), np.nan)
            cols = {name: [np.nan] * len(rows) for _, name in general}
            for tt, task, value in evals:
                if task in col:
                    R[index[int(tt)], col[task]] = value
                elif task in gname:
                    cols[gname[task]][index[int(tt)]] = value
            out[r["id"]] = {"R": R, "general": cols, "rows": rows, "tasks": [name for _, name in stream], "metric": m}
        return out


def build_matrix(tasks: pd.DataFrame, evals: pd.DataFrame, metric: str) -> dict:
    """The accuracy matrix of one run from its task rows and its final evaluations of `metric`."""
    stream_tasks = tasks[tasks.kind == "stream"].sort_values("position") if len(tasks) else tasks
    general_tasks = tasks[tasks.kind == "general"].sort_values("position", ascending=False) if len(tasks) else tasks
    T = len(stream_tasks)
    rows = sorted(int(r) for r in evals.trained_through.unique()) if len(evals) else []
    index = {r: i for i, r in enumerate(rows)}
    R = np.full((len(rows), T), np.nan)
    general = {name: [np.nan] * len(rows) for name in (general_tasks.name if len(tasks) else [])}
    col = {p: i for i, p in enumerate(stream_tasks.position)} if len(tasks) else {}
    gname = dict(zip(general_tasks.position, general_tasks.name)) if len(tasks) else {}
    for tt, task, value in zip(evals.trained_through, evals.task, evals.value) if len(evals) else []:
        i = index[int(tt)]
        if task in col:
            R[i, col[task]] = value
        elif task in gname:
            general[gname[task]][i] = value
    names = stream_tasks.name.tolist() if len(tasks) else []
    return {"R": R, "general": general, "rows": rows, "tasks": names, "metric": metric}


def _order_dict(row) -> dict:
    d = dict(row)
    for key in ("config", "tasks", "matrix", "order", "ordered_options"):
        d[key] = json.loads(d[key])
    return d


def _run_dict(row) -> dict:
    d = dict(row)
    for key in ("config", "versions", "summary", "weights", "launcher_info"):
        d[key] = json.loads(d[key]) if d.get(key) else ({} if key in ("config", "versions", "launcher_info") else None)
    return d


# How often a run writes what it buffered (and its step): twice a second, so a page refreshing every 2 s sees
# the step move at every refresh. At 2 s the flushes and the refreshes beat, and a step stood still for 4 s
# (issue 15); a flush costs a few milliseconds (bench/progress_writes.py: no measurable change per step).
FLUSH_SECONDS = 0.5


class RunWriter:
    """Buffers a run's rows and writes them in one short transaction per flush.

    Each flush also moves the heartbeat and progress of the run row, so a reader sees either
    everything up to a flush or nothing of it: a run killed between flushes leaves a
    consistent store. `clock` (seconds, monotonic) decides when a flush is `due`; tests give their own.
    """

    def __init__(self, store: Store, run_id: int, flush_seconds: float = FLUSH_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self.clock = clock
        self._last = clock()
        self._evals: list[dict] = []
        self._scalars: list[dict] = []
        self._spectra: list[dict] = []
        self.cancel_requested = False   # read back at every flush: a cancel asked for from any host

    def scalar(self, step: int, name: str, value: float, module: str = "") -> None:
        self._scalars.append({"run_id": self.run_id, "step": step, "name": name, "module": module,
                              "value": _nan_to_none(float(value))})

    def evaluation(self, step: int, trained_through: int, task: int, scores: dict[str, float], final: bool) -> None:
        for metric, value in scores.items():
            self._evals.append({"run_id": self.run_id, "step": step, "trained_through": trained_through,
                                "task": task, "metric": metric, "value": float(value), "final": final})

    def spectrum(self, step: int, task: int, module: str, kind: str, blob: bytes, n: int,
                 measures: dict[str, float]) -> None:
        row = {"run_id": self.run_id, "step": step, "task": task, "module": module, "kind": kind,
               "values": blob, "n": n, "numerical_rank": int(measures.get("numerical_rank", 0))}
        for key in SPECTRUM_MEASURES:
            row[key] = _nan_to_none(measures.get(key))
        self._spectra.append(row)

    def due(self) -> bool:
        return self.clock() - self._last >= self.flush_seconds

    def flush(self, **run_fields) -> None:
        run_fields["heartbeat_at"] = _now()
        with self.store._writing(), self.store.engine.begin() as conn:
            if self._evals:
                conn.execute(insert(Evaluation), self._evals)
            if self._scalars:
                conn.execute(insert(Scalar), self._scalars)
            if self._spectra:
                conn.execute(insert(Spectrum), self._spectra)
            conn.execute(update(Run).where(Run.id == self.run_id).values(**run_fields))
            # the cancel request rides on the flush's own transaction: no extra round trip to the store
            self.cancel_requested = conn.execute(select(Run.cancel_requested_at).where(
                Run.id == self.run_id)).scalar() is not None
        self._evals, self._scalars, self._spectra = [], [], []
        self._last = self.clock()


def count_rows(store: Store, run_id: int) -> dict[str, int]:
    """Rows per table for a run (used by tests and `cldash show`)."""
    out = {}
    with store.engine.connect() as conn:
        for table in (Evaluation, Scalar, Spectrum, TaskRow, ModuleRow):
            out[table.__tablename__] = conn.execute(
                select(func.count()).select_from(table).where(table.run_id == run_id)).scalar_one()
    return out
